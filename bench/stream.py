"""Benchmark: the speed layer end to end: both producers -> broker -> stream -> Cassandra,
all on this machine (broker, Cassandra and Spark started for the benchmark on free ports).

Reports the sustained end-to-end rate (events durably in Cassandra per second over the
measured window, after a warm-up), event-time-to-Cassandra latency p50/p95/p99 of every
event with an event time in the window (the end of the micro-batch that applied it, when its
progress row is written after all its Cassandra writes, minus the event's time: an upper
bound on when it was durable; timestamps the driver returns naive are UTC), the lag at the
start and the end of the window, and a loss check: events the producers had acknowledged ==
events the stream took in == events in the master dataset + dead letters, with no event id
twice.
Target on this 2-core machine: >= 10,000 events/s sustained, lag not growing, p95 < 5 s.

    .venv/bin/python -m bench.stream [--rate 6000] [--warmup 90] [--seconds 120]

The warm-up covers the stream's start: its first micro-batch reads the whole collection of
every user it has not seen (~25 s for ~7,000 users here) while the producers run, and the
backlog that leaves takes a minute or so to drain; the window then measures the steady state.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds

from bench.common import CpuShares, free_port, write_results
from discorecs import paths, tables
from discorecs.cassandra import connect
from discorecs.catalog.generate import write_dump
from discorecs.catalog.ingest import build_catalog
from discorecs.schema import apply_schema
from discorecs.services.jobs import StreamJob
from discorecs.services.manager import LocalServices
from discorecs.settings import Settings, load_settings
from discorecs.spark_schemas import EVENT_LOG_BATCH
from discorecs.statements import write_time_micros
from discorecs.users.population import (
    PopulationReport,
    load_population_into_cassandra,
    write_population,
)
from kafka_cluster_scripts.topics import create_topics

CACHE = Path("~/.cache/discorecs/bench").expanduser()
DEFAULT_RATE = 6_000.0  # events/s per producer: 12,000 offered in all


def progress_rows(settings: Settings) -> list:
    with connect(settings, keyspace=settings.cassandra_keyspace) as connection:
        return list(
            connection.session.execute(
                f"SELECT batch_id, processed_at, input_rows, duration_ms, lag "
                f"FROM {tables.STREAM_PROGRESS} WHERE query_name = %s",
                (tables.STREAM_QUERY,),
            )
        )


def sustained_rate(batches: list, window_seconds: float) -> tuple[float, float]:
    """(events/s between the first and the last micro-batch that ended in the window, events/s
    of the batches that ended in the window over the whole window).

    The first is the sustained rate: each batch's events are in Cassandra when its progress row
    is written (``processed_at``), so the events of the batches after the first, over the time
    from the first's end to the last's, is the rate at which events became durable. The second
    depends on where the window's edges fall between batches (up to a whole batch: ~2,000
    events/s for 250,000-event batches in a 120 s window); it is reported for comparison."""
    completed = sum(b.input_rows for b in batches) / window_seconds
    ends = sorted(batches, key=lambda b: b.processed_at)
    if len(ends) < 2:
        return completed, completed
    span = (ends[-1].processed_at - ends[0].processed_at).total_seconds()
    return sum(b.input_rows for b in ends[1:]) / span, completed


def latencies_ms(settings: Settings, batches: list, since: datetime, until: datetime) -> np.ndarray:
    """For every event in the master dataset with an event time in [since, until): when its
    micro-batch's progress row was written (after every Cassandra write of the batch, so the
    event was durably in Cassandra by then) minus its event time, in ms."""
    finished = sorted((b.batch_id, write_time_micros(b.processed_at)) for b in batches)
    batch_ids = np.array([b for b, _ in finished], dtype=np.int64)
    finished_us = np.array([f for _, f in finished], dtype=np.int64)
    log = ds.dataset(
        paths.event_log(settings.data_root), format="parquet", partitioning="hive"
    ).to_table(columns=["event_time", EVENT_LOG_BATCH])
    event_us = pc.cast(log["event_time"], pa.timestamp("us")).cast(pa.int64()).to_numpy()
    batch = log[EVENT_LOG_BATCH].to_numpy().astype(np.int64)
    in_window = (event_us >= write_time_micros(since)) & (event_us < write_time_micros(until))
    at = np.searchsorted(batch_ids, batch[in_window])
    return (finished_us[at] - event_us[in_window]) / 1000


def produce(settings: Settings, rate: float, seconds: float, active_users: int) -> dict:
    """Both producers, each in its own process, as start_kafka_producers.sh runs them."""
    env = {**os.environ, **settings.to_environment()}
    processes = {
        kind: subprocess.Popen(
            [
                sys.executable,
                "-m",
                "commands.cli",
                "produce",
                kind,
                "--rate",
                str(rate),
                "--duration",
                str(seconds),
                "--seed",
                str(seed),
                "--active-users",
                str(active_users),
                "--json",
            ],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        for seed, kind in enumerate(("collection", "activity"), start=1)
    }
    return {kind: process for kind, process in processes.items()}


def print_micro_batches(stream: StreamJob) -> None:
    """The micro-batch lines of the stream's log."""
    if stream.log_path.exists():
        print("\n--- the stream's log (micro-batches) ---")
        for line in stream.log_path.read_text(errors="replace").splitlines():
            if line.startswith("stream "):
                print(line)


def start_with_users(
    settings: Settings, services: LocalServices, releases: int, users: int, partitions: int
) -> PopulationReport:
    """A generated catalog of ``releases`` (cached between runs) and ``users`` users in the
    data root, the services up, the users in Cassandra and the event topics created."""
    dump = CACHE / f"bench_catalog_{releases}.xml.gz"
    if not dump.exists():
        write_dump(dump, releases, seed=7)
    root = Path(settings.data_root)
    build_catalog(dump, root / paths.CATALOG_RELEASES, say=lambda m: None)
    population = write_population(
        root / paths.CATALOG_RELEASES, root / paths.USERS, users, seed=1, say=print
    )
    services.up(apply_cassandra_schema=False)
    apply_schema(settings)
    load_population_into_cassandra(settings, root / paths.USERS, say=lambda m: None)
    create_topics(settings, partitions=partitions)
    return population


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=DEFAULT_RATE, help="events/s per producer")
    parser.add_argument(
        "--warmup", type=float, default=90, help="seconds before the window (see above)"
    )
    parser.add_argument(
        "--seconds", type=float, default=120, help="measured window (several full micro-batches)"
    )
    parser.add_argument("--users", type=int, default=20_000)
    parser.add_argument("--active-users", type=int, default=5_000)
    parser.add_argument("--releases", type=int, default=200_000)
    parser.add_argument("--trigger-seconds", type=float, default=1.0)
    parser.add_argument(
        "--max-events",
        type=int,
        default=Settings.stream_max_events_per_trigger,
        help="events per micro-batch at most (default: the stream's own default)",
    )
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="discorecs-bench-stream-"))
    settings = load_settings(
        {
            "DISCORECS_HOME": str(work / "home"),
            "DISCORECS_DATA_ROOT": str(work / "data"),
            "DISCORECS_KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{free_port()}",
            "DISCORECS_KAFKA_CONTROLLER_PORT": str(free_port()),
            "DISCORECS_CASSANDRA_PORT": str(free_port()),
            "DISCORECS_CASSANDRA_STORAGE_PORT": str(free_port()),
            "DISCORECS_CASSANDRA_MAX_HEAP": "1G",
            "DISCORECS_SPARK_MASTER": "local[2]",
            "DISCORECS_SPARK_DRIVER_MEMORY": "2g",
            "DISCORECS_SPARK_SHUFFLE_PARTITIONS": "2",
            "DISCORECS_STREAM_TRIGGER_SECONDS": str(args.trigger_seconds),
            "DISCORECS_STREAM_MAX_EVENTS_PER_TRIGGER": str(args.max_events),
        }
    )
    services = LocalServices(settings)
    stream = StreamJob(settings)
    try:
        population = start_with_users(settings, services, args.releases, args.users, 4)
        print("starting the stream ...", flush=True)
        stream.start()

        total = args.warmup + args.seconds
        print(
            f"producing {2 * args.rate:,.0f} events/s for {total:.0f} s "
            f"({args.warmup:.0f} s warm-up) ...",
            flush=True,
        )
        started = datetime.now(UTC)
        producers = produce(settings, args.rate, total, args.active_users)
        components = {
            "stream (Spark driver, JVM, Python workers)": stream.record().pid,
            "broker": services.brokers[0].record().pid,
            "cassandra": services.cassandra_nodes[0].record().pid,
        }
        cpu = CpuShares({**components, **{f"{k} producer": p.pid for k, p in producers.items()}})
        window_start = None
        lag_samples = []
        while any(p.poll() is None for p in producers.values()):
            time.sleep(5)
            rows = progress_rows(settings)
            now = datetime.now(UTC)
            if window_start is None and (now - started).total_seconds() >= args.warmup:
                window_start = now
                cpu.start()
            last = max(rows, key=lambda r: r.batch_id) if rows else None
            if last is not None:
                lag_samples.append(((now - started).total_seconds(), last.lag))
                print(
                    f"  t={int((now - started).total_seconds()):4d} s  batch {last.batch_id}: "
                    f"{last.input_rows:,} events in {last.duration_ms:,} ms, lag {last.lag}",
                    flush=True,
                )
        cpu.stop()
        window_end = datetime.now(UTC)
        summaries = {kind: json.loads(p.communicate()[0]) for kind, p in producers.items()}
        produced = sum(s["sent"] for s in summaries.values())
        failed = sum(s["failed"] for s in summaries.values())

        print("producers done; waiting for the stream to drain ...", flush=True)
        draining = CpuShares(components)
        draining.start()
        deadline = time.monotonic() + 300
        while sum(r.input_rows for r in progress_rows(settings)) < produced:
            if time.monotonic() > deadline:
                break
            time.sleep(2)
        draining.stop()
        drained_at = datetime.now(UTC)
        rows = progress_rows(settings)
        streamed = sum(r.input_rows for r in rows)
        in_window = [
            r for r in rows if window_start <= r.processed_at.replace(tzinfo=UTC) <= window_end
        ]
        window_seconds = (window_end - window_start).total_seconds()
        sustained, completed = sustained_rate(in_window, window_seconds)

        log = ds.dataset(
            paths.event_log(settings.data_root), format="parquet", partitioning="hive"
        ).to_table(columns=["event_id"])
        distinct_ids = len(pc.unique(log["event_id"]))
        with connect(settings, keyspace=settings.cassandra_keyspace) as connection:
            dead = connection.session.execute(
                f"SELECT COUNT(*) FROM {tables.DEAD_LETTERS} WHERE day = %s",
                (datetime.now(UTC).strftime("%Y-%m-%d"),),
            ).one()[0]
        latency = latencies_ms(settings, rows, window_start, window_end)
        lags_in_window = [
            lag
            for t, lag in lag_samples
            if lag is not None and t >= (window_start - started).total_seconds()
        ]
        figures = {
            "target_rate_events_per_second": 2 * args.rate,
            "warmup_seconds": args.warmup,
            "window_seconds": window_seconds,
            "sustained_events_per_second": sustained,
            "events_per_second_of_batches_ending_in_window": completed,
            "latency_ms": {
                "p50": float(np.percentile(latency, 50)) if len(latency) else None,
                "p95": float(np.percentile(latency, 95)) if len(latency) else None,
                "p99": float(np.percentile(latency, 99)) if len(latency) else None,
                "samples": len(latency),
            },
            "lag": {
                "window_start": lags_in_window[0] if lags_in_window else None,
                "window_end": lags_in_window[-1] if lags_in_window else None,
                "median": statistics.median(lags_in_window) if lags_in_window else None,
                "max": max(lags_in_window) if lags_in_window else None,
            },
            "batches_in_window": len(in_window),
            "median_batch_ms": statistics.median(r.duration_ms for r in in_window)
            if in_window
            else None,
            "median_batch_events": statistics.median(r.input_rows for r in in_window)
            if in_window
            else None,
            "loss_check": {
                "produced_acked": produced,
                "producer_failures": failed,
                "streamed": streamed,
                "event_log_rows": log.num_rows,
                "event_log_distinct_ids": distinct_ids,
                "dead_lettered": dead,
                "ok": produced == streamed == log.num_rows + dead and distinct_ids == log.num_rows,
            },
            "drain_seconds_after_producers": (drained_at - window_end).total_seconds(),
            "users": args.users,
            "active_users": args.active_users,
            "collection_records": population.collection_items,
            "producers": summaries,
            "cores_busy_in_window": cpu.shares(),
            "cores_busy_draining": draining.shares(),
            "target": ">= 10,000 events/s sustained, lag not growing, p95 < 5,000 ms",
        }
        # The full-rate run is the headline; a run at another rate keeps its own file.
        offered = 2 * args.rate
        name = "stream" if args.rate == DEFAULT_RATE else f"stream_at_{offered:.0f}_per_s"
        path = write_results(
            name,
            figures,
            headline={
                "sustained_events_per_second": sustained,
                "latency_ms": figures["latency_ms"],
                "lag": figures["lag"],
                "median_batch_events": figures["median_batch_events"],
                "loss_check_ok": figures["loss_check"]["ok"],
            },
        )
        lat = figures["latency_ms"]
        print(
            f"\nsustained: {sustained:,.0f} events/s from the first to the last batch ending in "
            f"the {window_seconds:.0f} s window ({completed:,.0f} events/s counting the batches "
            f"that ended in it; offered {2 * args.rate:,.0f}; target >= 10,000)\n"
            f"latency event->Cassandra: p50 {lat['p50']:,.0f} ms, p95 {lat['p95']:,.0f} ms, "
            f"p99 {lat['p99']:,.0f} ms ({lat['samples']:,} samples; target p95 < 5,000 ms)\n"
            f"lag: {figures['lag']}\n"
            f"batches: {len(in_window)} in the window, median {figures['median_batch_events']} "
            f"events in {figures['median_batch_ms']} ms\n"
            f"loss check: {figures['loss_check']}\n"
            f"p95 of every run on this stack: "
            f"{[r['latency_ms']['p95'] for r in json.loads(path.read_text())['runs']]}\n"
            f"cores busy in the window: {figures['cores_busy_in_window']}\n"
            f"cores busy draining after it: {figures['cores_busy_draining']}\n"
            f"written to {path}"
        )
    finally:
        stream.stop()
        print_micro_batches(stream)
        services.down()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
