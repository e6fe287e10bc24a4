"""Cassandra connections shared by every writer and reader: how to connect (policies, retries,
consistency), and the errors a user can act on. Applying the schema: :mod:`discorecs.schema`;
running many statements (grouped writes, bounded reads): :mod:`discorecs.statements`.

Nothing here keeps a module-level session: callers open a :class:`CassandraConnection` at their
edge (a CLI command, a Spark partition, a Flask app) and pass it on.
"""

from __future__ import annotations

import functools
import logging
import re
from collections import namedtuple
from collections.abc import Sequence
from typing import Any

from cassandra import ConsistencyLevel
from cassandra.auth import PlainTextAuthProvider
from cassandra.cluster import (
    EXEC_PROFILE_DEFAULT,
    Cluster,
    ExecutionProfile,
    NoHostAvailable,
    Session,
)
from cassandra.policies import (
    ConstantSpeculativeExecutionPolicy,
    DCAwareRoundRobinPolicy,
    ExponentialReconnectionPolicy,
    RetryPolicy,
    RoundRobinPolicy,
    TokenAwarePolicy,
    WhiteListRoundRobinPolicy,
)
from cassandra.query import BatchStatement, BatchType, PreparedStatement

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


def release_version(connection: CassandraConnection) -> str:
    """The Cassandra server version as the node reports it, e.g. ``5.0.6``."""
    return str(connection.session.execute("SELECT release_version FROM system.local").one()[0])


def _first_reason(error: NoHostAvailable) -> str:
    errors = getattr(error, "errors", None) or {}
    for host, reason in errors.items():
        return f"{host}: {reason}"
    return str(error)
