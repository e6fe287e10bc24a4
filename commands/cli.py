"""The ``discorecs`` command: one entry point with a subcommand per task.

Errors the user can act on (bad settings, a port in use, a service that will not start) are
printed as one ``discorecs: error:`` paragraph and exit with status 1, never as a traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from commands.handlers import (
    cmd_batch,
    cmd_create_topics,
    cmd_demo,
    cmd_down,
    cmd_evaluate,
    cmd_generate_dump,
    cmd_generate_users,
    cmd_ingest_dump,
    cmd_init_schema,
    cmd_produce,
    cmd_schema,
    cmd_status,
    cmd_stream,
    cmd_up,
    cmd_web,
)
from discorecs import __version__
from discorecs.errors import DiscorecsError
from discorecs.settings import Settings, load_settings
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


Handler = Callable[[Settings, argparse.Namespace], int | None]
Command = Callable[[str, Handler, str], argparse.ArgumentParser]
"""Adds a subcommand: its name, its handler (commands.handlers) and its help text."""


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

    def command(name: str, handler: Handler, help_text: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help_text, description=help_text)
        sub.set_defaults(handler=handler)
        return sub

    add_services_commands(command)
    add_data_commands(command)
    add_speed_commands(command)
    add_batch_commands(command)
    add_site_commands(command)
    return parser


def add_services_commands(command: Command) -> None:
    """The local services: up, down, status, and the schema."""
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


def add_data_commands(command: Command) -> None:
    """The catalog and the users: ingest-dump, generate-dump, generate-users."""
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


def add_speed_commands(command: Command) -> None:
    """The speed layer: create-topics, produce, stream."""
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


def add_batch_commands(command: Command) -> None:
    """The batch layer: batch, evaluate."""
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


def add_site_commands(command: Command) -> None:
    """The site, and the whole pipeline at once: web, demo."""
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


if __name__ == "__main__":
    sys.exit(main())
