"""The speed layer: ``discorecs stream`` locally, ``spark-submit streaming/job.py`` on a cluster.

    Kafka (collection_events, activity_events) -> validate (streaming.transform)
      -> dead letters, collections / wantlists (upsert or delete), latest changes, live genre
         profiles of the touched users, progress (Cassandra); event log (master dataset)

Every write of a micro-batch is idempotent, so the batch Spark replays after a crash changes
nothing: dead letters are keyed by (topic, partition, offset), the event log folder of a batch
is overwritten as a whole, collections / wantlists are set to the batch's last event per
(user, release) (the event time is the write timestamp), changes are keyed by event id, and
a live profile carries the id of the batch that last updated it, so a replay skips it.

Each micro-batch logs its counts and duration; a progress listener then adds the lag (events
on the broker beyond the batch's end offsets) to the batch's ``stream_progress`` row, which
``discorecs status`` and the site's health panel show.
"""

from __future__ import annotations

import sys
import threading
import time
from collections import defaultdict, namedtuple
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pyarrow as pa
from pyspark.errors import AnalysisException, StreamingQueryException
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.streaming import StreamingQueryListener

from discorecs import paths, tables, topics
from discorecs.cassandra import (
    connect,
    execute_grouped,
    read_statements,
    worker_connection,
)
from discorecs.errors import DiscorecsError
from discorecs.events import EventKind
from discorecs.progress import say_to_stderr
from discorecs.settings import Settings, load_settings
from discorecs.spark_schemas import EVENT_LOG_BATCH, EVENT_LOG_PARTITION
from spark_jobs.tastes import CatalogIndex
from spark_jobs.transforms import catalog_index, flag_deciding
from streaming import sink
from streaming.kafka_source import NAME, KafkaSource, lag_behind, offset_positions
from streaming.live import LiveProfile, next_profile
from streaming.transform import mark, valid_events

QUERY_NAME = tables.STREAM_QUERY
STARTED = "stream started"  # logged once the query runs (the local service waits for it)
KAFKA_PACKAGE = "org.apache.spark:spark-sql-kafka-0-10_2.13"

LOG_COLUMNS = ("event_id", "user_id", "release_id", "kind", "event_time", "ingested_at")


class StreamError(DiscorecsError):
    """The stream cannot start or keep running; the message says why and what to do."""


@dataclass(frozen=True)
class Reference:
    """What every micro-batch checks events against and scores users with (read once)."""

    users: Any  # Broadcast[np.ndarray]: the known user ids, sorted
    catalog: Any  # Broadcast[CatalogIndex]: the known releases and their genres as arrays


def load_reference(spark: SparkSession, settings: Settings) -> Reference:
    from discorecs.storage import local_path, require_published

    root = settings.data_root
    if "://" not in root or root.startswith("file://"):  # remote roots: Spark's error will do
        for dataset, what, how in (
            (paths.CATALOG_RELEASES, "published catalog", "run `discorecs ingest-dump` first"),
            (paths.USERS, "generated users", "run `discorecs generate-users` first"),
        ):
            require_published(local_path(root, dataset), what, how)
    users = spark.read.parquet(paths.join(root, paths.USER_PROFILES)).select("user_id").toArrow()
    user_ids = np.sort(users.column("user_id").to_numpy().astype(np.int64))
    catalog = catalog_index(spark.read.parquet(paths.catalog_releases(root)))
    return Reference(spark.sparkContext.broadcast(user_ids), spark.sparkContext.broadcast(catalog))


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
            .option("readTasks", str(spark.sparkContext.defaultParallelism))
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


WRITE_ROW = namedtuple("WRITE_ROW", [*sink.WRITE_COLUMNS, "decides"])
LIVE_COLUMNS = "user_id, profile, holdings, stream_id, batch_id"
LIVE_ROW_CQL = f"SELECT {LIVE_COLUMNS} FROM {tables.USER_LIVE_PROFILES} WHERE user_id = ?"
LIVE_ROWS_CQL = f"SELECT {LIVE_COLUMNS} FROM {tables.USER_LIVE_PROFILES} WHERE user_id IN ?"
COLLECTION_CQL = f"SELECT user_id, release_id FROM {tables.COLLECTIONS} WHERE user_id = ?"
COLLECTIONS_CQL = f"SELECT user_id, release_id FROM {tables.COLLECTIONS} WHERE user_id IN ?"
USERS_PER_READ = 20
APPLIED = pa.schema([("live_profiles", pa.int64())])  # per partition: users rescored
APPLIED_DDL = "live_profiles long"


def read_users(
    connection: Any, users: list[int], one: str, many: str, *, what: str
) -> Iterator[Any]:
    """Every row of ``users``' partitions: ``one`` asks for one user (``user_id = ?``),
    ``many`` for several (``user_id IN ?``).

    On a real cluster that is one single-partition read per user (each goes to the user's
    own replicas). On a single node every partition is local, so a request asks for
    ``USERS_PER_READ`` users at once: far fewer requests, and a fraction of the CPU on both
    sides."""
    if connection.single_node:
        statements = [
            (many, (users[start : start + USERS_PER_READ],))
            for start in range(0, len(users), USERS_PER_READ)
        ]
    else:
        statements = [(one, (user,)) for user in users]
    for _, result in read_statements(connection, statements, what=what):
        yield from result


def read_live_rows(connection: Any, users: list[int]) -> dict[int, Any]:
    """The live rows of ``users`` (a user without one is absent)."""
    rows = read_users(
        connection, users, LIVE_ROW_CQL, LIVE_ROWS_CQL, what="the stream's live profiles"
    )
    return {row.user_id: row for row in rows}


def read_collections(connection: Any, users: list[int]) -> dict[int, list[int]]:
    """The releases in each of ``users``' collections (every user is a key)."""
    collections: dict[int, list[int]] = {user: [] for user in users}
    rows = read_users(
        connection, users, COLLECTION_CQL, COLLECTIONS_CQL, what="the stream's collections"
    )
    for row in rows:
        collections[row.user_id].append(row.release_id)
    return collections


def live_profile_writes(
    connection: Any,
    rows: list,
    catalog: CatalogIndex,
    stream_id: str,
    batch_id: int,
    updated_at: datetime,
) -> tuple[int, list[tuple[str, tuple]]]:
    """The live-profile rows of the users whose collections ``rows`` (``WRITE_ROW``s)
    change: (how many users that is, their LIVE_PROFILE writes).

    Reads each such user's live row, which holds their profile and the releases they hold as
    this stream last applied them (read before the batch's own writes). A user whose live
    row this stream has not written yet (a new user, or a new checkpoint) starts from their
    whole collection; a user whose row already carries this batch id is skipped (the batch
    is being replayed after a crash and their profile already counts it)."""
    add = EventKind.COLLECTION_ADD.value
    decided: dict[int, list[tuple[int, bool]]] = defaultdict(list)
    for row in rows:
        if row.decides:
            decided[row.user_id].append((row.release_id, row.kind == add))
    if not decided:
        return 0, []
    live = read_live_rows(connection, sorted(decided))
    starts: dict[int, LiveProfile] = {}
    fresh: list[int] = []
    for user in decided:
        row = live.get(user)
        if row is None or row.stream_id != stream_id:
            fresh.append(user)
        elif row.batch_id < batch_id:
            starts[user] = LiveProfile.of_row(row.profile, row.holdings)
    collections = read_collections(connection, sorted(fresh))
    for user in fresh:
        starts[user] = LiveProfile.of_collection(collections[user], catalog)
    writes = []
    for user, start in starts.items():
        profile = next_profile(start, decided[user], catalog)
        writes.append(
            (
                sink.LIVE_PROFILE,
                (
                    user,
                    profile.document(),
                    profile.holdings_blob(),
                    stream_id,
                    batch_id,
                    updated_at,
                ),
            )
        )
    return len(decided), writes


def apply_batch(
    settings: Settings,
    reference: Reference,
    marked: DataFrame,
    stream_id: str,
    batch_id: int,
    received_at: datetime,
) -> int:
    """Everything the micro-batch changes in Cassandra, in one pass on the executors over its
    rows partitioned by user: each touched user's live profile (the real-time view), then
    collections / wantlists, changes and dead letters. Returns how many users' live profiles
    are current after the batch.

    Per partition, the live profiles are written before the collection writes, because they
    are computed against the collections as they stood before the batch: after a crash
    between the two, the replayed batch finds those profiles marked with its id, skips them
    and rewrites the (idempotent) collection writes."""
    add, remove = EventKind.COLLECTION_ADD.value, EventKind.COLLECTION_REMOVE.value
    rows = marked.filter(
        F.col("reason").isNotNull() | F.col("kind").isin(*sink.HOLDING_WRITES)
    ).select(*sink.WRITE_COLUMNS)
    spark = marked.sparkSession
    by_user = rows.repartition(max(2, spark.sparkContext.defaultParallelism), "user_id")
    flagged = flag_deciding(by_user, add, remove, F.col("reason").isNull())
    catalog = reference.catalog
    day = received_at.strftime("%Y-%m-%d")

    def apply(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        rows = [WRITE_ROW(**row) for batch in batches for row in batch.to_pylist()]
        connection = worker_connection(settings)
        touched, profiles = live_profile_writes(
            connection, rows, catalog.value, stream_id, batch_id, received_at
        )
        execute_grouped(connection, [[w] for w in profiles], what=tables.USER_LIVE_PROFILES)
        groups: dict[Any, list] = defaultdict(list)
        for row in rows:
            groups[sink.write_group(row)].extend(sink.writes_for(row, day, received_at))
        execute_grouped(
            connection,
            groups.values(),
            what="the stream's tables",
            batch_size=settings.cassandra_batch_rows,
        )
        yield pa.RecordBatch.from_pylist([{"live_profiles": touched}], schema=APPLIED)

    applied = flagged.mapInArrow(apply, APPLIED_DDL).agg(F.sum("live_profiles")).first()
    return int(applied[0] or 0)


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

    Four Spark jobs whatever the batch size: validate (read once, kept), count, append to
    the master dataset, and one pass that updates the touched users' live profiles and
    writes everything else to Cassandra (:func:`apply_batch`). ``stream_id`` (the query's
    id, kept in its checkpoint) and ``batch_id`` mark the live profiles, so a replayed batch
    updates them once."""
    started = time.monotonic()
    steps: dict[str, float] = {}

    def lap(step: str) -> None:  # seconds since the previous step ended
        steps[step] = time.monotonic() - started - sum(steps.values())

    marked = (
        mark(raw, reference.users, reference.catalog)
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

    # The real-time view, collections / wantlists, changes and dead letters: one pass.
    if counts["upserts"] or counts["dead_lettered"]:
        counts["live_profiles"] = apply_batch(
            settings, reference, marked, stream_id, batch_id, datetime.now(UTC)
        )

    lap("apply")
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
        durations = progress.durationMs or {}
        trigger_ms = durations.get("triggerExecution", 0)
        self.say(
            f"stream batch {progress.batchId}: lag {lag:,} events, "
            f"{progress.processedRowsPerSecond:,.0f} events/s; trigger {trigger_ms:,} ms, "
            f"{trigger_ms - durations.get('addBatch', 0):,} ms of it outside the batch "
            f"(planning {durations.get('latestOffset', 0):,} ms)"
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
