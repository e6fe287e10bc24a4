"""The CQL schema: one table per query, inside the subset Cassandra 2.1 and 4.1/5.0 share."""

import re

import pytest

from cassandra_schema import SCHEMA_FILE, table_statements
from discorecs import tables
from discorecs.cassandra import apply_schema, connect, schema_script

# Features Cassandra 2.1 rejects (see the local-infrastructure notes).
REJECTED_BY_2_1 = [
    r"\bdate\b",
    r"\btime\b",
    r"\bsmallint\b",
    r"\btinyint\b",
    r"\bduration\b",
    r"MATERIALIZED VIEW",
    r"PER PARTITION LIMIT",
    r"GROUP BY",
    r"SELECT JSON",
    r"CREATE FUNCTION",
    r"CREATE AGGREGATE",
    r"(?<!frozen<)tuple<",
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


def test_schema_stays_inside_the_cql_subset_of_cassandra_2_1():
    for statement in table_statements():
        for pattern in REJECTED_BY_2_1:
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


@pytest.mark.services
def test_schema_applies_twice_against_real_cassandra(services):
    first = apply_schema(services)
    second = apply_schema(services)
    assert first == second == sorted(tables.ALL_TABLES)
    with connect(services, keyspace=services.cassandra_keyspace) as connection:
        columns = {
            row.column_name if hasattr(row, "column_name") else row.column
            for row in connection.session.execute(
                "SELECT * FROM system.schema_columns WHERE keyspace_name = %s "
                "AND columnfamily_name = %s",
                (services.cassandra_keyspace, tables.RECOMMENDATIONS),
            )
        }
    assert columns == set(tables.RECOMMENDATION_COLUMNS)
