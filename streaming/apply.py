"""The apply pass: what each task of a micro-batch does with its users' marked events.

Per task (every event of a user is in one task): the touched users' live profiles (from the
task's cache or their live rows, then the batch's collection events), written first; then
the collection / wantlist writes and dead letters; then the valid events go on to the event
log. See :func:`apply_partition` for why in that order.
"""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import replace
from datetime import datetime
from typing import Any, NamedTuple

import pyarrow as pa
import pyarrow.compute as pc
from pyspark.accumulators import AccumulatorParam
from pyspark.sql.types import LongType, StringType, StructField, StructType

from discorecs.cassandra import worker_connection
from discorecs.catalog.index import CatalogIndex
from discorecs.events import COLLECTION
from discorecs.settings import Settings
from discorecs.spark_schemas import EVENT_LOG_BATCH, EVENT_LOG_PARTITION, EVENT_LOG_SCHEMA
from discorecs.statements import execute_grouped, write_time_micros
from streaming import store
from streaming.live import (
    LiveProfile,
    deciding_events,
    genre_bits_by_release,
    next_profile,
)
from streaming.live_cache import CopyState, LiveCache, entry, profile_of
from streaming.transform import valid_rows

LOG_COLUMNS = ("event_id", "user_id", "release_id", "kind", "event_time", "ingested_at")

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


def read_starts(
    connection: Any, users: list[int], catalog: CatalogIndex, stream_id: str, batch_id: int
) -> dict[int, LiveProfile]:
    """The live profile each of ``users`` has before the batch, from their live rows, which
    hold their profile, latest changes and the releases they hold as this stream last
    applied them. A user whose live row this stream has not written yet (a new user, or a
    new checkpoint) starts from their whole collection (and the changes the row lists, if
    it has one); a user whose row already carries this batch id is left out (the batch is
    being replayed after a crash and their row already counts it)."""
    live = store.read_live_rows(connection, users)
    starts: dict[int, LiveProfile] = {}
    fresh: list[int] = []
    for user in users:
        row = live.get(user)
        if row is None or row.stream_id != stream_id:
            fresh.append(user)
        elif row.batch_id < batch_id:
            starts[user] = LiveProfile.of_row(row.profile, row.holdings)
    collections = store.read_collections(connection, fresh)
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
            store.LIVE_PROFILE,
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


HOLDING_KINDS = pa.array(list(store.HOLDING_WRITES))


def change_times(times: pa.ChunkedArray | pa.Array) -> pa.Array:
    """Event times (UTC) as :func:`streaming.live.change_time` writes them, for a whole
    column at once: Arrow's text of a ``timestamp[us]`` is ``2026-11-25 12:03:00.000000``
    (always six digits of microseconds). A cast of the whole column, not ``strftime``, which
    formats each value on its own."""
    text = pc.cast(pc.cast(times, pa.timestamp("us")), pa.string())
    return pc.binary_join_element_wise(pc.utf8_replace_slice(text, 10, 11, "T"), "+00:00", "")


def ingest_dates(times: pa.ChunkedArray | pa.Array) -> pa.Array:
    """``YYYY-MM-DD`` of UTC timestamps (a cast to date and then to text, a column at a time)."""
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
    changes, holding_writes = changes_and_writes(events)
    connection = worker_connection(settings)
    state, kept = cache.load(batch_id) if cache is not None else (CopyState.COLD, {})
    profiles: dict[int, LiveProfile] = {}
    cached = 0
    read_at = time.monotonic()
    if state is not CopyState.APPLIED:
        starts = {user: profile_of(kept[user]) for user in changes if user in kept}
        cached = len(starts)
        unknown = sorted(user for user in changes if user not in starts)
        starts.update(read_starts(connection, unknown, catalog, stream_id, batch_id))
        read_at = time.monotonic()
        decided = deciding_events(events, COLLECTION.add.value, COLLECTION.remove.value)
        profiles = next_profiles(starts, decided, changes, catalog)
        writes = live_profile_writes(profiles, stream_id, batch_id, received_at)
        execute_grouped(
            connection,
            [[write] for write in writes],
            what="the stream's live profiles",
            batch_size=settings.cassandra_batch_rows,
        )
    profiled_at = time.monotonic()
    invalid = marked.filter(pc.is_valid(marked.column("reason")))
    execute_grouped(  # a user's writes together, and the day's dead letters (one partition)
        connection,
        [*holding_writes.values(), dead_letters(invalid, received_at)],
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


def changes_and_writes(
    events: list[HoldingEvent],
) -> tuple[dict[int, list[tuple]], dict[int, list[tuple[str, tuple]]]]:
    """Per user: their events as live changes (Change tuples), and their collection and
    wantlist writes (:func:`streaming.store.holding_write`), in event order."""
    changes: dict[int, list[tuple]] = defaultdict(list)
    writes: dict[int, list[tuple[str, tuple]]] = defaultdict(list)
    for event in events:
        user = event.user_id
        changes[user].append((event.event_time, event.event_id, event.kind, event.release_id))
        writes[user].append(
            store.holding_write(event.kind, user, event.release_id, event.written_at)
        )
    return changes, writes


def dead_letters(invalid: pa.Table, received_at: datetime) -> list[tuple[str, tuple]]:
    """The dead-letter writes of a partition's invalid rows (all in the day's partition)."""
    day = received_at.strftime("%Y-%m-%d")
    return [store.dead_letter(row, day, received_at) for row in invalid.to_pylist()]
