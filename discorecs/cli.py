"""The ``discorecs`` command: one entry point with a subcommand per task.

Errors the user can act on (bad settings, a port in use, a service that will not start) are
printed as one ``discorecs: error:`` paragraph and exit with status 1, never as a traceback.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections.abc import Callable, Sequence

from discorecs import __version__
from discorecs.cassandra import apply_schema, schema_script
from discorecs.errors import DiscorecsError
from discorecs.services.base import ServiceStatus
from discorecs.services.install import InstallError, find_java
from discorecs.services.manager import LocalServices
from discorecs.settings import LOCAL_NODES_FILE, Settings, load_settings
from discorecs.users import TASTE_MODELS


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "handler", None):
        parser.print_help()
        return 2
    try:
        settings = load_settings(config_file=args.config)
        return int(args.handler(settings, args) or 0)
    except DiscorecsError as error:
        print(f"discorecs: error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("discorecs: interrupted", file=sys.stderr)
        return 130


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="discorecs",
        description="Vinyl recommendations from the Discogs catalog (lambda architecture).",
    )
    parser.add_argument("--version", action="version", version=f"discorecs {__version__}")
    parser.add_argument(
        "--config", help="TOML settings file (default: $DISCORECS_CONFIG; env vars override it)"
    )
    commands = parser.add_subparsers(title="commands", metavar="COMMAND")

    def command(
        name: str, handler: Callable[[Settings, argparse.Namespace], int | None], help_text: str
    ) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help_text, description=help_text)
        sub.set_defaults(handler=handler)
        return sub

    up = command(
        "up",
        cmd_up,
        "install (first run) and start the local broker and Cassandra, "
        "apply the schema, check Spark",
    )
    up.add_argument(
        "--nodes",
        type=int,
        choices=(1, 3),
        help="brokers and Cassandra nodes to run: 1, or 3 on 127.0.0.1-3 (replicated topics "
        "and keyspace); remembered for later commands of this home (default: the last choice, "
        "else 1)",
    )
    up.add_argument(
        "--skip-spark-check", action="store_true", help="do not run the ~5 s Spark local-mode check"
    )
    command("down", cmd_down, "stop the local services that `up` started")
    status = command("status", cmd_status, "show each local service: state, ports, pid, version")
    status.add_argument("--json", action="store_true", help="print the statuses as JSON")
    command(
        "init-schema", cmd_init_schema, "create the keyspace and tables if missing (idempotent)"
    )
    command("schema", cmd_schema, "print the full CQL script (keyspace included) for cqlsh")

    ingest = command(
        "ingest-dump",
        cmd_ingest_dump,
        "fetch, verify and parse a Discogs releases dump into the Parquet catalog and Cassandra",
    )
    ingest.add_argument("source", help="a .xml or .xml.gz path, s3://bucket/key or https:// URL")
    ingest.add_argument(
        "--checksum",
        help="the dump's CHECKSUM.txt (path, s3:// or https://); "
        "default: discogs_YYYYMMDD_CHECKSUM.txt beside the dump",
    )
    ingest.add_argument("--workers", type=positive_int, help="parser processes (default: cores)")
    ingest.add_argument(
        "--skip-cassandra",
        action="store_true",
        help="publish the Parquet catalog only; do not load Cassandra",
    )

    generate = command(
        "generate-dump",
        cmd_generate_dump,
        "write a Discogs-format releases dump with realistic distributions",
    )
    generate.add_argument("--releases", type=positive_int, required=True)
    generate.add_argument("--out", required=True, help="output file (.xml or .xml.gz)")
    generate.add_argument("--seed", type=int, default=0)
    generate.add_argument(
        "--compress-level",
        type=int,
        default=1,
        choices=range(1, 10),
        metavar="1-9",
        help="gzip level (default 1: fast)",
    )

    users = command(
        "generate-users",
        cmd_generate_users,
        "generate users with collections and wantlists from the catalog",
    )
    users.add_argument("--users", type=positive_int, required=True)
    users.add_argument("--seed", type=int, default=0)
    users.add_argument("--batch-size", type=positive_int, default=50_000)
    users.add_argument(
        "--taste-model",
        choices=TASTE_MODELS,
        default="genres",
        help="how collectors choose records: by preferred genres and styles (default), or "
        "by scenes (labels in an era, their artists)",
    )
    users.add_argument(
        "--skip-cassandra", action="store_true", help="write the Parquet master dataset only"
    )

    topics_cmd = command(
        "create-topics", cmd_create_topics, "create the event topics if missing (keyed by user id)"
    )
    topics_cmd.add_argument("--partitions", type=positive_int, default=6)
    topics_cmd.add_argument(
        "--replication",
        type=positive_int,
        help="copies of each partition (default: the kafka_replication_factor setting)",
    )

    produce = command(
        "produce",
        cmd_produce,
        "send collection or activity events for existing users, by their taste",
    )
    produce.add_argument("kind", choices=("collection", "activity"))
    produce.add_argument("--rate", type=positive_float, default=1000.0, help="events per second")
    limit = produce.add_mutually_exclusive_group()
    limit.add_argument("--count", type=positive_int, help="stop after this many events")
    limit.add_argument("--duration", type=positive_float, help="stop after this many seconds")
    produce.add_argument(
        "--seed",
        type=int,
        default=None,
        help="event sequence seed (default: from the clock; same seed, same events and event ids)",
    )
    produce.add_argument(
        "--active-users",
        type=positive_int,
        default=50_000,
        help="how many users (sampled) the events are for",
    )
    produce.add_argument("--json", action="store_true", help="print the summary as JSON")

    batch = command(
        "batch",
        cmd_batch,
        "run the nightly batch: state, scores, rankings, friends, releases, serving",
    )
    batch.add_argument(
        "--skip-cassandra",
        action="store_true",
        help="compute and write the snapshot only; do not load or publish",
    )

    evaluate = command(
        "evaluate",
        cmd_evaluate,
        "generate a population per taste model from the catalog, hide part of each "
        "collection and score recommendations against it, next to baselines (top genre, "
        "friend's most owned, item-to-item, ALS tuned by a grid)",
    )
    evaluate.add_argument("--holdout", type=positive_float, default=0.1)
    evaluate.add_argument("--seed", type=int, default=0, help="of the populations and the split")
    evaluate.add_argument(
        "--users", type=positive_int, default=5_000, help="collectors per generated population"
    )
    evaluate.add_argument(
        "--published",
        action="store_true",
        help="evaluate the published users (with the events since) instead of generating",
    )
    evaluate.add_argument(
        "--als-users",
        type=positive_int,
        default=20_000,
        help="users ALS is evaluated on (a sample when there are more)",
    )
    evaluate.add_argument("--out", help="JSON file (default: <home>/evaluation.json)")

    web = command("web", cmd_web, "serve the site and JSON API (gunicorn; --dev for Flask's)")
    web.add_argument("--host", default="127.0.0.1")
    web.add_argument("--port", type=positive_int, help="default: DISCORECS_WEB_PORT (8000)")
    web.add_argument("--workers", type=positive_int, default=2)
    web.add_argument("--threads", type=positive_int, default=4)
    web.add_argument(
        "--connections",
        type=positive_int,
        default=32,
        help="client connections a worker holds at most, so keep-alive clients spread over "
        "the workers (default: 32)",
    )
    web.add_argument("--dev", action="store_true", help="Flask's development server")

    demo = command(
        "demo",
        cmd_demo,
        "run the whole pipeline locally and serve the site (what `make demo` runs)",
    )
    demo.add_argument(
        "--releases",
        type=positive_int,
        default=20_000,
        help="size of the generated catalog (ignored with --dump)",
    )
    demo.add_argument("--users", type=positive_int, default=2_000)
    demo.add_argument("--dump", help="a releases dump to use instead: path, s3://, https://")

    stream = command(
        "stream",
        cmd_stream,
        "run the speed layer: Kafka -> validate -> Cassandra and the event log",
    )
    stream.add_argument(
        "--available-now", action="store_true", help="process what is in the topics now, then stop"
    )
    stream.add_argument(
        "--max-events",
        type=positive_int,
        help="events per micro-batch at most (default: stream_max_events_per_trigger)",
    )
    stream.add_argument(
        "--trigger-seconds",
        type=positive_float,
        help="seconds between micro-batches (default: stream_trigger_seconds)",
    )
    return parser


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{value:g} must be greater than 0")
    return value


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{value} must be greater than 0")
    return value


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
    from discorecs.demo import run_demo

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


if __name__ == "__main__":
    sys.exit(main())
