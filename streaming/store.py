"""Every statement the stream sends to Cassandra: what it writes for each row of a
micro-batch (pure: the plan is tested without Spark or Cassandra, the executors run it), the
reads of the users a batch touches, and the driver's ``stream_progress`` rows.

Every write is idempotent: dead letters are keyed by (topic, partition, offset), and
collection / wantlist adds and removes carry their event time as Cassandra's
write timestamp, so Cassandra keeps the latest event per (user, release) however batches
are split or replayed (at equal times a remove wins: :class:`discorecs.events.Holdings`).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

from discorecs import tables
from discorecs.cassandra import connect
from discorecs.events import HOLDINGS
from discorecs.settings import Settings
from discorecs.statements import read_statements
from streaming import StreamError

QUERY_NAME = tables.STREAM_QUERY

# -- writes of a micro-batch's rows ------------------------------------------------------------
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
    **{holdings.add.value: _add(holdings.table) for holdings in HOLDINGS},
    **{holdings.remove.value: _remove(holdings.table) for holdings in HOLDINGS},
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


# -- reads of the users a micro-batch touches ----------------------------------------------------
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


# -- the driver's progress rows ------------------------------------------------------------------
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
