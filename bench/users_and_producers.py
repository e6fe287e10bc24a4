"""Benchmark: synthetic users at scale, and both producers against the local broker.

1. Generates ``--users`` users (default 1M) with collections and wantlists from a generated
   catalog of ``--releases`` releases, and reports users/s, records/s and peak RSS, with a
   projection for 10M users. Target: 1M users in under 3 minutes.
2. Runs the collection and activity producers together for ``--seconds`` (default 60) at
   ``--rate`` events/s each against a broker started for the benchmark on a free port, and
   reports the achieved rate, p50/p99 send latency and errors. Target: >= 20,000 events/s
   together.

    .venv/bin/python -m bench.users_and_producers [--users 1000000] [--seconds 60]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import PeakMemory, free_port, write_results
from discorecs.catalog.generate import write_dump
from discorecs.catalog.ingest import build_catalog
from discorecs.services.broker import KafkaBroker
from discorecs.settings import load_settings
from discorecs.users.population import write_population
from kafka_cluster_scripts.topics import create_topics

CACHE = Path("~/.cache/discorecs/bench").expanduser()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=1_000_000)
    parser.add_argument("--releases", type=int, default=200_000)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--rate", type=float, default=12_000, help="per producer")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="discorecs-bench-users-"))
    try:
        dump = CACHE / f"bench_catalog_{args.releases}.xml.gz"
        if not dump.exists():
            write_dump(dump, args.releases, seed=7)
        catalog = work / "data" / "catalog" / "releases"
        build_catalog(dump, catalog, say=lambda m: None)

        print(f"generating {args.users:,} users ...", flush=True)
        with PeakMemory() as memory:
            report = write_population(
                catalog, work / "data" / "users", args.users, seed=1, say=print
            )
        users_per_s = report.users / report.seconds
        records = report.collection_items + report.wantlist_items
        users = {
            "users": report.users,
            "seconds": report.seconds,
            "users_per_second": users_per_s,
            "collection_records": report.collection_items,
            "wantlist_records": report.wantlist_items,
            "records_per_second": records / report.seconds,
            "collection_size": report.collection_size,
            "peak_rss_mb": memory.peak / 1e6,
            "projection_10m_users_minutes": 10_000_000 / users_per_s / 60,
            "target_seconds_for_1m": 180,
        }
        print(
            f"users: {report.users:,} in {report.seconds:.0f} s ({users_per_s:,.0f} users/s,"
            f" {records / report.seconds:,.0f} records/s), peak RSS {memory.peak / 1e6:.0f} MB;"
            f" 10M users ~{users['projection_10m_users_minutes']:.0f} min"
        )

        settings = load_settings(
            {
                "DISCORECS_HOME": str(work / "home"),
                "DISCORECS_DATA_ROOT": str(work / "data"),
                "DISCORECS_KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{free_port()}",
                "DISCORECS_KAFKA_CONTROLLER_PORT": str(free_port()),
            }
        )
        broker = KafkaBroker(settings)
        broker.start()
        try:
            create_topics(settings, partitions=6)
            # Each producer in its own process, as start_kafka_producers.sh runs them.
            env = {
                **os.environ,
                "DISCORECS_HOME": str(settings.home),
                "DISCORECS_DATA_ROOT": settings.data_root,
                "DISCORECS_KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers[0],
            }
            started = time.monotonic()
            processes = {
                kind: subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "commands.cli",
                        "produce",
                        kind,
                        "--rate",
                        str(args.rate),
                        "--duration",
                        str(args.seconds),
                        "--seed",
                        str(seed),
                        "--json",
                    ],
                    env=env,
                    stdout=subprocess.PIPE,
                    text=True,
                )
                for seed, kind in enumerate(("collection", "activity"))
            }
            summaries = {
                kind: json.loads(process.communicate()[0]) for kind, process in processes.items()
            }
            wall = time.monotonic() - started
        finally:
            broker.stop()
        total_sent = sum(summary["sent"] for summary in summaries.values())
        window = max(summary["seconds"] for summary in summaries.values())
        producers = dict(summaries) | {
            "together_events_per_second": total_sent / window,
            "together_sent": total_sent,
            "together_failed": sum(summary["failed"] for summary in summaries.values()),
            "wall_seconds_including_setup": wall,
            "target_events_per_second": 20_000,
        }
        path = write_results("users_and_producers", {"users": users, "producers": producers})
        print(
            f"\nusers:     {report.users:,} in {report.seconds:.0f} s (target < 180 s for 1M); "
            f"10M projected ~{users['projection_10m_users_minutes']:.0f} min"
        )
        for kind, summary in summaries.items():
            latency = summary["latency_ms"]
            print(
                f"{kind:10s} {summary['achieved_rate']:,.0f} events/s, p50 {latency['p50']:.1f} "
                f"ms, p99 {latency['p99']:.1f} ms, failed {summary['failed']}"
            )
        print(
            f"together:  {producers['together_events_per_second']:,.0f} events/s over "
            f"{window:.0f} s (target >= 20,000), failed {producers['together_failed']}\n"
            f"written to {path}"
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
