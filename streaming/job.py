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
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pyspark import TaskContext
from pyspark.accumulators import AccumulatorParam
from pyspark.errors import AnalysisException, StreamingQueryException
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.streaming import StreamingQueryListener
from pyspark.sql.types import LongType, StringType, StructField, StructType

from discorecs import paths, stack, tables, topics
from discorecs.cassandra import (
    connect,
    execute_grouped,
    read_statements,
    worker_connection,
    write_time_micros,
)
from discorecs.errors import DiscorecsError
from discorecs.events import EventKind
from discorecs.progress import say_to_stderr
from discorecs.python_workers import collector_paused, task_started
from discorecs.settings import Settings, load_settings
from discorecs.spark_schemas import EVENT_LOG_BATCH, EVENT_LOG_PARTITION, EVENT_LOG_SCHEMA
from spark_jobs.tastes import CatalogIndex
from spark_jobs.transforms import catalog_index
from streaming import sink
from streaming.lag import lag_behind, offset_positions
from streaming.live import (
    LiveProfile,
    deciding_events,
    genre_bits_by_release,
    next_profile,
)
from streaming.live_cache import CopyState, LiveCache, entry, profile_of
from streaming.transform import MARKED, marked_batches, valid_rows

QUERY_NAME = tables.STREAM_QUERY
STARTED = "stream started"  # logged once the query runs (the local service waits for it)

LOG_COLUMNS = ("event_id", "user_id", "release_id", "kind", "event_time", "ingested_at")


class StreamError(DiscorecsError):
    """The stream cannot start or keep running; the message says why and what to do."""


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
    catalog = catalog_index(
        spark.read.parquet(catalog_files.uri).select("release_id", "genres", "styles")
    )
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


# A user's live row: the static columns of their partition of tables.RECOMMENDATIONS (one
# set per user; DISTINCT reads them without the partition's rows of runs).
LIVE_SELECT = (
    f"SELECT DISTINCT user_id, profile, holdings, stream_id, batch_id FROM {tables.RECOMMENDATIONS}"
)
LIVE_ROW_CQL = f"{LIVE_SELECT} WHERE user_id = ?"
LIVE_ROWS_CQL = f"{LIVE_SELECT} WHERE user_id IN ?"
COLLECTION_CQL = f"SELECT user_id, release_id FROM {tables.COLLECTIONS} WHERE user_id = ?"
COLLECTIONS_CQL = f"SELECT user_id, release_id FROM {tables.COLLECTIONS} WHERE user_id IN ?"
USERS_PER_READ = 20

BATCH_COUNTS = ("input_rows", "valid_rows", "dead_lettered", "upserts", "live_profiles")
"""What each micro-batch counts (logged, and kept in its ``stream_progress`` row)."""
TASK_SECONDS = ("reading", "marking", "live reads", "live profiles", "writes")
"""Where the tasks' time goes, summed over a micro-batch's tasks (logged): each task waits
for its shuffled records and marks them (:func:`streaming.transform.marked_batches`), then
reads live profiles, computes and writes them, and writes the rest (:func:`apply_partition`)."""
CACHED = "cached users"
"""Users whose live profile came from their task's cache, not Cassandra (logged)."""

LOGGED = StructType(
    [
        *(StructField(f.name, f.dataType) for f in EVENT_LOG_SCHEMA.fields),
        StructField(EVENT_LOG_PARTITION, StringType()),
        StructField(EVENT_LOG_BATCH, LongType()),
    ]
)
"""The apply pass's output: the batch's valid events, as the master dataset keeps them."""


class Tally(AccumulatorParam):
    """A micro-batch's counts and task seconds, added up from its tasks on the executors."""

    def zero(self, value: dict[str, float]) -> dict[str, float]:
        return dict.fromkeys(value, 0)

    def addInPlace(self, total: dict[str, float], more: dict[str, float]) -> dict[str, float]:
        for name, value in more.items():
            total[name] = total.get(name, 0) + value
        return total


def read_users(
    connection: Any, users: list[int], one: str, many: str, *, what: str
) -> Iterator[Any]:
    """Every row of ``users``' partitions: ``one`` asks for one user (``user_id = ?``),
    ``many`` for several (``user_id IN ?``).

    On a cluster whose nodes each hold a share of the data that is one single-partition read
    per user (each goes to the user's own replicas). Where every node holds every partition
    (one node, or as many replicas as nodes), a request asks for ``USERS_PER_READ`` users at
    once: far fewer requests, and a fraction of the CPU on both sides."""
    if connection.one_replica_set:
        statements = [
            (many, (users[start : start + USERS_PER_READ],))
            for start in range(0, len(users), USERS_PER_READ)
        ]
    else:
        statements = [(one, (user,)) for user in users]
    for _, result in read_statements(connection, statements, what=what):
        yield from result


def read_live_rows(connection: Any, users: list[int]) -> dict[int, Any]:
    """The live rows of ``users`` (a user without one is absent: their partition may hold
    only the batch's rows, whose static columns read as null)."""
    rows = read_users(
        connection, users, LIVE_ROW_CQL, LIVE_ROWS_CQL, what="the stream's live profiles"
    )
    return {row.user_id: row for row in rows if row.profile is not None}


def read_collections(connection: Any, users: list[int]) -> dict[int, list[int]]:
    """The releases in each of ``users``' collections (every user is a key)."""
    collections: dict[int, list[int]] = {user: [] for user in users}
    rows = read_users(
        connection, users, COLLECTION_CQL, COLLECTIONS_CQL, what="the stream's collections"
    )
    for row in rows:
        collections[row.user_id].append(row.release_id)
    return collections


def read_starts(
    connection: Any, users: list[int], catalog: CatalogIndex, stream_id: str, batch_id: int
) -> dict[int, LiveProfile]:
    """The live profile each of ``users`` has before the batch, from their live rows, which
    hold their profile, latest changes and the releases they hold as this stream last
    applied them. A user whose live row this stream has not written yet (a new user, or a
    new checkpoint) starts from their whole collection (and the changes the row lists, if
    it has one); a user whose row already carries this batch id is left out (the batch is
    being replayed after a crash and their row already counts it)."""
    live = read_live_rows(connection, users)
    starts: dict[int, LiveProfile] = {}
    fresh: list[int] = []
    for user in users:
        row = live.get(user)
        if row is None or row.stream_id != stream_id:
            fresh.append(user)
        elif row.batch_id < batch_id:
            starts[user] = LiveProfile.of_row(row.profile, row.holdings)
    collections = read_collections(connection, fresh)
    for user in fresh:
        row = live.get(user)
        changes = LiveProfile.of_row(row.profile, None).changes if row is not None else ()
        whole = LiveProfile.of_collection(collections[user], catalog)
        starts[user] = replace(whole, changes=changes)
    return starts


def next_profiles(
    starts: dict[int, LiveProfile],
    decided: dict[int, list[tuple[int, bool]]],
    changes: dict[int, list[tuple]],
    catalog: CatalogIndex,
) -> dict[int, LiveProfile]:
    """The profiles of the users in ``starts`` after their ``decided`` collection events
    (see :func:`streaming.live.deciding_events`) and their ``changes`` (Change tuples)."""
    bits = genre_bits_by_release(
        (release for user in starts for release, _ in decided.get(user, ())), catalog
    )
    return {
        user: next_profile(start, decided.get(user, ()), catalog, changes.get(user, ()), bits)
        for user, start in starts.items()
    }


def live_profile_writes(
    profiles: dict[int, LiveProfile], stream_id: str, batch_id: int, updated_at: datetime
) -> list[tuple[str, tuple]]:
    """The LIVE_PROFILE writes of ``profiles``."""
    updated_ms = write_time_micros(updated_at) // 1000  # a CQL timestamp, converted once
    return [
        (
            sink.LIVE_PROFILE,
            (user, profile.document(), profile.holdings_blob(), stream_id, batch_id, updated_ms),
        )
        for user, profile in profiles.items()
    ]


class HoldingEvent(NamedTuple):
    """A valid collection or wantlist event, as the apply pass uses it."""

    user_id: int
    release_id: int
    kind: str
    event_id: str
    written_at: int  # the event time in microseconds: the Cassandra write timestamp
    event_time: str  # the event time as a Change's text (fixed width: sorts as time does)


HOLDING_KINDS = pa.array(list(sink.HOLDING_WRITES))


def change_times(times: pa.ChunkedArray | pa.Array) -> pa.Array:
    """Event times (UTC) as :func:`streaming.live.change_time` writes them, for a whole
    column at once: Arrow's text of a ``timestamp[us]`` is ``2026-11-25 12:03:00.000000``
    (always six digits of microseconds). A cast, not ``strftime``, which formats each value
    on its own and took ~8 times as long."""
    text = pc.cast(pc.cast(times, pa.timestamp("us")), pa.string())
    return pc.binary_join_element_wise(pc.utf8_replace_slice(text, 10, 11, "T"), "+00:00", "")


def ingest_dates(times: pa.ChunkedArray | pa.Array) -> pa.Array:
    """``YYYY-MM-DD`` of UTC timestamps (a cast to date and then to text: ~15 times as fast
    as ``strftime``)."""
    return pc.cast(pc.cast(times, pa.date32()), pa.string())


def holding_events(marked: pa.Table) -> list[HoldingEvent]:
    """The valid collection and wantlist events of a table of ``MARKED`` rows (a play only
    goes to the master dataset)."""
    valid = valid_rows(marked)
    held = valid.filter(pc.is_in(valid.column("kind"), value_set=HOLDING_KINDS))
    times = held.column("event_time")
    columns = [held.column(name).to_pylist() for name in ("user_id", "release_id", "kind")]
    columns.append(held.column("event_id").to_pylist())
    columns.append(times.cast(pa.int64()).to_pylist())
    columns.append(change_times(times).to_pylist())
    return [HoldingEvent(*values) for values in zip(*columns, strict=True)]


def logged_events(marked: pa.Table, batch_id: int) -> pa.Table:
    """The valid events of a table of ``MARKED`` rows as ``LOGGED`` rows (ingest date from
    the Kafka record's timestamp)."""
    valid = valid_rows(marked).select(list(LOG_COLUMNS))
    return valid.append_column(
        EVENT_LOG_PARTITION, ingest_dates(valid.column("ingested_at"))
    ).append_column(EVENT_LOG_BATCH, pa.array([batch_id] * valid.num_rows, pa.int64()))


def apply_partition(
    settings: Settings,
    catalog: CatalogIndex,
    marked: pa.Table,
    stream_id: str,
    batch_id: int,
    received_at: datetime,
    cache: LiveCache | None = None,
) -> dict[str, float]:
    """Apply one partition of a micro-batch's ``MARKED`` rows (every row of a user is in it)
    to Cassandra: each touched user's live row (the real-time view: genre profile and latest
    changes), then collections / wantlists and dead letters. Returns the partition's counts
    and task seconds.

    The live profiles start from the partition's ``cache`` where it can be trusted (see
    :mod:`streaming.live_cache`), else from the users' live rows. They are written before
    the collection writes, because they are computed against the holdings as they stood
    before the batch: after a crash between the two, the replayed batch finds those
    profiles marked with its id (in the cache or the rows), skips them and rewrites the
    (idempotent) collection writes. The cache is saved last, once everything is written."""
    clock = time.monotonic()
    events = holding_events(marked)
    changes: dict[int, list[tuple]] = defaultdict(list)
    holding_writes: dict[int, list[tuple[str, tuple]]] = defaultdict(list)
    for event in events:
        user = event.user_id
        changes[user].append((event.event_time, event.event_id, event.kind, event.release_id))
        holding_writes[user].append(
            sink.holding_write(event.kind, user, event.release_id, event.written_at)
        )
    decided = deciding_events(
        events, EventKind.COLLECTION_ADD.value, EventKind.COLLECTION_REMOVE.value
    )
    connection = worker_connection(settings)
    state, kept = cache.load(batch_id) if cache is not None else (CopyState.COLD, {})
    profiles: dict[int, LiveProfile] = {}
    cached = 0
    if state is not CopyState.APPLIED:
        starts = {user: profile_of(kept[user]) for user in changes if user in kept}
        cached = len(starts)
        unknown = sorted(user for user in changes if user not in starts)
        starts.update(read_starts(connection, unknown, catalog, stream_id, batch_id))
        read_at = time.monotonic()
        profiles = next_profiles(starts, decided, changes, catalog)
        execute_grouped(
            connection,
            [[w] for w in live_profile_writes(profiles, stream_id, batch_id, received_at)],
            what="the stream's live profiles",
            batch_size=settings.cassandra_batch_rows,
        )
    else:
        read_at = time.monotonic()
    profiled_at = time.monotonic()
    invalid = marked.filter(pc.is_valid(marked.column("reason")))
    day = received_at.strftime("%Y-%m-%d")
    dead_letters = [sink.dead_letter(row, day, received_at) for row in invalid.to_pylist()]
    execute_grouped(  # a user's writes together, and the day's dead letters (one partition)
        connection,
        [*holding_writes.values(), dead_letters],
        what="the stream's tables",
        batch_size=settings.cassandra_batch_rows,
    )
    if cache is not None:
        cache.save(batch_id, kept | {user: entry(batch_id, p) for user, p in profiles.items()})
    return {
        "input_rows": marked.num_rows,
        "valid_rows": marked.num_rows - invalid.num_rows,
        "dead_lettered": invalid.num_rows,
        "upserts": len(events),
        "live_profiles": len(changes),
        CACHED: cached,
        "live reads": read_at - clock,
        "live profiles": profiled_at - read_at,
        "writes": time.monotonic() - profiled_at,
    }


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
    one per output: on two shared cores, a second Python pass and a shuffle of the marked
    rows cost a 26,000-event batch ~0.3 s. ``stream_id``
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


class StreamProgress:
    """The stream's ``stream_progress`` rows, written from the driver over one connection
    kept for the life of the stream (opened on first use): a connection per micro-batch
    would put a cluster handshake and schema read on every batch's path.

    Once closed it stays closed: Spark delivers the last progress events to the listener
    on its own thread, possibly after the stream has ended, and a write then must not open
    a connection that nobody closes (its reconnection threads would outlive the stream)."""

    INSERT = (
        f"INSERT INTO {tables.STREAM_PROGRESS} (query_name, batch_id, processed_at, "
        "input_rows, valid_rows, dead_lettered, upserts, duration_ms) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
    )
    SET_LAG = f"UPDATE {tables.STREAM_PROGRESS} SET lag = ? WHERE query_name = ? AND batch_id = ?"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._connection: Any = None
        self._closed = False
        self._lock = threading.Lock()  # the listener writes from another thread

    def _execute(self, cql: str, parameters: tuple) -> None:
        with self._lock:
            if self._closed:
                raise StreamError("the stream has stopped; its progress rows are closed")
            if self._connection is None or self._connection.cluster.is_shutdown:
                self._connection = connect(
                    self.settings, keyspace=self.settings.cassandra_keyspace, schema_metadata=False
                )
            connection = self._connection
        connection.session.execute(connection.prepare(cql), parameters)

    def record(self, batch_id: int, counts: dict[str, int], duration_ms: int) -> None:
        """The batch's row (its lag is added by :class:`LagReporter`)."""
        self._execute(
            self.INSERT,
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

    def record_lag(self, batch_id: int, lag: int) -> None:
        self._execute(self.SET_LAG, (lag, QUERY_NAME, batch_id))

    def close(self) -> None:
        with self._lock:
            self._closed = True
            if self._connection is not None:
                self._connection.close()
                self._connection = None


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
                f"{STARTED}: {', '.join(topics.ALL_TOPICS)} from "
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
