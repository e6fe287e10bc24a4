"""Many statements to Cassandra at once: upserts in unlogged batches of rows that share their
replicas, sized under the node's batch threshold; groups of writes and single-partition reads
with bounded concurrency, asked again while a node is busy. Every bulk writer and reader of
the project (ingest, users, the batch's serving load, the stream) goes through here.
"""

from __future__ import annotations

import struct
import time
from collections.abc import Iterable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from cassandra import OperationTimedOut, WriteTimeout
from cassandra.cluster import (
    NoHostAvailable,
)
from cassandra.concurrent import execute_concurrent
from cassandra.connection import ConnectionBusy
from cassandra.protocol import OverloadedErrorMessage
from cassandra.query import BatchStatement, PreparedStatement

from discorecs import tables
from discorecs.cassandra import (
    BATCH_BYTES,
    BATCH_CONCURRENCY,
    DEFAULT_BATCH_ROWS,
    DEFAULT_CONCURRENCY,
    CassandraConnection,
    CassandraError,
)

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def insert_cql(table: str, columns: Sequence[str]) -> str:
    """The INSERT (= upsert) of ``columns`` into one of the project's tables."""
    if table not in tables.ALL_TABLES:
        raise ValueError(f"unknown table {table!r}; tables are listed in discorecs.tables")
    placeholders = ", ".join("?" for _ in columns)
    return f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({placeholders})"


def upsert_rows(
    connection: CassandraConnection,
    table: str,
    columns: Sequence[str],
    rows: Iterable[Sequence[Any]],
    *,
    concurrency: int = DEFAULT_CONCURRENCY,
    write_time_column: str | None = None,
) -> int:
    """Insert (= upsert) ``rows`` into ``table`` with one prepared statement and bounded
    concurrency; returns the number of rows written.

    Cassandra inserts are upserts on the primary key, so writing the same rows again changes
    nothing: replays after a crash are safe. With ``write_time_column`` (a datetime column),
    each row is written with that moment as its Cassandra write timestamp, so a later event
    (e.g. the stream's remove of a record) wins over it whatever order the writes arrive in.
    Any failed row raises :class:`CassandraError` naming the table and the row, after the rest
    of the chunk has been tried.
    """
    cql, rows = _upsert(table, columns, rows, write_time_column)
    return execute_many(connection, cql, rows, what=table, concurrency=concurrency)


def _upsert(
    table: str,
    columns: Sequence[str],
    rows: Iterable[Sequence[Any]],
    write_time_column: str | None,
) -> tuple[str, Iterable[Sequence[Any]]]:
    """The INSERT of ``columns`` and its rows' values (with the write time last)."""
    cql = insert_cql(table, columns)
    if write_time_column is None:
        return cql, rows
    at = list(columns).index(write_time_column)
    return cql + " USING TIMESTAMP ?", ((*row, write_time_micros(row[at])) for row in rows)


def upsert_batched(
    connection: CassandraConnection,
    table: str,
    columns: Sequence[str],
    rows: Iterable[Sequence[Any]],
    *,
    batch_rows: int = DEFAULT_BATCH_ROWS,
    concurrency: int = BATCH_CONCURRENCY,
    write_time_column: str | None = None,
) -> int:
    """Upsert ``rows`` like :func:`upsert_rows` (``write_time_column`` too), sent as UNLOGGED
    batches of up to ``batch_rows`` rows (and the node's ``batch_bytes``) whose partitions
    live on the same replicas (token-aware grouping, so a batch never makes its coordinator fan
    out to other nodes; on one node every row shares it). For bulk loads: per request Cassandra
    and the driver cost far more than per row, and batching cuts the requests by
    ``batch_rows``. Unlogged batches are not atomic; the writes are idempotent, so a failed
    load is simply run again. Returns the rows written."""
    cql, rows = _upsert(table, columns, rows, write_time_column)
    insert = connection.prepare(cql)
    metadata = connection.session.cluster.metadata
    keyspace = connection.session.keyspace
    limit = connection.batch_bytes
    groups: dict[tuple[str, ...], BatchStatement] = {}
    sizes: dict[tuple[str, ...], int] = {}
    chunk: list[tuple[Any, Sequence[Any] | None]] = []
    done = 0
    for row in rows:
        try:
            bound = insert.bind(row)
        except (TypeError, ValueError, struct.error) as error:
            raise CassandraError(
                f"a row for {table} cannot be written: {row!r}: {error}. Fix the row's "
                "source and run the load again (it is idempotent)."
            ) from error
        owners = metadata.get_replicas(keyspace, bound.routing_key)
        replicas = tuple(sorted(str(host.endpoint) for host in owners))
        size = values_bytes(row)
        batch = groups.get(replicas)
        if batch is not None and sizes[replicas] + size > limit:
            chunk.append((groups.pop(replicas), None))
            batch = None
        if batch is None:
            batch = groups[replicas] = connection.batch()
            sizes[replicas] = 0
        batch.add(bound)
        sizes[replicas] += size
        done += 1
        if len(batch) >= batch_rows:
            chunk.append((groups.pop(replicas), None))
            if len(chunk) >= 500:
                _execute_chunk(connection, table, chunk, concurrency)
                chunk = []
    chunk.extend((batch, None) for batch in groups.values())
    if chunk:
        _execute_chunk(connection, table, chunk, concurrency)
    return done


def write_time_micros(moment: datetime) -> int:
    """A Cassandra write timestamp (microseconds since the epoch; naive means UTC)."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return (moment - EPOCH) // timedelta(microseconds=1)


def execute_many(
    connection: CassandraConnection,
    cql: str,
    rows: Iterable[Sequence[Any]],
    *,
    what: str,
    concurrency: int = DEFAULT_CONCURRENCY,
) -> int:
    """Run one prepared statement (e.g. a DELETE) for every row, with bounded concurrency;
    failures raise :class:`CassandraError` naming ``what``."""
    return execute_statements(
        connection, ((cql, row) for row in rows), what=what, concurrency=concurrency
    )


def execute_statements(
    connection: CassandraConnection,
    statements: Iterable[tuple[str, Sequence[Any]]],
    *,
    what: str,
    concurrency: int = DEFAULT_CONCURRENCY,
) -> int:
    """Run ``(cql, parameters)`` pairs (each CQL prepared once per connection) with bounded
    concurrency, in chunks; returns how many ran. Any failure raises :class:`CassandraError`
    naming ``what`` and the first failed statement, after the rest of its chunk was tried."""
    done = 0
    chunk: list[tuple[PreparedStatement, Sequence[Any]]] = []
    for cql, parameters in statements:
        chunk.append((connection.prepare(cql), parameters))
        if len(chunk) >= 10_000:
            done += _execute_chunk(connection, what, chunk, concurrency)
            chunk = []
    if chunk:
        done += _execute_chunk(connection, what, chunk, concurrency)
    return done


def execute_grouped(
    connection: CassandraConnection,
    groups: Iterable[Sequence[tuple[str, Sequence[Any]]]],
    *,
    what: str,
    concurrency: int = DEFAULT_CONCURRENCY,
    batch_size: int = 16,
) -> int:
    """Run groups of ``(cql, parameters)`` pairs, each group's statements sent together as
    UNLOGGED batches of at most ``batch_size`` statements and the node's ``batch_bytes``
    (a group should share one partition key, e.g.
    one user's writes: one round trip to one replica set instead of one per statement).
    Where every partition has the same replicas (:attr:`CassandraConnection.one_replica_set`),
    small groups are packed together into full batches: far fewer requests for the same
    writes (a user's handful of writes per micro-batch would otherwise each be a request of
    their own).
    Unlogged batches are not atomic; like every write here they are idempotent, so a failed
    one is simply run again. Returns the number of statements run."""
    done = 0
    chunk: list[tuple[Any, Sequence[Any] | None]] = []
    pack = _packed if connection.one_replica_set else _split
    parts = pack(groups, batch_size, connection.batch_bytes)
    for part in parts:
        if len(part) == 1:
            cql, parameters = part[0]
            chunk.append((connection.prepare(cql), parameters))
        else:
            batch = connection.batch()
            for cql, parameters in part:
                batch.add(connection.prepare(cql), parameters)
            chunk.append((batch, None))
        done += len(part)
        if len(chunk) >= 2_000:
            _execute_chunk(connection, what, chunk, concurrency)
            chunk = []
    if chunk:
        _execute_chunk(connection, what, chunk, concurrency)
    return done


Statements = Sequence[tuple[str, Sequence[Any]]]


def values_bytes(values: Sequence[Any] | None) -> int:
    """About how many bytes ``values`` make in Cassandra's count of a batch's size (what
    ``batch_size_fail_threshold`` is compared with): each cell its value (text and blobs their
    length, any other value 8) plus its timestamp, TTL and deletion time (16 bytes); each
    item of a list or set is a cell of its own with a 16-byte path (a list's time UUID)."""
    total = 0
    for value in values or ():  # scalars inline: the stream sizes every statement it writes
        if isinstance(value, str | bytes):
            total += CELL_BYTES + len(value)
        elif isinstance(value, int | float | datetime | None):
            total += CELL_BYTES + 8
        else:
            total += _cell_bytes(value)
    return total


CELL_BYTES = 16
"""What Cassandra counts for a cell besides its value and path (timestamp, TTL, deletion
time)."""


def _cell_bytes(value: Any) -> int:
    if isinstance(value, list | tuple | set | frozenset):
        return sum(16 + _cell_bytes(item) for item in value)
    if isinstance(value, dict):  # a map's key is its cells' path
        return sum(_cell_bytes(key) + _cell_bytes(item) for key, item in value.items())
    return CELL_BYTES + (len(value) if isinstance(value, str | bytes) else 8)


def _split(
    groups: Iterable[Statements], size: int, limit: int = BATCH_BYTES
) -> Iterator[Statements]:
    """Each group cut into batches of at most ``size`` statements and ``limit`` bytes."""
    for group in groups:
        yield from _packed([group], size, limit)


def _packed(
    groups: Iterable[Statements], size: int, limit: int = BATCH_BYTES
) -> Iterator[Statements]:
    """The groups' statements, in order, in batches of at most ``size`` statements and
    ``limit`` bytes of values (a statement larger than that alone in its batch)."""
    part: list[tuple[str, Sequence[Any]]] = []
    part_bytes = 0
    for group in groups:
        for statement in group:
            statement_bytes = values_bytes(statement[1])
            if part and part_bytes + statement_bytes > limit:
                yield part
                part, part_bytes = [], 0
            part.append(statement)
            part_bytes += statement_bytes
            if len(part) == size:
                yield part
                part, part_bytes = [], 0
    if part:
        yield part


BUSY_RETRIES = 6
"""How many times a chunk's writes that failed for a passing reason are run again (after
0.05, 0.1, 0.2, ... s: 3 s in all) before the step fails."""


def busy(error: Exception) -> bool:
    """Whether a write failed for a reason that passes by itself: the client's connection
    was full (the node reads more slowly than it is written to, e.g. in a GC pause), or the
    node or the client timed out. Every write here is idempotent, so running it again is
    safe."""
    if isinstance(error, NoHostAvailable):
        errors = list(error.errors.values())
        return bool(errors) and all(isinstance(e, ConnectionBusy) for e in errors)
    return isinstance(error, OperationTimedOut | WriteTimeout | OverloadedErrorMessage)


def _execute_chunk(
    connection: CassandraConnection,
    what: str,
    chunk: list[tuple[Any, Sequence[Any] | None]],
    concurrency: int,
) -> int:
    pending = chunk
    for attempt in range(BUSY_RETRIES + 1):
        results = execute_concurrent(
            connection.session, pending, concurrency=concurrency, raise_on_first_error=False
        )
        failures = [
            (pair, result) for pair, (ok, result) in zip(pending, results, strict=True) if not ok
        ]
        if not failures:
            return len(chunk)
        if attempt == BUSY_RETRIES or not all(busy(error) for _, error in failures):
            break
        time.sleep(0.05 * 2**attempt)
        pending = [pair for pair, _ in failures]
    (statement, parameters), error = next(
        (failure for failure in failures if not busy(failure[1])), failures[0]
    )
    shown = getattr(statement, "query_string", "a batch of statements")
    raise CassandraError(
        f"{len(failures)} of {len(chunk)} writes to {what} failed; first: "
        f"{shown} with {parameters!r}: {error}. The write is idempotent: "
        "fix the cause and run the same step again."
    )


def read_statements(
    connection: CassandraConnection,
    statements: Sequence[tuple[str, Sequence[Any]]],
    *,
    what: str,
    concurrency: int = DEFAULT_CONCURRENCY,
) -> Iterator[tuple[Sequence[Any], Any]]:
    """Run prepared SELECTs, each ``(cql, parameters)``, with bounded concurrency (different
    statements may interleave) and yield ``(parameters, result)`` in their order; a result's
    further pages are fetched as they are reached."""
    prepared = {cql: connection.prepare(cql) for cql in {cql for cql, _ in statements}}
    results = execute_concurrent(
        connection.session,
        [(prepared[cql], parameters) for cql, parameters in statements],
        concurrency=concurrency,
        raise_on_first_error=False,
        results_generator=True,
    )
    for (_, parameters), (ok, result) in zip(statements, results, strict=True):
        if not ok:
            raise CassandraError(f"reading {what} for {parameters!r} failed: {result}")
        yield parameters, result


def read_partitions(
    connection: CassandraConnection,
    cql: str,
    keys: Sequence[Sequence[Any]],
    *,
    what: str,
    concurrency: int = DEFAULT_CONCURRENCY,
) -> Iterator[Any]:
    """Run one prepared single-partition SELECT per key with bounded concurrency and yield
    every row of every answer."""
    statements = [(cql, key) for key in keys]
    for _, result in read_statements(connection, statements, what=what, concurrency=concurrency):
        yield from result
