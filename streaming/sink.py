"""What the stream writes to Cassandra for each row of a micro-batch: pure, so the plan is
tested without Spark or Cassandra; the executors run the statements it names.

Every write is idempotent: dead letters are keyed by (topic, partition, offset), and
collection / wantlist adds and removes carry their event time as Cassandra's
write timestamp, so Cassandra keeps the latest event per (user, release) however batches
are split or replayed (at equal times a remove wins, as in
:func:`spark_jobs.transforms.latest_events`).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from discorecs import tables
from discorecs.events import EventKind

DEAD_LETTER = (
    f"INSERT INTO {tables.DEAD_LETTERS} (day, topic, kafka_partition, kafka_offset, payload, "
    "reason, received_at) VALUES (?, ?, ?, ?, ?, ?, ?)"
)
LIVE_PROFILE = (  # the static columns of the user's partition: no run row is touched
    f"INSERT INTO {tables.RECOMMENDATIONS} (user_id, {', '.join(tables.LIVE_COLUMNS)}) "
    "VALUES (?, ?, ?, ?, ?, ?)"
)


def _add(table: str) -> str:
    return f"INSERT INTO {table} (user_id, release_id, added_at) VALUES (?, ?, ?) USING TIMESTAMP ?"


def _remove(table: str) -> str:
    return f"DELETE FROM {table} USING TIMESTAMP ? WHERE user_id = ? AND release_id = ?"


HOLDING_WRITES = {
    EventKind.COLLECTION_ADD.value: _add(tables.COLLECTIONS),
    EventKind.COLLECTION_REMOVE.value: _remove(tables.COLLECTIONS),
    EventKind.WANTLIST_ADD.value: _add(tables.WANTLISTS),
    EventKind.WANTLIST_REMOVE.value: _remove(tables.WANTLISTS),
}


def dead_letter(row: dict[str, Any], day: str, received_at: datetime) -> tuple[str, tuple]:
    """The (CQL, parameters) of an invalid event's dead letter; ``row``: its topic,
    kafka_partition, kafka_offset, payload and reason."""
    return (
        DEAD_LETTER,
        (
            day,
            row["topic"],
            row["kafka_partition"],
            row["kafka_offset"],
            row["payload"],
            row["reason"],
            received_at,
        ),
    )


def holding_write(kind: str, user_id: int, release_id: int, written_at: int) -> tuple[str, tuple]:
    """The (CQL, parameters) of a valid collection or wantlist event (``kind`` in
    ``HOLDING_WRITES``; a play has none: only the master dataset keeps it). ``written_at``:
    the event time in microseconds, the write's Cassandra timestamp; ``added_at`` is the same
    time in milliseconds (what a CQL timestamp holds)."""
    cql = HOLDING_WRITES[kind]
    if cql.startswith("INSERT"):
        return cql, (user_id, release_id, written_at // 1000, written_at)
    return cql, (written_at, user_id, release_id)
