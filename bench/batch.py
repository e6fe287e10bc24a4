"""Benchmark: the whole nightly batch (state, scores, rankings, friends, releases, Cassandra
load) on generated data, against a Cassandra node started for the benchmark.

Reports per-step times, peak RSS of the process tree (driver, Python workers, not the
Cassandra JVM), users per second, the least free disk through the run and the node's merges
after it (the load holds the node's compaction: those merges come once the run is over), and
how long the node then spends merging. Targets on this 2-core machine: 1M users (catalog of at
least 1M releases) in under 10 minutes including the Cassandra load; 10M users once in under
2 hours.

    .venv/bin/python -m bench.batch [--users 1000000] [--releases 1000000] [--taste-model scenes]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

from bench.common import PeakMemory, free_port, write_results
from discorecs.cassandra import connect
from discorecs.catalog.generate import write_dump
from discorecs.catalog.ingest import build_catalog
from discorecs.services.manager import LocalServices
from discorecs.settings import Settings, load_settings
from discorecs.spark import build_spark_session
from discorecs.users import TASTE_MODELS
from discorecs.users.population import write_population
from spark_jobs.nightly import run_batch

CACHE = Path("~/.cache/discorecs/bench").expanduser()


def merges_after_the_run(settings: Settings, quiet: float = 30.0, limit: float = 5400.0) -> float:
    """Seconds until the node's merges are done (no task in ``system_views.sstable_tasks`` for
    ``quiet`` seconds; at most ``limit``): the run's rows are merged only once it is over
    (:func:`discorecs.schema.compaction_paused`), so this is the node's work the run's time
    leaves out."""
    started = time.monotonic()
    busy_until = started
    with connect(settings) as connection:
        while True:
            now = time.monotonic()
            if connection.session.execute("SELECT kind FROM system_views.sstable_tasks").all():
                busy_until = now
            elif now - busy_until >= quiet or now - started >= limit:
                return busy_until - started
            time.sleep(2.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=1_000_000)
    parser.add_argument("--releases", type=int, default=1_000_000)
    parser.add_argument("--driver-memory", default="8g")
    parser.add_argument("--taste-model", choices=TASTE_MODELS, default="genres")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="discorecs-bench-batch-"))
    settings = load_settings(
        {
            "DISCORECS_HOME": str(work / "home"),
            "DISCORECS_DATA_ROOT": str(work / "data"),
            "DISCORECS_KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{free_port()}",
            "DISCORECS_KAFKA_CONTROLLER_PORT": str(free_port()),
            "DISCORECS_CASSANDRA_PORT": str(free_port()),
            "DISCORECS_CASSANDRA_STORAGE_PORT": str(free_port()),
            "DISCORECS_CASSANDRA_MAX_HEAP": "2G",
            "DISCORECS_SPARK_MASTER": "local[2]",
            "DISCORECS_SPARK_DRIVER_MEMORY": args.driver_memory,
            # 16 up to 1.6M users, then ~100k users per shuffle partition (10M: 100).
            "DISCORECS_SPARK_SHUFFLE_PARTITIONS": str(max(16, args.users // 100_000)),
        }
    )
    services = LocalServices(settings)
    try:
        dump = CACHE / f"bench_catalog_{args.releases}.xml.gz"
        if not dump.exists():
            print(f"generating a catalog of {args.releases:,} releases ...", flush=True)
            write_dump(dump, args.releases, seed=7)
        catalog = work / "data" / "catalog" / "releases"
        build_catalog(dump, catalog, say=lambda m: None)
        print(f"generating {args.users:,} users ...", flush=True)
        population = write_population(
            catalog,
            work / "data" / "users",
            args.users,
            seed=1,
            taste_model=args.taste_model,
            say=lambda m: None,
        )
        services.cassandra_nodes[0].start()
        from discorecs.schema import apply_schema

        apply_schema(settings)
        spark = build_spark_session(
            settings, "discorecs-bench-batch", {"spark.ui.enabled": "false"}
        )
        started = time.monotonic()
        with PeakMemory(disk=work) as memory:
            report = run_batch(spark, settings, say=print)
            seconds = time.monotonic() - started
            spark.stop()
            merging = merges_after_the_run(settings)
        figures = {
            "users": args.users,
            "releases": args.releases,
            "taste_model": args.taste_model,
            "collection_records": population.collection_items,
            "seconds": seconds,
            "users_per_second": args.users / seconds,
            "step_seconds": report.step_seconds,
            "counts": report.counts,
            "peak_rss_mb_driver_and_workers": memory.peak / 1e6,
            "least_free_disk_gb": memory.least_free / 1e9,
            "node_merges_after_the_run_seconds": merging,
            "projection_10m_users_hours": 10_000_000 / (args.users / seconds) / 3600,
            "target_seconds_1m_users": 600,
        }
        headline = {
            "seconds": round(seconds, 1),
            "serving_load_seconds": report.step_seconds.get("serving load"),
            "peak_rss_mb": round(memory.peak / 1e6),
            "least_free_disk_gb": round(memory.least_free / 1e9, 1),
            "node_merges_after_the_run_seconds": round(merging),
        }
        name = f"batch_{args.users}" + ("" if args.taste_model == "genres" else "_scenes")
        path = write_results(name, figures, headline)
        print(
            f"\nbatch on {args.users:,} users ({population.collection_items:,} records, "
            f"{args.releases:,} releases): {seconds:.0f} s, {args.users / seconds:,.0f} "
            f"users/s, peak RSS {memory.peak / 1e6:,.0f} MB (driver + workers)"
        )
        for step, spent in report.step_seconds.items():
            print(f"  {step:14s} {spent:8.1f} s")
        print(
            f"then the node's merges: {merging:.0f} s; least free disk through it all: "
            f"{memory.least_free / 1e9:.1f} GB"
        )
        if args.users < 10_000_000:
            print(f"10M users projected (linear): {figures['projection_10m_users_hours']:.1f} h")
        print(f"targets: 1M users < 600 s, 10M users < 2 h (7,200 s)\nwritten to {path}")
    finally:
        services.down()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
