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
LIVE_PROFILE = (
    f"INSERT INTO {tables.USER_LIVE_PROFILES} (user_id, profile, holdings, stream_id, batch_id, "
    "updated_at) VALUES (?, ?, ?, ?, ?, ?)"
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
WRITE_COLUMNS = (
    "topic",
    "kafka_partition",
    "kafka_offset",
    "payload",
    "reason",
    "event_id",
    "user_id",
    "release_id",
    "kind",
    "event_time",
    "written_at",  # the event time in microseconds: the Cassandra write timestamp
)


def writes_for(row: Any, day: str, received_at: datetime) -> list[tuple[str, tuple]]:
    """The (CQL, parameters) pairs one marked row (``WRITE_COLUMNS``) turns into."""
    if row.reason is not None:
        return [
            (
                DEAD_LETTER,
                (
                    day,
                    row.topic,
                    row.kafka_partition,
                    row.kafka_offset,
                    row.payload,
                    row.reason,
                    received_at,
                ),
            )
        ]
    holding = HOLDING_WRITES.get(row.kind)
    if holding is None:  # a play: only the master dataset keeps it
        return []
    if holding.startswith("INSERT"):
        return [(holding, (row.user_id, row.release_id, row.event_time, row.written_at))]
    return [(holding, (row.written_at, row.user_id, row.release_id))]


def write_group(row: Any) -> Any:
    """Rows whose writes may travel in one batch: a valid event's go to its user's partitions,
    dead letters to the day's."""
    return ("dead letters",) if row.reason is not None else ("user", row.user_id)
