"""Cassandra access shared by every writer and reader: connect, apply the schema, upsert rows.

Nothing here keeps a module-level session: callers open a :class:`CassandraConnection` at their
edge (a CLI command, a Spark partition, a Flask app) and pass it on.
"""

from __future__ import annotations

import functools
import logging
import re
import struct
import time
from collections import namedtuple
from collections.abc import Iterable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from cassandra import ConsistencyLevel, InvalidRequest, OperationTimedOut, WriteTimeout
from cassandra.auth import PlainTextAuthProvider
from cassandra.cluster import (
    EXEC_PROFILE_DEFAULT,
    Cluster,
    ExecutionProfile,
    NoHostAvailable,
    Session,
)
from cassandra.concurrent import execute_concurrent
from cassandra.connection import ConnectionBusy
from cassandra.policies import (
    ConstantSpeculativeExecutionPolicy,
    DCAwareRoundRobinPolicy,
    ExponentialReconnectionPolicy,
    RetryPolicy,
    RoundRobinPolicy,
    TokenAwarePolicy,
    WhiteListRoundRobinPolicy,
)
from cassandra.protocol import OverloadedErrorMessage
from cassandra.query import BatchStatement, BatchType, PreparedStatement

from cassandra_schema import declared_columns, declared_compaction, table_statements
from discorecs import tables
from discorecs.errors import DiscorecsError
from discorecs.settings import Settings

log = logging.getLogger(__name__)

DEFAULT_CONCURRENCY = 64
DEFAULT_BATCH_ROWS = Settings.cassandra_batch_rows  # rows per unlogged batch (upsert_batched)
BATCH_CONCURRENCY = 16  # batches in flight per connection
BATCH_SHARE = 0.64
"""How much of the node's ``batch_size_fail_threshold`` (the most a batch's mutations may
weigh; Cassandra refuses a heavier batch) an unlogged batch fills with values (text, blobs;
8 bytes for any other value, see :func:`values_bytes`): the rest is room for the mutations'
own overhead."""
DEFAULT_BATCH_FAIL_THRESHOLD = 50 * 1024
"""Cassandra's own ``batch_size_fail_threshold``, assumed when a node does not say its own."""
BATCH_BYTES = int(DEFAULT_BATCH_FAIL_THRESHOLD * BATCH_SHARE)
"""The most bytes of values a batch carries on a node with Cassandra's default threshold
(32 KiB); :attr:`CassandraConnection.batch_bytes` is what a connection's node allows."""
_DATA_SIZE = re.compile(r"^\s*(\d+)\s*(B|KiB|MiB)?\s*$")
_DATA_UNITS = {None: 1, "B": 1, "KiB": 1024, "MiB": 1024 * 1024}
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
READ_SPECULATION = ConstantSpeculativeExecutionPolicy(delay=0.25, max_attempts=2)
"""The driver's side of the same: a prepared read with no answer after 250 ms is also sent to
the next node of the query plan (twice at most), and the first answer wins. A coordinator
busy with a node that has just died (hints for every write, a read repair waiting on it)
can stall for seconds; another coordinator answers meanwhile."""


class RetryElsewhere(RetryPolicy):
    """Ask another coordinator, twice at most, when one answers that it could not start a
    request (Unavailable) or that its replicas were too slow for a read.

    A node that has just restarted opens its CQL port before gossip has told it that its
    peers are up (local nodes skip the wait for gossip to settle), so for a moment it
    answers Unavailable to what the others serve; the driver's default retries that once
    only, and never a read timeout elsewhere. Unavailable means nothing was written, and
    reads are idempotent, so both are safe to send on. Write timeouts are left to the
    default (rethrown): the writers' own retries decide (:func:`is_transient`)."""

    ATTEMPTS = 2

    def on_unavailable(self, query, consistency, required_replicas, alive_replicas, retry_num):
        return (self.RETRY_NEXT_HOST, None) if retry_num < self.ATTEMPTS else (self.RETHROW, None)

    def on_read_timeout(
        self, query, consistency, required_responses, received_responses, data_retrieved, retry_num
    ):
        return (self.RETRY_NEXT_HOST, None) if retry_num < self.ATTEMPTS else (self.RETHROW, None)


SPECULATIVE_RETRY = "MIN(99p,50ms)"
"""Every table's ``speculative_retry``: a coordinator that has not heard from a replica within
the table's 99th percentile read time, or 50 ms at most, asks another one. A node that has
just died is not known to be down for seconds (until gossip convicts it); without this, a
quorum read that picked it waits for the whole read timeout, and the site answers 503 for
those seconds. With three replicas and LOCAL_QUORUM, the third replica answers instead."""


class CassandraError(DiscorecsError):
    """Cassandra could not be reached or refused a statement; the message says which and why."""


class CassandraConnection:
    """A cluster and its session for one keyspace; close it when done (or use ``with``)."""

    def __init__(
        self,
        cluster: Cluster,
        session: Session,
        keyspace: str,
        write_consistency: int = ConsistencyLevel.LOCAL_QUORUM,
        replicas: int = 1,
    ) -> None:
        self.cluster = cluster
        self.session = session
        self.keyspace = keyspace
        self.write_consistency = write_consistency
        self.replicas = replicas
        self._prepared: dict[str, PreparedStatement] = {}

    def prepare(self, cql: str) -> PreparedStatement:
        """Prepare ``cql`` once per connection and reuse it afterwards. A statement that
        changes data runs at the write consistency; a SELECT at the session's (the read
        consistency), and is idempotent, so the driver may ask a second node for it."""
        statement = self._prepared.get(cql)
        if statement is None:
            statement = self.session.prepare(cql)
            if cql.lstrip()[:6].upper() == "SELECT":
                statement.is_idempotent = True  # may be sent again (READ_SPECULATION)
            else:
                statement.consistency_level = self.write_consistency
            self._prepared[cql] = statement
        return statement

    def batch(self) -> BatchStatement:
        """An empty UNLOGGED batch at the write consistency."""
        return BatchStatement(
            batch_type=BatchType.UNLOGGED, consistency_level=self.write_consistency
        )

    @functools.cached_property
    def batch_bytes(self) -> int:
        """The most bytes of values one batch carries here: :data:`BATCH_SHARE` of the
        ``batch_size_fail_threshold`` the node reports (``system_views.settings``), so a
        cluster configured for larger batches gets them (fewer requests for a bulk load)
        and one left at Cassandra's default is never sent a batch it refuses."""
        threshold = DEFAULT_BATCH_FAIL_THRESHOLD
        try:
            for name, unit in (
                ("batch_size_fail_threshold", None),  # Cassandra 4.1+: "50KiB"
                ("batch_size_fail_threshold_in_kb", "KiB"),  # 4.0: "50"
            ):
                row = self.session.execute(
                    "SELECT value FROM system_views.settings WHERE name = %s", (name,)
                ).one()
                if row is not None and row.value:
                    threshold = data_size(row.value, unit)
                    break
        except Exception as error:  # no virtual tables, or not allowed to read them
            log.info("batch size threshold not readable (%s); assuming the default", error)
        return int(threshold * BATCH_SHARE)

    @property
    def one_replica_set(self) -> bool:
        """Whether every partition lives on the same nodes: one node, or as many replicas
        (``replicas``, the keyspace's factor in the local datacenter) as nodes, like the local
        three-node cluster. One request may then carry many partitions' reads or writes at no
        extra cost to its coordinator, which is a replica of them all."""
        return len(self.cluster.metadata.all_hosts()) <= self.replicas

    def close(self) -> None:
        self.cluster.shutdown()

    def __enter__(self) -> CassandraConnection:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def data_size(text: str, unit: str | None = None) -> int:
    """Bytes in a size as Cassandra's settings write it ("50KiB", "1MiB", "512B"); a bare
    number is in ``unit`` (bytes when None)."""
    found = _DATA_SIZE.match(text)
    if found is None or (found.group(2) and unit):
        raise ValueError(f"not a data size: {text!r}")
    return int(found.group(1)) * _DATA_UNITS[found.group(2) or unit]


@functools.lru_cache(maxsize=512)
def _row_type(columns: tuple[str, ...]) -> type:
    # Same field names as the driver's factory: "count(*)" becomes "count", "a.b" "a_b".
    names = [re.sub(r"\W+", "_", re.sub(r"^\W+|\W+$", "", column)) for column in columns]
    return namedtuple("Row", names, rename=True)  # type: ignore[misc]


def named_rows(columns: list[str], rows: list[tuple]) -> list[tuple]:
    """Rows as named tuples, like the driver's default factory, but the tuple type is built
    once per column list instead of once per query (building it was a tenth of the site's
    time per request)."""
    make = _row_type(tuple(columns))._make
    return [make(row) for row in rows]


def connect(
    settings: Settings,
    *,
    keyspace: str | None = None,
    connect_timeout: float = 10.0,
    request_timeout: float = 20.0,
    schema_metadata: bool = True,
    hosts: Sequence[str] | None = None,
) -> CassandraConnection:
    """Open a session to the configured cluster, using ``keyspace`` if given.

    The native protocol version is pinned from the settings (v5 for Cassandra 5.0, v4 for
    4.1), so a cluster that cannot speak it fails at once with that version named. Without
    ``schema_metadata`` the driver skips reading the cluster's schema tables, which makes
    connecting much cheaper for writers that only prepare statements. With ``hosts``, only
    those nodes are contacted and asked (a probe of one node of a cluster).
    """
    contact_points = list(hosts or settings.cassandra_contact_points)
    if hosts:
        balancing: Any = WhiteListRoundRobinPolicy(contact_points)
    elif settings.cassandra_local_dc:
        balancing = TokenAwarePolicy(DCAwareRoundRobinPolicy(local_dc=settings.cassandra_local_dc))
    else:
        balancing = TokenAwarePolicy(RoundRobinPolicy())
    auth = None
    if settings.cassandra_username:
        auth = PlainTextAuthProvider(settings.cassandra_username, settings.cassandra_password or "")
    profile = ExecutionProfile(
        load_balancing_policy=balancing,
        row_factory=named_rows,
        speculative_execution_policy=READ_SPECULATION,
        retry_policy=RetryElsewhere(),
        consistency_level=ConsistencyLevel.name_to_value[settings.cassandra_read_consistency],
        request_timeout=request_timeout,
    )
    cluster = Cluster(
        contact_points=contact_points,
        port=settings.cassandra_port,
        protocol_version=settings.cassandra_protocol_version,
        execution_profiles={EXEC_PROFILE_DEFAULT: profile},
        auth_provider=auth,
        # Retry a node that went away within seconds, not the driver's default ten minutes:
        # a restarting Cassandra should bring the site and the jobs back by itself.
        reconnection_policy=ExponentialReconnectionPolicy(base_delay=1.0, max_delay=10.0),
        connect_timeout=connect_timeout,
        control_connection_timeout=connect_timeout,
        schema_metadata_enabled=schema_metadata,
    )
    where = f"{','.join(contact_points)}:{settings.cassandra_port}"
    try:
        session = cluster.connect(keyspace)
    except NoHostAvailable as error:
        cluster.shutdown()
        raise CassandraError(
            f"cannot reach Cassandra at {where} (protocol v{settings.cassandra_protocol_version}): "
            f"{_first_reason(error)}; start it with `discorecs up` or fix "
            "DISCORECS_CASSANDRA_CONTACT_POINTS / DISCORECS_CASSANDRA_PORT"
        ) from error
    except Exception as error:  # e.g. InvalidRequest for a keyspace that does not exist
        cluster.shutdown()
        raise CassandraError(
            f"cannot open keyspace {keyspace!r} at {where}: {error}; "
            "create it with `discorecs init-schema`"
        ) from error
    return CassandraConnection(
        cluster,
        session,
        keyspace or "",
        ConsistencyLevel.name_to_value[settings.cassandra_write_consistency],
        settings.cassandra_replication.local_factor(settings.cassandra_local_dc),
    )


_WORKER_CONNECTIONS: dict[tuple, CassandraConnection] = {}


def worker_connection(settings: Settings) -> CassandraConnection:
    """A connection kept for the life of a Spark Python worker process, shared by the tasks
    it runs (PySpark reuses workers), so a micro-batch's writes do not each pay for a new
    cluster connection. Only for code running on executors; everything else opens its own
    connection at its edge and closes it."""
    key = (
        settings.cassandra_contact_points,
        settings.cassandra_port,
        settings.cassandra_keyspace,
        settings.cassandra_protocol_version,
        settings.cassandra_username,
    )
    connection = _WORKER_CONNECTIONS.get(key)
    if connection is None or connection.cluster.is_shutdown:
        connection = connect(settings, keyspace=settings.cassandra_keyspace, schema_metadata=False)
        _WORKER_CONNECTIONS[key] = connection
    return connection


def schema_script(settings: Settings) -> list[str]:
    """Every statement that creates the keyspace and its tables, in order (idempotent)."""
    keyspace = settings.cassandra_keyspace
    statements = [
        f"CREATE KEYSPACE IF NOT EXISTS {keyspace} WITH replication = "
        f"{settings.cassandra_replication.as_cql_map()}"
    ]
    for statement in table_statements():
        statement = re.sub(
            r"^CREATE TABLE IF NOT EXISTS ", f"CREATE TABLE IF NOT EXISTS {keyspace}.", statement
        )
        joiner = " AND " if " WITH " in statement else " WITH "
        statements.append(f"{statement}{joiner}speculative_retry = '{SPECULATIVE_RETRY}'")
    return statements


def apply_schema(settings: Settings) -> list[str]:
    """Create the keyspace and every table if missing; returns the tables the keyspace has.

    Safe to run any number of times; tables made by an earlier release get the columns and
    options the schema added. Each statement runs on its own so an error names the statement
    that failed.
    """
    with connect(settings) as connection:
        for statement in schema_script(settings):
            try:
                execute_schema_statement(connection.session, statement)
            except Exception as error:
                raise CassandraError(
                    f"Cassandra rejected a schema statement: {error}\n  statement: {statement}"
                ) from error
        # Schema changes travel between nodes asynchronously; wait until they agree.
        connection.cluster.control_connection.wait_for_schema_agreement()
        connection.cluster.refresh_schema_metadata()
        keyspace = connection.cluster.metadata.keyspaces.get(settings.cassandra_keyspace)
        if keyspace is None:
            return []
        added = _upgrade_columns(connection, keyspace) + _upgrade_options(connection, keyspace)
        if added:
            connection.cluster.control_connection.wait_for_schema_agreement()
            connection.cluster.refresh_schema_metadata()
            keyspace = connection.cluster.metadata.keyspaces[settings.cassandra_keyspace]
        return sorted(keyspace.tables)


SCHEMA_SETTLE_SECONDS = 60.0


def execute_schema_statement(
    session: Any, statement: str, settle_seconds: float = SCHEMA_SETTLE_SECONDS
) -> None:
    """Run one schema statement, then wait until the nodes agree on the schema.

    A node that joined moments ago may not have pulled the keyspace yet when a statement
    reaches it ("Keyspace 'x' doesn't exist" right after the keyspace was made): such a
    statement is asked again, after the nodes agree, until ``settle_seconds`` have passed.
    """
    deadline = time.monotonic() + settle_seconds
    agreement = session.cluster.control_connection.wait_for_schema_agreement
    while True:
        try:
            result = session.execute(statement, timeout=60)
        except InvalidRequest as error:
            if "doesn't exist" not in str(error) or time.monotonic() > deadline:
                raise
            agreement(wait_time=10)
            time.sleep(1.0)
            continue
        if not result.response_future.is_schema_agreed:
            agreement(wait_time=max(1.0, deadline - time.monotonic()))
        return


def _type_of(column: Any) -> str:
    """A column's type, static or not, spaces dropped: a declaration as the schema file
    writes it (``map<text, bigint> STATIC``) or the driver's column metadata."""
    if isinstance(column, str):
        return column.replace(" ", "").lower()
    return (column.cql_type + ("STATIC" if column.is_static else "")).replace(" ", "").lower()


def _upgrade_columns(connection: CassandraConnection, keyspace: Any) -> list[str]:
    """Bring tables made by an earlier release up to the schema: a column the schema added
    is added (``CREATE TABLE IF NOT EXISTS`` leaves an existing table as it was); a column
    whose type changed cannot be, so that fails with the fix. Returns the columns added."""
    added = []
    for statement in table_statements():
        name = re.match(r"CREATE TABLE IF NOT EXISTS (\w+)", statement).group(1)
        existing = keyspace.tables[name].columns
        for column, declared in declared_columns(statement).items():
            if column not in existing:
                connection.session.execute(
                    f"ALTER TABLE {keyspace.name}.{name} ADD {column} {declared}", timeout=60
                )
                added.append(f"{name}.{column}")
            elif _type_of(existing[column]) != _type_of(declared):
                raise CassandraError(
                    f"Cassandra table {keyspace.name}.{name} is from an earlier release: its "
                    f"column {column} is {existing[column].cql_type}, the schema declares "
                    f"{declared}. Drop the table (cqlsh: DROP TABLE {keyspace.name}.{name}; "
                    "its rows are lost) or set cassandra_keyspace to a new keyspace, then run "
                    "again."
                )
    return added


def _upgrade_options(connection: CassandraConnection, keyspace: Any) -> list[str]:
    """Give tables made by an earlier release the :data:`SPECULATIVE_RETRY` and the
    compaction the schema sets; returns the tables changed."""
    declared = {
        re.match(r"CREATE TABLE IF NOT EXISTS (\w+)", statement).group(1): declared_compaction(
            statement
        )
        for statement in table_statements()
    }
    changed = []
    for name, table in keyspace.tables.items():
        settings = []
        if table.options.get("speculative_retry") != SPECULATIVE_RETRY:
            settings.append(f"speculative_retry = '{SPECULATIVE_RETRY}'")
        compaction = declared.get(name)
        if compaction and not _same_compaction(table.options.get("compaction", {}), compaction):
            options = ", ".join(f"'{key}': '{value}'" for key, value in compaction.items())
            settings.append(f"compaction = {{{options}}}")
        if settings:
            connection.session.execute(
                f"ALTER TABLE {keyspace.name}.{name} WITH {' AND '.join(settings)}", timeout=60
            )
            changed.append(name)
    return changed


def _same_compaction(existing: dict[str, str], declared: dict[str, str]) -> bool:
    """Whether a table's compaction (as Cassandra reports it: the class's full name, every
    option as text) is the one declared (a short class name, some options)."""
    return all(
        existing.get(key, "").rsplit(".", 1)[-1] == value
        if key == "class"
        else existing.get(key) == value
        for key, value in declared.items()
    )


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


def release_version(connection: CassandraConnection) -> str:
    """The Cassandra server version as the node reports it, e.g. ``5.0.6``."""
    return str(connection.session.execute("SELECT release_version FROM system.local").one()[0])


def _first_reason(error: NoHostAvailable) -> str:
    errors = getattr(error, "errors", None) or {}
    for host, reason in errors.items():
        return f"{host}: {reason}"
    return str(error)
