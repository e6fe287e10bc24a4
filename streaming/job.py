"""The speed layer: ``discorecs stream`` locally, ``spark-submit streaming/job.py`` on a cluster.

    Kafka (collection_events, activity_events) -> mark: parse and validate (streaming.transform)
      -> apply, per task: live rows of the touched users (genre profile, latest changes),
         collections / wantlists (upsert or delete), dead letters (Cassandra)
      -> valid events to the event log (master dataset); progress (Cassandra)

Spark's Kafka connector reads the records; they are shuffled by their Kafka key (events are
keyed by user id) in the JVM, and each task of the one Python pass then marks and applies
every event of its users (see :func:`process_batch`).

Every write of a micro-batch is idempotent, so the batch Spark replays after a crash changes
nothing: dead letters are keyed by (topic, partition, offset), the event log folder of a batch
is overwritten as a whole, collections / wantlists are set to the batch's last event per
(user, release) (the event time is the write timestamp), and a live row carries the id of
the batch that last updated it, so a replay skips it.

Each micro-batch logs its counts and duration; a progress listener then adds the lag (events
on the broker beyond the batch's end offsets) to the batch's ``stream_progress`` row, which
``discorecs status`` and the site's health panel show.
"""

from __future__ import annotations

import re
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pyarrow as pa
from pyspark import TaskContext
from pyspark.errors import AnalysisException, StreamingQueryException
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.streaming import StreamingQueryListener

from discorecs import paths, stack, topics
from discorecs.catalog.index import catalog_index
from discorecs.errors import DiscorecsError
from discorecs.progress import STREAM_STARTED, say_to_stderr
from discorecs.python_workers import collector_paused, task_started
from discorecs.settings import Settings, load_settings
from discorecs.spark_schemas import EVENT_LOG_BATCH, EVENT_LOG_PARTITION
from streaming import StreamError
from streaming.apply import (
    BATCH_COUNTS,
    CACHED,
    LOGGED,
    TASK_SECONDS,
    Tally,
    apply_partition,
    logged_events,
)
from streaming.lag import lag_behind, offset_positions
from streaming.live_cache import LiveCache
from streaming.store import QUERY_NAME, StreamProgress
from streaming.transform import MARKED, marked_batches


@dataclass(frozen=True)
class Reference:
    """What every micro-batch checks events against and scores users with (read once)."""

    users: Any  # Broadcast[np.ndarray]: the known user ids, sorted
    catalog: Any  # Broadcast[CatalogIndex]: the known releases and their genres as arrays


def load_reference(spark: SparkSession, settings: Settings) -> Reference:
    from discorecs.catalog.ingest import current_catalog
    from discorecs.users.population import current_users

    catalog_files, users_files = current_catalog(settings), current_users(settings)
    users = spark.read.parquet(users_files.join(paths.USER_PROFILES).uri).select("user_id")
    user_ids = np.sort(users.toArrow().column("user_id").to_numpy().astype(np.int64))
    # Genres and styles only: the live profile has no use for the affinity groups.
    catalog = catalog_index(spark.read.parquet(catalog_files.uri), affinities=False)
    return Reference(spark.sparkContext.broadcast(user_ids), spark.sparkContext.broadcast(catalog))


def read_events(spark: SparkSession, settings: Settings, max_events: int) -> DataFrame:
    """The raw Kafka rows (topic, kafka_partition, kafka_offset, key, value, timestamp) of
    every event topic, from Spark's Kafka connector: at most ``max_events`` a micro-batch,
    from the earliest offsets on a new checkpoint, failing (not skipping) if offsets the
    checkpoint still needs were deleted from the broker."""
    try:
        raw = (
            spark.readStream.format("kafka")
            .option("kafka.bootstrap.servers", ",".join(settings.kafka_bootstrap_servers))
            .option("subscribe", ",".join(topics.ALL_TOPICS))
            .option("startingOffsets", "earliest")
            .option("maxOffsetsPerTrigger", str(max_events))
            .option("failOnDataLoss", "true")
            .load()
        )
    except AnalysisException as error:
        raise StreamError(
            f"the stream needs Spark's Kafka connector ({error.getErrorClass()}): sessions "
            "built by discorecs get it; with spark-submit pass --packages "
            f"{stack.SPARK_KAFKA_CONNECTOR}"
        ) from None
    return raw.select(
        "topic",
        F.col("partition").alias("kafka_partition"),
        F.col("offset").alias("kafka_offset"),
        "key",
        "value",
        "timestamp",
    )


def by_user(raw: DataFrame, tasks: int) -> DataFrame:
    """``raw`` Kafka rows shuffled by their key, the user id, into ``tasks`` partitions: each
    user's events in one partition, the same one for every batch of the same ``tasks``."""
    return raw.repartition(tasks, "key")


def process_batch(
    spark: SparkSession,
    settings: Settings,
    reference: Reference,
    raw: DataFrame,
    batch_id: int,
    say: Callable[[str], None],
    stream_id: str = "adhoc",
    progress: StreamProgress | None = None,
) -> dict[str, int]:
    """Apply one micro-batch; returns its counts (also written to ``stream_progress``, over
    ``progress``'s connection if given, else over one of its own).

    One Spark job whatever the batch size: the raw rows are shuffled by user in the JVM
    (:func:`by_user`), then each task marks its rows (parsed and validated,
    :func:`streaming.transform.mark_records`) and applies them to Cassandra
    (:func:`apply_partition`) in one Python pass, the valid events going on to the master
    dataset (one folder per ingest date and batch, overwritten on replay). Fixed costs per
    micro-batch are what bound the stream's latency, hence one job and one Python pass, not
    one per output (each more would add a pass over the rows and a shuffle). ``stream_id``
    (the query's id, kept in its checkpoint) and ``batch_id`` mark the live profiles, so a
    replayed batch updates them once."""
    started = time.monotonic()
    received_at = datetime.now(UTC)
    tally = spark.sparkContext.accumulator(
        dict.fromkeys((*BATCH_COUNTS, CACHED, *TASK_SECONDS), 0), Tally()
    )
    users, catalog = reference.users, reference.catalog

    # Every event of a user in one task, the same task batch after batch (its live cache
    # relies on that): the raw records are shuffled by their Kafka key, the user id, in the
    # JVM, before any Python sees them; an event whose key is not its user id is
    # dead-lettered when marked.
    tasks = max(2, spark.sparkContext.defaultParallelism)
    max_ahead = timedelta(seconds=settings.stream_max_seconds_ahead)

    def mark_and_apply(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        task_started()
        seconds: dict[str, float] = {}
        marked = pa.Table.from_batches(
            list(
                marked_batches(batches, users.value, catalog.value.release_ids, seconds, max_ahead)
            ),
            schema=MARKED,
        )
        tally.add(seconds)
        cache = LiveCache.for_task(stream_id, tasks, TaskContext.get().partitionId())
        with collector_paused():
            counts = apply_partition(
                settings, catalog.value, marked, stream_id, batch_id, received_at, cache
            )
        tally.add(counts)
        yield from logged_events(marked, batch_id).to_batches()

    applied = by_user(raw, tasks).mapInArrow(mark_and_apply, LOGGED)
    applied.write.mode("overwrite").partitionBy(EVENT_LOG_PARTITION, EVENT_LOG_BATCH).parquet(
        paths.event_log(settings.data_root)
    )

    totals = tally.value
    counts = {name: int(totals[name]) for name in BATCH_COUNTS}
    duration_ms = int((time.monotonic() - started) * 1000)
    if progress is not None:
        progress.record(batch_id, counts, duration_ms)
    else:
        own = StreamProgress(settings)
        try:
            own.record(batch_id, counts, duration_ms)
        finally:
            own.close()
    say(
        f"stream batch {batch_id}: {counts['input_rows']:,} in, {counts['valid_rows']:,} valid, "
        f"{counts['dead_lettered']:,} dead-lettered, {counts['upserts']:,} upserts, "
        f"{counts['live_profiles']:,} live profiles ({int(totals[CACHED]):,} from the cache), "
        f"{duration_ms:,} ms (task seconds: "
        + ", ".join(f"{name} {totals[name]:.1f}" for name in TASK_SECONDS)
        + ")"
    )
    return counts


class LagReporter(StreamingQueryListener):
    """After each micro-batch: how many events the broker holds beyond the batch's end
    offsets; logged and written to the batch's ``stream_progress`` row."""

    def __init__(
        self, settings: Settings, progress: StreamProgress, say: Callable[[str], None]
    ) -> None:
        self.settings = settings
        self.progress = progress
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
            self.progress.record_lag(progress.batchId, lag)
        except Exception as error:  # a listener must never take the query down
            self.say(f"stream batch {progress.batchId}: lag not measured: {error}")
            return
        durations = dict(progress.durationMs or {})
        trigger_ms = durations.pop("triggerExecution", 0)
        outside = ", ".join(
            f"{step} {ms:,}" for step, ms in durations.items() if step != "addBatch" and ms
        )
        self.say(
            f"stream batch {progress.batchId}: lag {lag:,} events, "
            f"{progress.processedRowsPerSecond:,.0f} events/s; trigger {trigger_ms:,} ms, "
            f"{trigger_ms - durations.get('addBatch', 0):,} ms of it outside the batch "
            f"({outside or 'nothing measured'} ms)"
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
    progress: StreamProgress | None = None,
) -> Any:
    """Start the query; returns the StreamingQuery (``awaitTermination`` to wait for it).
    ``progress``: where micro-batches record their progress (the caller closes it); by
    default each opens a connection of its own."""
    reference = reference or load_reference(spark, settings)
    raw = read_events(spark, settings, max_events or settings.stream_max_events_per_trigger)
    # The query's id (kept in the checkpoint, the same after a restart) is only known once it
    # has started; micro-batches wait for it.
    identity: dict[str, str] = {}
    known = threading.Event()

    def each_batch(frame: DataFrame, batch_id: int) -> None:
        if not known.wait(120):
            raise StreamError("the streaming query did not report its id")
        process_batch(spark, settings, reference, frame, batch_id, say, identity["id"], progress)

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


RAISED = re.compile(r"^(?:Caused by: )?([A-Za-z_][\w.]*(?:Error|Exception|Timeout)\w*): (.+)$")
JVM_PACKAGES = ("org.", "java.", "javax.", "scala.", "py4j.")


def failure_reason(text: str) -> str:
    """A failed query's error in one line: its first line, and the exception that caused it
    (a micro-batch's error comes back as the JVM's error wrapping the Python traceback of
    the task that failed, whose first line says only "Traceback ...")."""
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    if not lines:
        return "no reason given"
    raised = [m for m in map(RAISED.match, lines) if m and not m.group(2).startswith("Traceback")]
    ours = [m for m in raised if not m.group(1).startswith(JVM_PACKAGES)]
    cause = (ours or raised or [None])[-1]
    first = lines[0][:300]
    if cause is None or cause.string == lines[0]:
        return first
    return f"{first} ... {cause.group(1)}: {cause.group(2)[:500]}"


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
    progress = StreamProgress(settings)
    listener = LagReporter(settings, progress, say)
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
                progress=progress,
            )
            say(
                f"{STREAM_STARTED}: {', '.join(topics.ALL_TOPICS)} from "
                f"{','.join(settings.kafka_bootstrap_servers)}"
            )
            try:
                query.awaitTermination()
                return
            except StreamingQueryException as error:
                progressed = bool(query.recentProgress)
                failures = 1 if progressed else failures + 1
                reason = failure_reason(str(error))
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
        progress.close()


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
