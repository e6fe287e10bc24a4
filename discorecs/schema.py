"""The keyspace and tables of cassandra_schema/schema.cql on a cluster: the full script (for
cqlsh), and applying it idempotently, bringing tables made by an earlier release up to date
(new columns, table options)."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from cassandra import InvalidRequest

from cassandra_schema import declared_columns, declared_compaction, table_statements
from discorecs.cassandra import CassandraConnection, CassandraError, connect
from discorecs.settings import Settings

SPECULATIVE_RETRY = "MIN(99p,50ms)"
"""Every table's ``speculative_retry``: a coordinator that has not heard from a replica within
the table's 99th percentile read time, or 50 ms at most, asks another one. A node that has
just died is not known to be down for seconds (until gossip convicts it); without this, a
quorum read that picked it waits for the whole read timeout, and the site answers 503 for
those seconds. With three replicas and LOCAL_QUORUM, the third replica answers instead."""


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
            settings.append(f"compaction = {_cql_map(compaction)}")
        if settings:
            connection.session.execute(
                f"ALTER TABLE {keyspace.name}.{name} WITH {' AND '.join(settings)}", timeout=60
            )
            changed.append(name)
    return changed


def _same_compaction(existing: dict[str, str], declared: dict[str, str]) -> bool:
    """Whether a table's compaction (as Cassandra reports it: the class's full name, every
    option as text) is the one declared (a short class name, some options), and running
    (not held by :func:`compaction_paused` in a run that was killed)."""
    return existing.get("enabled", "true") == "true" and all(
        existing.get(key, "").rsplit(".", 1)[-1] == value
        if key == "class"
        else existing.get(key) == value
        for key, value in declared.items()
    )


@contextmanager
def compaction_paused(settings: Settings, table: str) -> Iterator[None]:
    """Hold ``table``'s automatic compaction while the block runs, then give the table back
    the compaction it had (which starts merging what the block wrote).

    For the nightly load of a row per user: the node flushes each memtable as it fills, and
    merges them later. Merged during the load, the flushes grow into one merge of about half
    the run's rows whose inputs are deleted only when it ends (every size-tiered or unified
    merge frees its inputs at its end): at 10M users a 17 GB merge while Spark's shuffles
    for the load still hold their disk, and node CPU taken from the load on a small host.
    After the load, the merges find the disk the load's shuffles held once the batch lets
    them go (when it ends, at the latest). Reads in between are unharmed: each user's row
    of the run is in exactly one flushed SSTable, found through the SSTables' bloom
    filters. A run killed inside the block leaves the compaction held
    until the next run ends or ``discorecs init-schema`` runs (both give it back)."""
    with connect(settings) as connection:
        held = _compaction(connection, settings.cassandra_keyspace, table)
        own = {key: value for key, value in held.items() if key != "enabled"}
        _set_compaction(connection, settings.cassandra_keyspace, table, {**own, "enabled": "false"})
    try:
        yield
    finally:
        try:
            with connect(settings) as connection:
                _set_compaction(connection, settings.cassandra_keyspace, table, own)
        except Exception as error:
            raise CassandraError(
                f"the compaction of {settings.cassandra_keyspace}.{table} is still held (the "
                f"load held it; giving it back failed: {error}). Run `discorecs init-schema` "
                "once Cassandra answers: it gives the table its compaction back."
            ) from error


def _compaction(connection: CassandraConnection, keyspace: str, table: str) -> dict[str, str]:
    """A table's compaction options as Cassandra reports them (the class's full name)."""
    rows = connection.session.execute(
        "SELECT compaction FROM system_schema.tables WHERE keyspace_name = %s AND table_name = %s",
        (keyspace, table),
    ).all()
    if not rows:
        raise CassandraError(
            f"Cassandra has no table {keyspace}.{table}: run `discorecs init-schema` first."
        )
    return dict(rows[0].compaction)


def _set_compaction(
    connection: CassandraConnection, keyspace: str, table: str, options: dict[str, str]
) -> None:
    execute_schema_statement(
        connection.session,
        f"ALTER TABLE {keyspace}.{table} WITH compaction = {_cql_map(options)}",
    )


def _cql_map(options: dict[str, str]) -> str:
    """Text options as a CQL map literal."""

    def quoted(text: str) -> str:
        return "'" + text.replace("'", "''") + "'"

    return (
        "{" + ", ".join(f"{quoted(key)}: {quoted(value)}" for key, value in options.items()) + "}"
    )
