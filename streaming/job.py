"""The speed layer: ``discorecs stream`` locally, ``spark-submit streaming/job.py`` on a cluster.

    Kafka (collection_events, activity_events) -> validate (streaming.transform)
      -> dead letters, collections / wantlists (upsert or delete), latest changes, live genre
         profiles of the touched users, progress (Cassandra); event log (master dataset)

Every write of a micro-batch is idempotent, so the batch Spark replays after a crash changes
nothing: dead letters are keyed by (topic, partition, offset), the event log folder of a batch
is overwritten as a whole, collections / wantlists are set to the batch's last event per
(user, release), changes are keyed by event id, and a live profile is recomputed from the
user's whole collection as it stands after the batch.

Each micro-batch logs its counts and duration; a progress listener then adds the lag (events
on the broker beyond the batch's end offsets) to the batch's ``stream_progress`` row, which
``discorecs status`` and the site's health panel show.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa
from pyspark.errors import AnalysisException, StreamingQueryException
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.streaming import StreamingQueryListener

from discorecs import paths, tables, topics
from discorecs.errors import DiscorecsError
from discorecs.events import EventKind
from discorecs.progress import say_to_stderr
from discorecs.settings import Settings, load_settings
from discorecs.spark_schemas import EVENT_LOG_BATCH, EVENT_LOG_PARTITION
from spark_jobs.transforms import latest_events
from streaming import sink
from streaming.kafka_source import NAME, KafkaSource, lag_behind, offset_positions
from streaming.transform import (
    effective_changes,
    genre_units,
    mark,
    next_live_profiles,
    valid_events,
)

QUERY_NAME = tables.STREAM_QUERY
STARTED = "stream started"  # logged once the query runs (the local service waits for it)
KAFKA_PACKAGE = "org.apache.spark:spark-sql-kafka-0-10_2.13"

LOG_COLUMNS = ("event_id", "user_id", "release_id", "kind", "event_time", "ingested_at")


class StreamError(DiscorecsError):
    """The stream cannot start or keep running; the message says why and what to do."""


@dataclass(frozen=True)
class Reference:
    """What every micro-batch checks events against and scores users with (read once)."""

    users: DataFrame  # user_id
    releases: DataFrame  # release_id, genres


def load_reference(spark: SparkSession, settings: Settings) -> Reference:
    from discorecs.storage import local_path, require_published

    root = settings.data_root
    if "://" not in root or root.startswith("file://"):  # remote roots: Spark's error will do
        for dataset, what, how in (
            (paths.CATALOG_RELEASES, "published catalog", "run `discorecs ingest-dump` first"),
            (paths.USERS, "generated users", "run `discorecs generate-users` first"),
        ):
            require_published(local_path(root, dataset), what, how)
    users = spark.read.parquet(paths.join(root, paths.USER_PROFILES)).select("user_id")
    releases = spark.read.parquet(paths.catalog_releases(root)).select("release_id", "genres")
    return Reference(users.cache(), releases.cache())


def read_events(spark: SparkSession, settings: Settings, max_events: int) -> DataFrame:
    """The raw Kafka rows (topic, kafka_partition, kafka_offset, key, value, timestamp) from
    the source ``settings.stream_source`` names: ``python`` (this project's, needs only
    kafka-python) or ``kafka`` (Spark's connector, where the cluster has it)."""
    bootstrap = ",".join(settings.kafka_bootstrap_servers)
    subscribed = ",".join(topics.ALL_TOPICS)
    if settings.stream_source == "python":
        spark.dataSource.register(KafkaSource)
        return (
            spark.readStream.format(NAME)
            .option("bootstrap", bootstrap)
            .option("topics", subscribed)
            .option("maxEventsPerTrigger", str(max_events))
            .load()
        )
    try:
        raw = (
            spark.readStream.format("kafka")
            .option("kafka.bootstrap.servers", bootstrap)
            .option("subscribe", subscribed)
            .option("startingOffsets", "earliest")
            .option("maxOffsetsPerTrigger", str(max_events))
            .option("failOnDataLoss", "true")
            .load()
        )
    except AnalysisException as error:
        raise StreamError(
            f"stream_source = kafka needs Spark's Kafka connector ({error.getErrorClass()}): "
            f"spark-submit with --packages {KAFKA_PACKAGE}:<your Spark version>, or set "
            "DISCORECS_STREAM_SOURCE=python"
        ) from None
    return raw.select(
        "topic",
        F.col("partition").alias("kafka_partition"),
        F.col("offset").alias("kafka_offset"),
        "key",
        "value",
        "timestamp",
    )


def _run_writes(
    settings: Settings,
    frame: DataFrame,
    plan: Callable[[Any], list],
    what: str,
    group: Callable[[Any], Any] = lambda row: row.user_id,
) -> None:
    """For every row of ``frame``, run the statements ``plan(row)`` names, on the executors
    (one connection per Python worker, bounded concurrency). The statements of rows with the
    same ``group`` (their partition key: the user) travel together in unlogged batches."""

    def write_partition(rows: Iterator[Any]) -> None:
        from collections import defaultdict

        from discorecs.cassandra import execute_grouped, worker_connection

        groups: dict[Any, list] = defaultdict(list)
        for row in rows:
            groups[group(row)].extend(plan(row))
        execute_grouped(worker_connection(settings), groups.values(), what=what, concurrency=64)

    frame.foreachPartition(write_partition)


def _read_per_key(
    settings: Settings,
    keys: DataFrame,
    cql: str,
    schema: pa.Schema,
    ddl: str,
    parameters: Callable[[dict], tuple] = lambda key: (key["user_id"],),
) -> DataFrame:
    """Run the single-partition SELECT ``cql`` once per row of ``keys`` on the executors and
    return every answer row as a DataFrame (``schema``/``ddl``: the selected columns)."""

    def read(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        from discorecs.cassandra import read_partitions, worker_connection

        for batch in batches:
            params = [parameters(key) for key in batch.to_pylist()]
            if not params:
                continue
            columns: list[list] = [[] for _ in schema]
            for row in read_partitions(worker_connection(settings), cql, params, what=cql):
                for column, value in zip(columns, row, strict=True):
                    column.append(list(value.items()) if hasattr(value, "items") else value)
            yield pa.RecordBatch.from_arrays(
                [pa.array(c, type=f.type) for c, f in zip(columns, schema, strict=True)],
                schema=schema,
            )

    return keys.mapInArrow(read, ddl)


def read_collections(settings: Settings, users: DataFrame) -> DataFrame:
    """user_id, release_id of every record the given users own now."""
    return _read_per_key(
        settings,
        users.select("user_id"),
        f"SELECT user_id, release_id FROM {tables.COLLECTIONS} WHERE user_id = ?",
        pa.schema([("user_id", pa.int64()), ("release_id", pa.int64())]),
        "user_id long, release_id long",
    )


LIVE_ROW_CQL = (
    f"SELECT collection_size, genre_units, stream_id, batch_id "
    f"FROM {tables.USER_LIVE_PROFILES} WHERE user_id = ?"
)
HELD_CQL = f"SELECT release_id FROM {tables.COLLECTIONS} WHERE user_id = ? AND release_id IN ?"
_USER_STATE = pa.schema(
    [
        ("user_id", pa.int64()),
        ("collection_size", pa.int32()),
        ("genre_units", pa.map_(pa.string(), pa.int64())),
        ("stream_id", pa.string()),
        ("batch_id", pa.int64()),
        ("held", pa.list_(pa.int64())),
    ]
)


def read_user_state(settings: Settings, net: DataFrame) -> DataFrame:
    """One executor pass, one row per user of ``net`` (user_id, release_id): their live
    profile row (collection_size, genre_units, stream_id, batch_id; nulls when there is none)
    and ``held``, which of their releases in ``net`` are in their collection now. Both reads of
    every user go to Cassandra together, with bounded concurrency."""
    keys = net.groupBy("user_id").agg(F.collect_set("release_id").alias("release_ids"))

    def read(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        from discorecs.cassandra import read_statements, worker_connection

        for batch in batches:
            statements: list[tuple[str, tuple]] = []
            for key in batch.to_pylist():
                statements.append((LIVE_ROW_CQL, (key["user_id"],)))
                statements.append((HELD_CQL, (key["user_id"], key["release_ids"])))
            if not statements:
                continue
            answers = read_statements(
                worker_connection(settings), statements, what="the stream's user state"
            )
            rows = []
            # The answers come in the statements' order: a user's live row, then their held.
            for (live_key, live), (_, held) in zip(answers, answers, strict=False):
                row = next(iter(live), None)
                rows.append(
                    {
                        "user_id": live_key[0],
                        "collection_size": row.collection_size if row else None,
                        "genre_units": list((row.genre_units or {}).items()) if row else None,
                        "stream_id": row.stream_id if row else None,
                        "batch_id": row.batch_id if row else None,
                        "held": [found.release_id for found in held],
                    }
                )
            yield pa.RecordBatch.from_pylist(rows, schema=_USER_STATE)

    return keys.mapInArrow(
        read,
        "user_id long, collection_size int, genre_units map<string,bigint>, stream_id string, "
        "batch_id long, held array<long>",
    )


def update_live_profiles(
    settings: Settings,
    reference: Reference,
    valid: DataFrame,
    stream_id: str,
    batch_id: int,
    updated_at: datetime,
) -> int:
    """The real-time view, before the batch's collection writes: each touched user's live
    profile plus the genre units of the batch's effective changes (read against the
    collections as they stand before the batch). A user whose live row this stream has not
    written yet (a new user, or a new checkpoint) starts from their whole collection. Users
    whose row already carries this batch id are skipped: a replay applies a batch once.
    Returns how many users' profiles are current after the batch."""
    add, remove = EventKind.COLLECTION_ADD.value, EventKind.COLLECTION_REMOVE.value
    net = latest_events(valid, add, remove).localCheckpoint(eager=True)
    state = read_user_state(settings, net).localCheckpoint(eager=True)
    ours = state.filter(F.col("stream_id") == stream_id)
    applied = ours.filter(F.col("batch_id") >= batch_id).select("user_id")
    continuing = ours.filter(F.col("batch_id") < batch_id)
    todo = net.join(applied, "user_id", "left_anti")
    fresh = state.filter(F.col("stream_id").isNull() | (F.col("stream_id") != stream_id))
    if fresh.isEmpty():  # the steady state: every user already has a live row of ours
        holdings = net.sparkSession.createDataFrame([], "user_id long, release_id long")
    else:
        holdings = read_collections(settings, fresh).localCheckpoint(eager=True)
    fresh_sizes = (
        fresh.select("user_id")
        .join(holdings.groupBy("user_id").count(), "user_id", "left")
        .select("user_id", F.coalesce("count", F.lit(0)).cast("int").alias("collection_size"))
    )
    start_sizes = continuing.select("user_id", "collection_size").unionByName(fresh_sizes)
    start_units = continuing.select(
        "user_id", F.explode("genre_units").alias("genre", "units")
    ).unionByName(genre_units(holdings, reference.releases))
    held = state.select("user_id", F.explode("held").alias("release_id"))
    changes = effective_changes(todo, held, add, remove)
    profiles = next_live_profiles(start_sizes, start_units, changes, reference.releases)
    _run_writes(
        settings,
        profiles,
        lambda row: [
            (
                sink.LIVE_PROFILE,
                (
                    row.user_id,
                    row.collection_size,
                    row.genre_units,
                    row.scores,
                    row.shares,
                    stream_id,
                    batch_id,
                    updated_at,
                ),
            )
        ],
        tables.USER_LIVE_PROFILES,
    )
    return state.count()


def process_batch(
    spark: SparkSession,
    settings: Settings,
    reference: Reference,
    raw: DataFrame,
    batch_id: int,
    say: Callable[[str], None],
    stream_id: str = "adhoc",
) -> dict[str, int]:
    """Apply one micro-batch; returns its counts (also written to ``stream_progress``).

    A fixed number of Spark jobs whatever the batch size: validate (read once, kept), count,
    append to the master dataset, update the touched users' live profiles, write the rest to
    Cassandra in one pass. ``stream_id`` (the query's id, kept in its checkpoint) and
    ``batch_id`` mark the live profiles, so a replayed batch updates them once."""
    started = time.monotonic()
    steps: dict[str, float] = {}

    def lap(step: str) -> None:  # seconds since the previous step ended
        steps[step] = time.monotonic() - started - sum(steps.values())

    marked = (
        mark(raw, reference.users, reference.releases)
        .withColumn("written_at", F.unix_micros("event_time"))
        .withColumn(EVENT_LOG_PARTITION, F.date_format("ingested_at", "yyyy-MM-dd"))
        .localCheckpoint(eager=True)
    )
    tally = (
        marked.groupBy(F.col("reason").isNull().alias("valid"), EVENT_LOG_PARTITION, "kind")
        .count()
        .collect()
    )
    holding_kinds = set(sink.HOLDING_WRITES)
    counts = {
        "input_rows": sum(r["count"] for r in tally),
        "valid_rows": sum(r["count"] for r in tally if r.valid),
        "dead_lettered": sum(r["count"] for r in tally if not r.valid),
        "upserts": sum(r["count"] for r in tally if r.valid and r.kind in holding_kinds),
        "live_profiles": 0,
    }
    lap("read")

    # The master dataset: one folder per (ingest date, batch), overwritten on replay.
    valid = valid_events(marked.drop(EVENT_LOG_PARTITION).drop("written_at"))
    log = paths.event_log(settings.data_root)
    for date in sorted({r[EVENT_LOG_PARTITION] for r in tally if r.valid}):
        valid.filter(F.date_format("ingested_at", "yyyy-MM-dd") == date).select(
            *LOG_COLUMNS
        ).write.mode("overwrite").parquet(
            paths.join(log, f"{EVENT_LOG_PARTITION}={date}", f"{EVENT_LOG_BATCH}={batch_id}")
        )

    lap("log")

    # The real-time view first: it reads the collections as they stood before this batch.
    collection_kinds = (EventKind.COLLECTION_ADD.value, EventKind.COLLECTION_REMOVE.value)
    received_at = datetime.now(UTC)
    if any(r.valid and r.kind in collection_kinds for r in tally):
        counts["live_profiles"] = update_live_profiles(
            settings, reference, valid, stream_id, batch_id, received_at
        )

    lap("live")

    # Dead letters, collections / wantlists and changes: one pass on the executors.
    day = received_at.strftime("%Y-%m-%d")
    _run_writes(
        settings,
        marked.filter(F.col("reason").isNotNull() | F.col("kind").isin(*holding_kinds)).select(
            *sink.WRITE_COLUMNS
        ),
        lambda row: sink.writes_for(row, day, received_at),
        "the stream's tables",
        sink.write_group,
    )

    lap("writes")
    duration_ms = int((time.monotonic() - started) * 1000)
    record_progress(settings, batch_id, counts, duration_ms)
    say(
        f"stream batch {batch_id}: {counts['input_rows']:,} in, {counts['valid_rows']:,} valid, "
        f"{counts['dead_lettered']:,} dead-lettered, {counts['upserts']:,} upserts, "
        f"{counts['live_profiles']:,} live profiles, {duration_ms:,} ms ("
        + ", ".join(f"{step} {seconds:.1f} s" for step, seconds in steps.items())
        + ")"
    )
    return counts


def record_progress(
    settings: Settings, batch_id: int, counts: dict[str, int], duration_ms: int
) -> None:
    """The batch's ``stream_progress`` row (its lag is added by :class:`LagReporter`)."""
    from discorecs.cassandra import connect

    with connect(settings, keyspace=settings.cassandra_keyspace) as connection:
        connection.session.execute(
            connection.prepare(
                f"INSERT INTO {tables.STREAM_PROGRESS} (query_name, batch_id, processed_at, "
                "input_rows, valid_rows, dead_lettered, upserts, duration_ms) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
            ),
            (
                QUERY_NAME,
                batch_id,
                datetime.now(UTC),
                counts["input_rows"],
                counts["valid_rows"],
                counts["dead_lettered"],
                counts["upserts"],
                duration_ms,
            ),
        )


class LagReporter(StreamingQueryListener):
    """After each micro-batch: how many events the broker holds beyond the batch's end
    offsets; logged and written to the batch's ``stream_progress`` row."""

    def __init__(self, settings: Settings, say: Callable[[str], None]) -> None:
        self.settings = settings
        self.say = say

    def onQueryStarted(self, event: Any) -> None:
        pass

    def onQueryIdle(self, event: Any) -> None:
        pass

    def onQueryTerminated(self, event: Any) -> None:
        pass

    def onQueryProgress(self, event: Any) -> None:
        progress = event.progress
        if progress.name != QUERY_NAME or not progress.sources or progress.numInputRows == 0:
            return
        try:
            positions = offset_positions(progress.sources[0].endOffset)
            lag = lag_behind(
                list(self.settings.kafka_bootstrap_servers), list(topics.ALL_TOPICS), positions
            )
            from discorecs.cassandra import connect

            with connect(self.settings, keyspace=self.settings.cassandra_keyspace) as connection:
                connection.session.execute(
                    connection.prepare(
                        f"UPDATE {tables.STREAM_PROGRESS} SET lag = ? "
                        "WHERE query_name = ? AND batch_id = ?"
                    ),
                    (lag, QUERY_NAME, progress.batchId),
                )
        except Exception as error:  # a listener must never take the query down
            self.say(f"stream batch {progress.batchId}: lag not measured: {error}")
            return
        self.say(
            f"stream batch {progress.batchId}: lag {lag:,} events, "
            f"{progress.processedRowsPerSecond:,.0f} events/s"
        )


def start_stream(
    spark: SparkSession,
    settings: Settings,
    *,
    available_now: bool = False,
    max_events: int | None = None,
    trigger_seconds: float | None = None,
    say: Callable[[str], None] = say_to_stderr,
    reference: Reference | None = None,
) -> Any:
    """Start the query; returns the StreamingQuery (``awaitTermination`` to wait for it)."""
    reference = reference or load_reference(spark, settings)
    raw = read_events(spark, settings, max_events or settings.stream_max_events_per_trigger)
    # The query's id (kept in the checkpoint, the same after a restart) is only known once it
    # has started; micro-batches wait for it.
    identity: dict[str, str] = {}
    known = threading.Event()

    def each_batch(frame: DataFrame, batch_id: int) -> None:
        if not known.wait(120):
            raise StreamError("the streaming query did not report its id")
        process_batch(spark, settings, reference, frame, batch_id, say, identity["id"])

    writer = (
        raw.writeStream.queryName(QUERY_NAME)
        .foreachBatch(each_batch)
        .option("checkpointLocation", paths.join(paths.checkpoints(settings.data_root), QUERY_NAME))
    )
    seconds = trigger_seconds or settings.stream_trigger_seconds
    writer = (
        writer.trigger(availableNow=True)
        if available_now
        else writer.trigger(processingTime=f"{seconds} seconds")
    )
    query = writer.start()
    identity["id"] = str(query.id)
    known.set()
    return query


def run_stream(
    spark: SparkSession,
    settings: Settings,
    *,
    available_now: bool = False,
    max_events: int | None = None,
    trigger_seconds: float | None = None,
    say: Callable[[str], None] = say_to_stderr,
) -> None:
    """Run the stream until it ends (``available_now``) or is stopped, restarting it from its
    checkpoint after a failure (a Cassandra node restarting, a broker away): the failed
    micro-batch is replayed whole, and its writes are idempotent, so nothing is lost or
    doubled. Gives up after ``settings.stream_restarts`` failures in a row without progress.
    """
    reference = load_reference(spark, settings)
    listener = LagReporter(settings, say)
    spark.streams.addListener(listener)
    failures = 0
    try:
        while True:
            query = start_stream(
                spark,
                settings,
                available_now=available_now,
                max_events=max_events,
                trigger_seconds=trigger_seconds,
                say=say,
                reference=reference,
            )
            say(
                f"{STARTED}: {', '.join(topics.ALL_TOPICS)} from "
                f"{','.join(settings.kafka_bootstrap_servers)} (source: {settings.stream_source})"
            )
            try:
                query.awaitTermination()
                return
            except StreamingQueryException as error:
                progressed = bool(query.recentProgress)
                failures = 1 if progressed else failures + 1
                reason = str(error).strip().splitlines()[0][:500]
                if failures > settings.stream_restarts:
                    raise StreamError(
                        f"the stream failed {failures} times in a row without progress; last "
                        f"error: {reason}. Fix the cause and run `discorecs stream` again: it "
                        "resumes from its checkpoint with nothing lost"
                    ) from None
                delay = min(5.0 * failures, 30.0)
                say(
                    f"stream failed: {reason}; restarting from the checkpoint in {delay:.0f} s "
                    f"(attempt {failures} of {settings.stream_restarts})"
                )
                time.sleep(delay)
            except KeyboardInterrupt:
                say("stream stopping (Ctrl-C): the running micro-batch is replayed on restart")
                query.stop()
                raise
    finally:
        spark.streams.removeListener(listener)


def main(argv: list[str] | None = None) -> int:
    """Entry point for ``spark-submit streaming/job.py [--available-now]`` (settings from the
    environment or ``DISCORECS_CONFIG``)."""
    from discorecs.spark import build_spark_session

    settings = load_settings()
    spark = build_spark_session(settings, QUERY_NAME)
    try:
        run_stream(spark, settings, available_now="--available-now" in (argv or []))
    except DiscorecsError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
