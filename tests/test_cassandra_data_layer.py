"""Round trips through the project's Cassandra data layer against the real local node."""

import json
from datetime import UTC, datetime

import pytest

from discorecs import tables
from discorecs.cassandra import BATCH_BYTES, BATCH_SHARE, CassandraError, connect, data_size
from discorecs.settings import load_settings
from discorecs.statements import (
    _packed,
    _split,
    execute_grouped,
    upsert_batched,
    upsert_rows,
    values_bytes,
)

pytestmark = pytest.mark.services

RELEASE_COLUMNS = ("release_id", "title", "artists", "genres", "year", "master_id")


def test_upsert_is_idempotent_and_overwrites_by_key(services):
    rows = [
        (9001, "Kind of Blue", ["Miles Davis"], ["Jazz"], 1959, 5460),
        (9002, "Blue Train", ["John Coltrane"], ["Jazz"], 1957, None),
    ]
    with connect(services, keyspace=services.cassandra_keyspace) as connection:
        assert upsert_rows(connection, tables.RELEASES, RELEASE_COLUMNS, rows) == 2
        assert upsert_rows(connection, tables.RELEASES, RELEASE_COLUMNS, rows) == 2
        upsert_rows(
            connection, tables.RELEASES, ("release_id", "title"), [(9002, "Blue Train (RVG)")]
        )
        select = connection.prepare(
            "SELECT release_id, title, artists, genres, year, master_id FROM releases "
            "WHERE release_id IN (9001, 9002)"
        )
        found = sorted(tuple(row) for row in connection.session.execute(select))
    assert found == [
        (9001, "Kind of Blue", ["Miles Davis"], ["Jazz"], 1959, 5460),
        (9002, "Blue Train (RVG)", ["John Coltrane"], ["Jazz"], 1957, None),
    ]


def test_collections_upsert_many_rows_with_bounded_concurrency(services):
    added = datetime(2026, 11, 25, tzinfo=UTC)
    rows = [(77, release_id, added) for release_id in range(1, 2001)]
    with connect(services, keyspace=services.cassandra_keyspace) as connection:
        upsert_rows(
            connection,
            tables.COLLECTIONS,
            ("user_id", "release_id", "added_at"),
            rows,
            concurrency=16,
        )
        upsert_rows(connection, tables.COLLECTIONS, ("user_id", "release_id", "added_at"), rows)
        count = connection.session.execute(
            "SELECT COUNT(*) FROM collections WHERE user_id = 77"
        ).one()[0]
    assert count == 2000


def test_batched_upsert_writes_every_row_once_whatever_the_batch_size(services):
    added = datetime(2026, 11, 25, tzinfo=UTC)
    # 3 users x 50 releases: batches mix partitions (one node owns them all) and end unevenly.
    rows = [(user, release, added) for user in (81, 82, 83) for release in range(1, 51)]
    columns = ("user_id", "release_id", "added_at")
    with connect(services, keyspace=services.cassandra_keyspace) as connection:
        assert upsert_batched(connection, tables.COLLECTIONS, columns, rows, batch_rows=7) == 150
        assert upsert_batched(connection, tables.COLLECTIONS, columns, rows, batch_rows=1) == 150
        found = sorted(
            (row.user_id, row.release_id)
            for row in connection.session.execute(
                "SELECT user_id, release_id FROM collections WHERE user_id IN (81, 82, 83)"
            )
        )
        assert found == [(user, release) for user, release, _ in rows]
        with pytest.raises(CassandraError, match=r"a row for collections cannot be written"):
            upsert_batched(connection, tables.COLLECTIONS, columns, [(84, "one", added)])


def test_groups_are_split_per_partition_or_packed_across_them():
    groups = [[("a", (i,)) for i in range(5)], [("b", (9,))], [("c", (i,)) for i in range(4)]]
    split = [[cql for cql, _ in part] for part in _split(groups, 3)]
    assert split == [["a"] * 3, ["a"] * 2, ["b"], ["c"] * 3, ["c"]]
    packed = list(_packed(groups, 4))
    assert [len(part) for part in packed] == [4, 4, 2]
    assert [s for part in packed for s in part] == [s for group in groups for s in group]


def test_batches_stop_short_of_cassandras_batch_size_limit():
    """Cassandra refuses a batch over batch_size_fail_threshold (50 KiB by default)."""
    document = "x" * 9_000
    groups = [[("a", (i, document)) for i in range(10)], [("b", (1, document))]]
    packed = list(_packed(groups, 32))
    assert [len(part) for part in packed] == [3, 3, 3, 2]  # 3 x 9,008 bytes fit 32 KiB
    assert all(sum(values_bytes(p) for _, p in part) <= BATCH_BYTES for part in packed)
    assert [len(part) for part in _split(groups, 32)] == [3, 3, 3, 1, 1]
    assert list(_packed([[("big", ("y" * 100_000,))]], 32)) == [[("big", ("y" * 100_000,))]]


def test_collections_count_by_what_they_hold():
    """A release's artists, genres, styles, formats and labels are lists, each item a cell;
    counted as 8 bytes each, 128 releases made a batch Cassandra refused ("Batch too
    large")."""
    artists = ["a" * 100] * 10
    assert values_bytes((1, artists)) == (16 + 8) + 10 * (16 + 16 + 100)
    assert values_bytes(({"k": "v" * 50},)) == (16 + 1) + (16 + 50)
    release = (1, "t" * 50, artists, ["Jazz"], ["Modal"] * 3, ["Vinyl", "LP"])
    packed = list(_packed([[("r", release)] for _ in range(128)], 128))
    assert all(sum(values_bytes(p) for _, p in part) <= BATCH_BYTES for part in packed)
    assert len(packed) > 1


def test_sizes_read_as_cassandra_writes_them():
    assert data_size("50KiB") == 50 * 1024
    assert data_size("1MiB") == 1024 * 1024
    assert data_size("512B") == data_size("512") == 512
    assert data_size("50", "KiB") == 50 * 1024
    for text in ("50 kilobytes", "", "1.5KiB"):
        with pytest.raises(ValueError, match="not a data size"):
            data_size(text)


def test_a_connection_sizes_batches_by_what_its_node_allows(services):
    """The local node raises batch_size_fail_threshold to 320 KiB; a client that assumed
    Cassandra's default would cut a bulk load into ~6 times as many requests."""
    with connect(services, keyspace=services.cassandra_keyspace) as connection:
        assert connection.batch_bytes == int(320 * 1024 * BATCH_SHARE)
    assert BATCH_BYTES == 32 * 1024  # what a node left at the default takes


def test_large_documents_load_in_batches_cassandra_accepts(services):
    """Real 12 KB documents, 64 rows a batch asked for: without the byte bound that is a
    ~770 KB batch, which the node refuses ("Batch too large")."""
    rows = [
        (user, "run-bytes", json.dumps({"user": user, "pad": "p" * 12_000})) for user in range(64)
    ]
    columns = ("user_id", "run_id", "recommendation")
    with connect(services, keyspace=services.cassandra_keyspace) as connection:
        assert (
            upsert_batched(connection, tables.RECOMMENDATIONS, columns, rows, batch_rows=64) == 64
        )
        count = connection.prepare(
            f"SELECT COUNT(*) FROM {tables.RECOMMENDATIONS} WHERE user_id IN ? "
            "AND run_id = 'run-bytes'"
        )
        loaded = connection.session.execute(count, (list(range(64)),)).one()[0]
    assert loaded == 64


def test_grouped_writes_on_one_node_pack_users_together_and_keep_every_write(services):
    insert = (
        "INSERT INTO collections (user_id, release_id, added_at) VALUES (?, ?, ?) USING TIMESTAMP ?"
    )
    delete = "DELETE FROM collections USING TIMESTAMP ? WHERE user_id = ? AND release_id = ?"
    added = datetime(2026, 11, 25, tzinfo=UTC)
    groups = [
        [(insert, (user, release, added, 1_000 + release)) for release in range(1, user - 89)]
        for user in (91, 92, 93, 94, 95)
    ]
    # A remove later than its add, and one earlier: the write timestamps decide, not the order.
    groups.append([(delete, (2_000, 93, 1)), (delete, (500, 94, 2))])
    with connect(services, keyspace=services.cassandra_keyspace) as connection:
        assert connection.one_replica_set
        assert execute_grouped(connection, groups, what="collections", batch_size=4) == 17
        found = sorted(
            (row.user_id, row.release_id)
            for row in connection.session.execute(
                "SELECT user_id, release_id FROM collections WHERE user_id IN (91, 92, 93, 94, 95)"
            )
        )
    assert found == [
        (user, release)
        for user in (91, 92, 93, 94, 95)
        for release in range(1, user - 89)
        if (user, release) != (93, 1)
    ]


def test_bad_row_names_the_table(services):
    with connect(services, keyspace=services.cassandra_keyspace) as connection:
        with pytest.raises(CassandraError, match="writes to releases failed"):
            upsert_rows(connection, tables.RELEASES, ("release_id", "year"), [(1, "not a year")])
        with pytest.raises(ValueError, match="unknown table"):
            upsert_rows(connection, "no_such_table", ("a",), [(1,)])


def test_unreachable_cassandra_says_what_to_do(test_settings):
    from tests.conftest import free_port

    nowhere = test_settings.replace(cassandra_port=free_port())
    with pytest.raises(CassandraError, match=r"cannot reach Cassandra.*discorecs up"):
        connect(nowhere, connect_timeout=1)


def test_protocol_version_comes_from_settings(services):
    settings = load_settings(
        {
            "DISCORECS_CASSANDRA_PORT": str(services.cassandra_port),
            "DISCORECS_CASSANDRA_PROTOCOL_VERSION": "3",
        }
    )
    with connect(settings) as connection:
        assert connection.cluster.protocol_version == 3
