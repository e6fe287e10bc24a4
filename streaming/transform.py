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
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pyspark.sql.pandas.types import from_arrow_schema

from discorecs.events import InvalidEvent, parse_event_fields
from spark_jobs.picks import contains

MARKED = pa.schema(
    [
        ("topic", pa.string()),
        ("kafka_partition", pa.int32()),
        ("kafka_offset", pa.int64()),
        ("payload", pa.string()),  # the raw value as text, kept for dead letters only
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


def mark_records(
    records: pa.RecordBatch, users: np.ndarray, release_ids: np.ndarray
) -> pa.RecordBatch:
    """Every raw Kafka record (topic, kafka_partition, kafka_offset, key, value, timestamp)
    as a ``MARKED`` row: parsed, with ``reason`` null for a valid event.

    ``users`` and ``release_ids``: the known user and release ids, sorted int64 arrays. An
    event the contract rejects, or that names a user or release not among them, keeps its
    payload and gets the reason it is dead-lettered, as does an event whose Kafka key is not
    its user id (the contract: the stream sends each record to the task its key names, and
    applies a user's events in one task)."""
    count = records.num_rows
    reasons: list[str | None] = [None] * count
    event_ids: list[str | None] = [None] * count
    user_ids = np.full(count, -1, dtype=np.int64)
    release = np.full(count, -1, dtype=np.int64)
    kinds: list[str | None] = [None] * count
    times: list[Any] = [None] * count
    values = records.column("value").to_pylist()
    for row, value in enumerate(values):
        try:
            event_ids[row], user_ids[row], release[row], kind, times[row] = parse_event_fields(
                value
            )
        except InvalidEvent as error:
            reasons[row] = str(error)
            continue
        kinds[row] = kind.value
    parsed = np.array([reason is None for reason in reasons], dtype=bool)
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
        None if reason is None or value is None else value.decode("utf-8", "replace")
        for reason, value in zip(reasons, values, strict=True)
    ]
    return pa.RecordBatch.from_arrays(
        [
            records.column("topic"),
            records.column("kafka_partition").cast(pa.int32()),
            records.column("kafka_offset").cast(pa.int64()),
            pa.array(payloads, pa.string()),
            pa.array(reasons, pa.string()),
            pa.array(event_ids, pa.string()),
            pa.array(user_ids, pa.int64(), mask=~parsed),
            pa.array(release, pa.int64(), mask=~parsed),
            pa.array(kinds, pa.string()),
            pa.array(times, MARKED.field("event_time").type),
            records.column("timestamp").cast(MARKED.field("ingested_at").type),
        ],
        schema=MARKED,
    )


def marked_batches(
    batches: Iterable[pa.RecordBatch],
    users: np.ndarray,
    release_ids: np.ndarray,
    seconds: dict[str, float],
) -> Iterator[pa.RecordBatch]:
    """:func:`mark_records` of each of a task's raw ``batches``; once they are all marked,
    ``seconds`` holds the time spent waiting for them ("reading") and marking them
    ("marking"), not counting what the caller did with each marked batch meanwhile."""
    reading = marking = 0.0
    clock = time.monotonic()
    for batch in batches:
        got = time.monotonic()
        reading += got - clock
        marked = mark_records(batch, users, release_ids)
        marking += time.monotonic() - got
        yield marked
        clock = time.monotonic()
    seconds.update(reading=reading + time.monotonic() - clock, marking=marking)


def valid_rows(marked: pa.Table) -> pa.Table:
    """The valid rows of a table of ``MARKED`` rows."""
    return marked.filter(pc.is_null(marked.column("reason")))
