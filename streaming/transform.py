"""The stream's pure core: raw Kafka records in, marked events out.

:func:`mark_records` works on one Arrow batch with numpy and the event contract's own
validator (``discorecs.events.parse_event_fields``), so the producers, the stream and the tests
agree by construction, and it is tested without Spark. The stream runs it on every batch of
raw Kafka rows in its Python pass (:func:`marked_batches`), which also checks every id
against the known users and releases (sorted arrays broadcast once, a binary search per
batch instead of a join).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pyspark.sql.pandas.types import from_arrow_schema

from discorecs.events import TOPIC_OF_KIND, InvalidEvent, parse_event_fields
from discorecs.flatlists import contains
from discorecs.settings import Settings

MARKED = pa.schema(
    [
        ("topic", pa.string()),
        ("kafka_partition", pa.int32()),
        ("kafka_offset", pa.int64()),
        ("payload", pa.binary()),  # the record's value as received, kept for dead letters only
        ("reason", pa.string()),  # why the event is dead-lettered; null for a valid event
        ("event_id", pa.string()),
        ("user_id", pa.int64()),
        ("release_id", pa.int64()),
        ("kind", pa.string()),
        ("event_time", pa.timestamp("us", tz="UTC")),
        # The Kafka record's timestamp: fixed for a record, so a replay yields the same rows.
        ("ingested_at", pa.timestamp("us", tz="UTC")),
    ]
)
"""A marked event: every raw Kafka row becomes one, valid or not."""

MARKED_SPARK = from_arrow_schema(MARKED)

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MAX_AHEAD = timedelta(seconds=Settings.stream_max_seconds_ahead)
"""How far after its Kafka record's timestamp an event may be dated (the setting's default):
producers' clocks drift a little, never by years."""

FIRST_MOMENT = (datetime(1, 1, 1, tzinfo=UTC) - EPOCH) // timedelta(microseconds=1)
LAST_MOMENT = (datetime.max.replace(tzinfo=UTC) - EPOCH) // timedelta(microseconds=1)
"""The first and last microsecond (since 1970) a record's timestamp may hold: years 1-9999,
what Python's datetime (and so the event log's ingest date) can hold."""


def mark_records(
    records: pa.RecordBatch,
    users: np.ndarray,
    release_ids: np.ndarray,
    max_ahead: timedelta = MAX_AHEAD,
) -> pa.RecordBatch:
    """Every raw Kafka record (topic, kafka_partition, kafka_offset, key, value, timestamp)
    as a ``MARKED`` row: parsed, with ``reason`` null for a valid event. Never raises for
    what a record holds: whatever reading one record raises, that record is dead-lettered
    with the reason and the others go on (a record that stopped the batch would stop the
    stream for good, every retry replaying it).

    ``users`` and ``release_ids``: the known user and release ids, sorted int64 arrays. An
    event the contract rejects, or that names a user or release not among them, keeps its
    payload and gets the reason it is dead-lettered, as does:

    - an event of a kind that belongs on another topic (``events.TOPIC_OF_KIND``);
    - an event dated more than ``max_ahead`` after its Kafka record's timestamp (its time is
      its Cassandra write timestamp: an add dated years ahead would shadow every later
      remove of that record until then). Old events are applied however old: an old add or
      remove loses to every later event of the same record;
    - an event whose Kafka key is not its user id (the contract: the stream sends each
      record to the task its key names, and applies a user's events in one task)."""
    try:
        return _marked(records, users, release_ids, max_ahead)
    except Exception:
        if records.num_rows <= 1:
            raise
    # Something in the batch defeated the checks: mark each record on its own, so only the
    # record that raises is dead-lettered (with what it raised) and the others go on.
    rows = []
    for row in range(records.num_rows):
        record = records.slice(row, 1)
        try:
            rows.append(_marked(record, users, release_ids, max_ahead))
        except Exception as error:
            rows.append(_unreadable(record, error))
    return pa.Table.from_batches(rows, schema=MARKED).combine_chunks().to_batches()[0]


def _unreadable(record: pa.RecordBatch, error: Exception) -> pa.RecordBatch:
    """The dead letter of one raw ``record`` whose marking raised ``error``."""
    reason = f"unreadable event ({type(error).__name__}: {_printable(str(error))})"
    return pa.RecordBatch.from_pylist(
        [
            {
                "topic": record.column("topic")[0].as_py(),
                "kafka_partition": record.column("kafka_partition")[0].as_py(),
                "kafka_offset": record.column("kafka_offset")[0].as_py(),
                "payload": record.column("value")[0].as_py(),
                "reason": reason,
            }
        ],
        schema=MARKED,
    )


def _printable(text: str, limit: int = 200) -> str:
    """``text`` cut to ``limit`` characters, anything that is not valid UTF-8 escaped (an
    error can quote a lone surrogate, which no text column takes)."""
    return text[:limit].encode("utf-8", "backslashreplace").decode("utf-8")


def _marked(
    records: pa.RecordBatch, users: np.ndarray, release_ids: np.ndarray, max_ahead: timedelta
) -> pa.RecordBatch:
    """:func:`mark_records` of a batch in which no record defeats the checks."""
    count = records.num_rows
    reasons: list[str | None] = [None] * count
    event_ids: list[str | None] = [None] * count
    user_ids = np.full(count, -1, dtype=np.int64)
    release = np.full(count, -1, dtype=np.int64)
    kinds: list[str | None] = [None] * count
    times: list[Any] = [None] * count
    values = records.column("value").to_pylist()
    topic_names = records.column("topic").to_pylist()
    for row, value in enumerate(values):
        try:
            fields = parse_event_fields(value)
        except InvalidEvent as error:
            reasons[row] = str(error)
            continue
        except Exception as error:  # whatever it is: one record must never stop the stream
            reasons[row] = f"unreadable event ({type(error).__name__}: {_printable(str(error))})"
            continue
        event_ids[row], user_ids[row], release[row], kind, times[row] = fields
        kinds[row] = kind.value
        if TOPIC_OF_KIND[kind] != topic_names[row]:
            reasons[row] = (
                f"a {kind.value} event belongs on topic {TOPIC_OF_KIND[kind]}, not "
                f"{topic_names[row]}"
            )
    parsed = np.array([kind is not None for kind in kinds], dtype=bool)
    event_times = pa.array(times, MARKED.field("event_time").type)
    ingested = records.column("timestamp").cast(MARKED.field("ingested_at").type)
    stamps = ingested.cast(pa.int64())
    sane = pc.and_(pc.greater_equal(stamps, FIRST_MOMENT), pc.less_equal(stamps, LAST_MOMENT))
    for row in np.flatnonzero(~pc.fill_null(sane, False).to_numpy(zero_copy_only=False)):
        reasons[row] = (
            f"the Kafka record's timestamp ({stamps[row].as_py()} us after 1970) is outside "
            "years 1-9999: the producer set it wrong"
        )
    ingested = pc.if_else(sane, ingested, pa.scalar(None, ingested.type))
    ahead = pc.greater(event_times, pc.add(ingested, pa.scalar(max_ahead, pa.duration("us"))))
    for row in np.flatnonzero(pc.fill_null(ahead, False).to_numpy(zero_copy_only=False)):
        reasons[row] = reasons[row] or (
            f"event_time {times[row].isoformat()} is more than {max_ahead} after the record "
            f"reached Kafka ({ingested[row].as_py().isoformat()}): events from the future "
            "are refused (stream_max_seconds_ahead)"
        )
    parsed &= np.array([reason is None for reason in reasons], dtype=bool)
    user_known = contains(users, user_ids)
    release_known = contains(release_ids, release)
    for row in np.flatnonzero(parsed & ~(user_known & release_known)):
        reasons[row] = (
            f"unknown user {user_ids[row]}"
            if not user_known[row]
            else f"unknown release {release[row]}"
        )
    keys = records.column("key")
    user_keys = pc.cast(pc.cast(pa.array(user_ids), pa.string()), keys.type)
    keyed = pc.fill_null(pc.equal(keys, user_keys), False).to_numpy(zero_copy_only=False)
    for row in np.flatnonzero(parsed & user_known & release_known & ~keyed):
        reasons[row] = (
            f"Kafka key {keys[row].as_py()!r} is not the user id {user_ids[row]}: events are "
            "keyed by user id (the stream applies a user's events in the task their key names)"
        )
    payloads = [
        None if reason is None else value for reason, value in zip(reasons, values, strict=True)
    ]
    return pa.RecordBatch.from_arrays(
        [
            records.column("topic"),
            records.column("kafka_partition").cast(pa.int32()),
            records.column("kafka_offset").cast(pa.int64()),
            pa.array(payloads, pa.binary()),
            pa.array(reasons, pa.string()),
            pa.array(event_ids, pa.string()),
            pa.array(user_ids, pa.int64(), mask=~parsed),
            pa.array(release, pa.int64(), mask=~parsed),
            pa.array(kinds, pa.string()),
            event_times,
            ingested,
        ],
        schema=MARKED,
    )


def marked_batches(
    batches: Iterable[pa.RecordBatch],
    users: np.ndarray,
    release_ids: np.ndarray,
    seconds: dict[str, float],
    max_ahead: timedelta = MAX_AHEAD,
) -> Iterator[pa.RecordBatch]:
    """:func:`mark_records` of each of a task's raw ``batches``; once they are all marked,
    ``seconds`` holds the time spent waiting for them ("reading") and marking them
    ("marking"), not counting what the caller did with each marked batch meanwhile."""
    reading = marking = 0.0
    clock = time.monotonic()
    for batch in batches:
        got = time.monotonic()
        reading += got - clock
        marked = mark_records(batch, users, release_ids, max_ahead)
        marking += time.monotonic() - got
        yield marked
        clock = time.monotonic()
    seconds.update(reading=reading + time.monotonic() - clock, marking=marking)


def valid_rows(marked: pa.Table) -> pa.Table:
    """The valid rows of a table of ``MARKED`` rows."""
    return marked.filter(pc.is_null(marked.column("reason")))
