"""The CQL schema: one table per query, for Cassandra 5.0 and still valid on 4.1."""

import re
from contextlib import contextmanager

import pytest

from cassandra_schema import SCHEMA_FILE, declared_columns, declared_compaction, table_statements
from discorecs import tables
from discorecs.cassandra import CassandraError, connect
from discorecs.schema import apply_schema, compaction_paused, schema_script

# Cassandra 5.0 syntax that 4.1 rejects: the schema targets 5.0 but must stay valid on 4.1.
REJECTED_BY_4_1 = [
    r"StorageAttachedIndex",
    r"USING\s+'sai'",
    r"\bvector<",
    r"UnifiedCompactionStrategy",
    r"TrieMemtable",
    r"MASKED WITH",
    r"\bmask_\w+\(",
]


def created_tables() -> list[str]:
    return [
        re.match(r"CREATE TABLE IF NOT EXISTS (\w+)", statement).group(1)
        for statement in table_statements()
    ]


def test_schema_creates_exactly_the_named_tables():
    assert sorted(created_tables()) == sorted(tables.ALL_TABLES)


def test_every_table_is_preceded_by_the_query_it_serves():
    text = SCHEMA_FILE.read_text()
    for table in tables.ALL_TABLES:
        block = text[: text.index(f"CREATE TABLE IF NOT EXISTS {table} (")].rstrip().splitlines()
        comments = []
        for line in reversed(block):
            if not line.startswith("--"):
                break
            comments.append(line)
        assert any(line.startswith("-- Q:") for line in comments), table


def test_schema_stays_valid_on_cassandra_4_1():
    for statement in table_statements():
        for pattern in REJECTED_BY_4_1:
            assert not re.search(pattern, statement, re.IGNORECASE), (pattern, statement)


def test_script_qualifies_tables_with_the_keyspace(test_settings):
    script = schema_script(test_settings)
    assert script[0] == (
        "CREATE KEYSPACE IF NOT EXISTS discorecs_test WITH replication = "
        "{'class': 'SimpleStrategy', 'replication_factor': 1}"
    )
    assert all(s.startswith("CREATE TABLE IF NOT EXISTS discorecs_test.") for s in script[1:])


def test_leaderboard_buckets_are_bounded():
    assert tables.leaderboard_bucket(1) == 0
    assert tables.leaderboard_bucket(10_000) == 0
    assert tables.leaderboard_bucket(10_001) == 1
    assert tables.leaderboard_bucket(10_000_000) == 999
    with pytest.raises(ValueError):
        tables.leaderboard_bucket(0)


def compaction_of(settings, table: str) -> dict[str, str]:
    with connect(settings) as connection:
        row = connection.session.execute(
            "SELECT compaction FROM system_schema.tables WHERE keyspace_name = %s "
            "AND table_name = %s",
            (settings.cassandra_keyspace, table),
        ).one()
    return dict(row.compaction)


@pytest.mark.services
def test_schema_applies_twice_against_real_cassandra(services):
    first = apply_schema(services)
    second = apply_schema(services)
    assert first == second == sorted(tables.ALL_TABLES)
    with connect(services, keyspace=services.cassandra_keyspace) as connection:
        columns = {
            row.column_name
            for row in connection.session.execute(
                "SELECT column_name FROM system_schema.columns WHERE keyspace_name = %s "
                "AND table_name = %s",
                (services.cassandra_keyspace, tables.RECOMMENDATIONS),
            )
        }
    assert columns == {*tables.RECOMMENDATION_COLUMNS, *tables.LIVE_COLUMNS}
    compaction = compaction_of(services, tables.DEAD_LETTERS)
    assert compaction["class"].endswith("TimeWindowCompactionStrategy")


def test_column_types_are_read_from_the_statements():
    statement = next(s for s in table_statements() if f" {tables.DEAD_LETTERS} (" in s)
    assert declared_columns(statement) == {
        "day": "text",
        "topic": "text",
        "kafka_partition": "int",
        "kafka_offset": "bigint",
        "payload": "blob",
        "reason": "text",
        "received_at": "timestamp",
    }
    runs = next(s for s in table_statements() if f" {tables.BATCH_RUNS} (" in s)
    assert declared_columns(runs)["step_counts"] == "map<text, bigint>"
    assert declared_compaction(runs) is None
    letters = next(s for s in table_statements() if f" {tables.DEAD_LETTERS} (" in s)
    assert declared_compaction(letters) == {
        "class": "TimeWindowCompactionStrategy",
        "compaction_window_unit": "DAYS",
        "compaction_window_size": "1",
    }


@contextmanager
def keyspace_of_an_earlier_release(services, name: str, table: str):
    """Settings for a keyspace ``name`` holding one table as an earlier release made it
    (``table``: its CREATE TABLE, the keyspace written as {ks}); dropped afterwards."""
    old = services.replace(cassandra_keyspace=name)
    with connect(old) as connection:
        connection.session.execute(
            f"CREATE KEYSPACE IF NOT EXISTS {name} WITH replication = "
            "{'class': 'SimpleStrategy', 'replication_factor': 1}"
        )
        connection.session.execute(table.format(ks=name))
    try:
        yield old
    finally:
        with connect(old) as connection:
            connection.session.execute(f"DROP KEYSPACE {name}")


@pytest.mark.services
def test_a_table_from_an_earlier_release_is_named_with_the_fix(services):
    """dead_letters.payload was text; CREATE TABLE IF NOT EXISTS would keep it so, and every
    dead letter's write would then fail."""
    table = (
        f"CREATE TABLE {{ks}}.{tables.DEAD_LETTERS} (day text, topic text, kafka_partition int, "
        "kafka_offset bigint, payload text, reason text, received_at timestamp, "
        "PRIMARY KEY ((day), topic, kafka_partition, kafka_offset))"
    )
    with (
        keyspace_of_an_earlier_release(services, "discorecs_schema_upgrade", table) as old,
        pytest.raises(CassandraError) as raised,
    ):
        apply_schema(old)
    assert str(raised.value).startswith(
        "Cassandra table discorecs_schema_upgrade.dead_letters is from an earlier release: "
        "its column payload is text, the schema declares blob. Drop the table"
    )


@pytest.mark.services
def test_columns_the_schema_added_are_added_to_a_table_from_an_earlier_release(services):
    table = (
        f"CREATE TABLE {{ks}}.{tables.RECOMMENDATIONS} (user_id bigint, run_id text, "
        "recommendation text, PRIMARY KEY ((user_id), run_id))"
    )
    with keyspace_of_an_earlier_release(services, "discorecs_schema_added", table) as old:
        assert apply_schema(old) == sorted(tables.ALL_TABLES)
        with connect(old) as connection:
            row = connection.session.execute(
                "SELECT type FROM system_schema.columns WHERE keyspace_name = "
                "'discorecs_schema_added' AND table_name = %s AND column_name = 'pick_ids'",
                (tables.RECOMMENDATIONS,),
            ).one()
        compaction = compaction_of(old, tables.RECOMMENDATIONS)
    assert row is not None and row.type == "blob"
    # the table was made with Cassandra's default compaction; it now has the schema's
    assert compaction["class"].endswith(".SizeTieredCompactionStrategy")
    assert compaction["min_threshold"] == "8"


@pytest.mark.services
def test_a_load_holds_the_compaction_and_gives_back_the_one_the_table_had(services):
    apply_schema(services)
    before = compaction_of(services, tables.RECOMMENDATIONS)
    with compaction_paused(services, tables.RECOMMENDATIONS):
        held = compaction_of(services, tables.RECOMMENDATIONS)
    assert held == {**before, "enabled": "false"}
    assert compaction_of(services, tables.RECOMMENDATIONS) == before
    with (
        pytest.raises(RuntimeError, match="load failed"),
        compaction_paused(services, tables.RECOMMENDATIONS),
    ):
        raise RuntimeError("load failed")
    assert compaction_of(services, tables.RECOMMENDATIONS) == before


@pytest.mark.services
def test_init_schema_gives_back_a_compaction_a_killed_load_held(services):
    apply_schema(services)
    before = compaction_of(services, tables.RECOMMENDATIONS)
    paused = compaction_paused(services, tables.RECOMMENDATIONS)
    paused.__enter__()  # and never left: the run was killed
    assert compaction_of(services, tables.RECOMMENDATIONS)["enabled"] == "false"
    apply_schema(services)
    assert compaction_of(services, tables.RECOMMENDATIONS) == before


@pytest.mark.services
def test_a_compaction_that_cannot_be_given_back_is_named_with_the_fix(services, monkeypatch):
    import discorecs.schema

    apply_schema(services)
    before = compaction_of(services, tables.RECOMMENDATIONS)

    def unreachable(*args, **kwargs):
        raise CassandraError("Cassandra is not reachable at 127.0.0.1")

    with (
        pytest.raises(CassandraError) as raised,
        compaction_paused(services, tables.RECOMMENDATIONS),
    ):
        monkeypatch.setattr(discorecs.schema, "connect", unreachable)  # down after the load
    monkeypatch.undo()
    assert str(raised.value).startswith(
        "the compaction of discorecs_test.recommendations_by_user is still held (the load "
        "held it; giving it back failed: Cassandra is not reachable at 127.0.0.1). Run "
        "`discorecs init-schema`"
    )
    assert compaction_of(services, tables.RECOMMENDATIONS)["enabled"] == "false"
    apply_schema(services)
    assert compaction_of(services, tables.RECOMMENDATIONS) == before


class JoiningCluster:
    """A session whose first answers come from a node that has not pulled the keyspace yet
    (a unit fake: the real race needs nodes joining at the right moment)."""

    def __init__(self, refusals: int):
        self.refusals = refusals
        self.executed: list[str] = []
        self.agreement_waits = 0
        self.cluster = self
        self.control_connection = self

    def wait_for_schema_agreement(self, wait_time=None):
        self.agreement_waits += 1
        return True

    def execute(self, statement, timeout=None):
        from types import SimpleNamespace

        from cassandra import InvalidRequest

        if self.refusals:
            self.refusals -= 1
            raise InvalidRequest("Error from server: code=2200 Keyspace 'cluster' doesn't exist")
        self.executed.append(statement)
        return SimpleNamespace(response_future=SimpleNamespace(is_schema_agreed=True))


def test_a_schema_statement_is_asked_again_while_a_new_node_lacks_the_keyspace():
    from discorecs.schema import execute_schema_statement

    session = JoiningCluster(refusals=2)
    execute_schema_statement(session, "CREATE TABLE cluster.t (k int PRIMARY KEY)")
    assert session.executed == ["CREATE TABLE cluster.t (k int PRIMARY KEY)"]
    assert session.agreement_waits == 2


def test_a_missing_keyspace_that_never_appears_is_an_error():
    from cassandra import InvalidRequest

    from discorecs.schema import execute_schema_statement

    session = JoiningCluster(refusals=1_000)
    with pytest.raises(InvalidRequest, match="doesn't exist"):
        execute_schema_statement(session, "CREATE TABLE cluster.t (k int PRIMARY KEY)", 0.0)
