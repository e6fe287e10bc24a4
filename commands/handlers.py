"""What each ``discorecs`` subcommand does: one ``cmd_<name>(settings, args)`` per command
(the parser in :mod:`commands.cli` names them), importing its application only when run, so
that ``discorecs --help`` does not import Spark."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys

from discorecs.errors import DiscorecsError
from discorecs.schema import apply_schema, schema_script
from discorecs.services.base import ServiceStatus
from discorecs.services.install import InstallError, find_java
from discorecs.services.manager import LocalServices
from discorecs.settings import LOCAL_NODES_FILE, Settings, load_settings


def cmd_up(settings: Settings, args: argparse.Namespace) -> int:
    if args.nodes is not None and args.nodes != settings.local_nodes:
        settings = choose_local_nodes(settings, args.nodes, args.config)
    services = LocalServices(settings)
    statuses = services.up()
    if not args.skip_spark_check:
        from discorecs.spark import check_spark  # pyspark is slow to import; only when needed

        print(f"spark: local mode works (Spark {check_spark(settings)})", file=sys.stderr)
    print_statuses(statuses, settings)
    return 0


def choose_local_nodes(settings: Settings, nodes: int, config: str | None) -> Settings:
    """Record ``nodes`` as this home's node count and return the settings it implies; refused
    while the services of the current count run (they hold the same ports)."""
    running = [s.name for s in LocalServices(settings).services if s.record() is not None]
    if running:
        raise DiscorecsError(
            f"{', '.join(running)} of this home run with {settings.local_nodes} node(s); stop "
            f"them with `discorecs down`, then run `discorecs up --nodes {nodes}`"
        )
    remembered = settings.home / LOCAL_NODES_FILE
    remembered.parent.mkdir(parents=True, exist_ok=True)
    remembered.write_text(f"{nodes}\n")
    chosen = load_settings(config_file=config)
    if chosen.local_nodes != nodes:
        raise DiscorecsError(
            f"--nodes {nodes} is overridden by DISCORECS_LOCAL_NODES (or local_nodes in the "
            f"config file), which says {chosen.local_nodes}; unset it or set it to {nodes}"
        )
    return chosen


def cmd_down(settings: Settings, args: argparse.Namespace) -> int:
    stopped = LocalServices(settings).down()
    print("stopped: " + ", ".join(stopped) if stopped else "nothing was running")
    return 0


def cmd_status(settings: Settings, args: argparse.Namespace) -> int:
    manager = LocalServices(settings)
    statuses = manager.status()
    if args.json:
        print(json.dumps([dataclasses.asdict(status) for status in statuses], indent=2))
    else:
        print_statuses(statuses, settings)
        print_pipeline(settings)
    # The exit status is about the services `discorecs up` starts (broker and Cassandra); the
    # site, the stream and the producers run only when the demo (or the user) starts them.
    core = {service.name for service in manager.services}
    return 0 if all(s.state == "up" for s in statuses if s.name in core) else 3


def cmd_init_schema(settings: Settings, args: argparse.Namespace) -> int:
    tables = apply_schema(settings)
    print(f"keyspace {settings.cassandra_keyspace}: {len(tables)} tables ({', '.join(tables)})")
    return 0


def cmd_schema(settings: Settings, args: argparse.Namespace) -> int:
    for statement in schema_script(settings):
        print(statement + ";")
    return 0


def cmd_ingest_dump(settings: Settings, args: argparse.Namespace) -> int:
    from discorecs.catalog.ingest import ingest_dump, report_lines

    report = ingest_dump(
        settings,
        args.source,
        checksum=args.checksum,
        workers=args.workers,
        load_cassandra=not args.skip_cassandra,
    )
    print("\n".join(report_lines(report)))
    return 0


def cmd_generate_dump(settings: Settings, args: argparse.Namespace) -> int:
    from pathlib import Path

    from discorecs.catalog.generate import write_dump
    from discorecs.progress import Progress

    progress = Progress(f"generating {args.out}", args.releases, unit="releases")
    dump = write_dump(
        Path(args.out),
        args.releases,
        seed=args.seed,
        compresslevel=args.compress_level,
        progress=lambda releases, _: progress.update(releases),
    )
    progress.finish(dump.releases)
    print(f"{dump.path}: {dump.releases:,} releases, {dump.xml_bytes / 1e6:,.1f} MB of XML")
    return 0


def cmd_generate_users(settings: Settings, args: argparse.Namespace) -> int:
    from discorecs.users.population import generate_users

    report = generate_users(
        settings,
        args.users,
        seed=args.seed,
        batch_size=args.batch_size,
        taste_model=args.taste_model,
        load_cassandra=not args.skip_cassandra,
    )
    size = report.collection_size
    print(
        f"users:       {report.users:,} in {report.seconds:.1f}s "
        f"({report.users_per_second:,.0f} users/s) -> {report.folder}"
    )
    print(
        f"collections: {report.collection_items:,} records (per user: median "
        f"{size['median']:.0f}, p90 {size['p90']:.0f}, p99 {size['p99']:.0f}, "
        f"max {size['max']})"
    )
    print(f"wantlists:   {report.wantlist_items:,} records")
    for table, rows in report.cassandra_rows.items():
        print(f"cassandra:   {rows:,} rows upserted into {table}")
    return 0


def cmd_create_topics(settings: Settings, args: argparse.Namespace) -> int:
    from kafka_cluster_scripts.topics import create_topics

    for topic, outcome in create_topics(settings, args.partitions, args.replication).items():
        print(f"{topic}: {outcome}")
    return 0


def cmd_produce(settings: Settings, args: argparse.Namespace) -> int:
    import time

    from kafka_cluster_scripts.run import run_producer

    seed = args.seed if args.seed is not None else time.time_ns() % 2**32
    summary = run_producer(
        args.kind,
        settings,
        rate=args.rate,
        count=args.count,
        duration=args.duration,
        seed=seed,
        active_users=args.active_users,
    )
    if args.json:
        print(json.dumps(summary.as_dict(), indent=2))
    return 0 if summary.failed == 0 else 4


def cmd_batch(settings: Settings, args: argparse.Namespace) -> int:
    from discorecs.spark import build_spark_session
    from spark_jobs.nightly import run_batch

    spark = build_spark_session(settings, "discorecs-nightly")
    try:
        report = run_batch(spark, settings, load_cassandra=not args.skip_cassandra)
    finally:
        spark.stop()
    print(f"run {report.run_id}: {report.status} in {report.seconds:.0f} s")
    for name, seconds in report.step_seconds.items():
        print(f"  {name:14s} {seconds:7.1f} s")
    for name, count in report.counts.items():
        print(f"  {name:28s} {count:,}")
    return 0


def cmd_evaluate(settings: Settings, args: argparse.Namespace) -> int:
    from pathlib import Path

    from discorecs.spark import build_spark_session
    from spark_jobs.evaluate import (
        Evaluation,
        evaluate,
        evaluate_published,
        format_table,
        write_evaluation,
    )

    if not 0 < args.holdout < 1:
        print("discorecs: error: --holdout must be between 0 and 1", file=sys.stderr)
        return 2
    spark = build_spark_session(settings, "discorecs-evaluate")
    try:
        how = Evaluation(holdout=args.holdout, seed=args.seed, als_users=args.als_users)
        if args.published:
            result = evaluate_published(spark, settings, how)
        else:
            result = evaluate(spark, settings, how, users=args.users)
    finally:
        spark.stop()
    out = write_evaluation(
        result, Path(args.out) if args.out else settings.home / "evaluation.json"
    )
    print(format_table(result))
    print(f"written to {out}")
    return 0


def cmd_web(settings: Settings, args: argparse.Namespace) -> int:
    from webapp.server import serve

    port = args.port or settings.web_port
    print(f"discorecs web on http://{args.host}:{port}/", file=sys.stderr, flush=True)
    serve(
        settings,
        host=args.host,
        port=port,
        workers=args.workers,
        threads=args.threads,
        connections=args.connections,
        dev=args.dev,
    )
    return 0


def cmd_demo(settings: Settings, args: argparse.Namespace) -> int:
    from commands.demo import run_demo

    print(run_demo(settings, releases=args.releases, users=args.users, dump=args.dump or None))
    return 0


def cmd_stream(settings: Settings, args: argparse.Namespace) -> int:
    from discorecs.spark import build_spark_session
    from streaming.job import run_stream

    spark = build_spark_session(settings, "discorecs-stream")
    try:
        run_stream(
            spark,
            settings,
            available_now=args.available_now,
            max_events=args.max_events,
            trigger_seconds=args.trigger_seconds,
        )
    finally:
        spark.stop()
    return 0


def print_statuses(statuses: list[ServiceStatus], settings: Settings) -> None:
    rows = [("SERVICE", "STATE", "PORTS", "PID", "VERSION", "LOG")]
    for status in statuses:
        rows.append(
            (
                status.name,
                status.state,
                ",".join(map(str, status.ports)) or "-",
                str(status.pid or "-"),
                status.version or "-",
                status.log or "-",
            )
        )
    rows.append(("spark", "local mode", "-", "-", _spark_version(), settings.spark_master))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print(
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        )


def print_pipeline(settings: Settings) -> None:
    """The last batch run and the stream's recent throughput, when Cassandra answers."""
    from webapp.repository import CassandraRepository, ServingUnavailable

    repository = CassandraRepository(settings)
    try:
        health = repository.health()
    except ServingUnavailable:
        return
    finally:
        repository.close()
    if health.last_runs:
        run = health.last_runs[0]
        print(f"\nbatch:  last run {run.run_id} {run.status}; serving {health.published_run}")
    else:
        print("\nbatch:  no run yet (discorecs batch)")
    stream = health.stream
    if stream:
        lag = "unknown" if stream.last_lag is None else f"{stream.last_lag:,}"
        print(
            f"stream: {stream.events_per_second:,.0f} events/s over the last {stream.batches} "
            f"micro-batches, lag {lag}, {stream.dead_lettered:,} dead-lettered, last batch "
            f"{stream.last_batch_at:%Y-%m-%d %H:%M:%S}"
        )
    else:
        print("stream: not reported yet (discorecs stream)")


def _spark_version() -> str:
    try:
        from importlib.metadata import version

        pyspark = version("pyspark")
    except Exception:
        return "pyspark not installed"
    try:
        java = find_java(install_if_missing=False).version
    except InstallError:
        java = "missing"
    return f"pyspark {pyspark}, java {java}"
