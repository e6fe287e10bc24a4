"""The speed layer: the pure transform, and bounded runs against the real broker, Cassandra
and Spark (a broker of its own, so other tests' events do not mix in)."""

import json
import shutil
import sys
from dataclasses import replace
from datetime import UTC, datetime
from types import SimpleNamespace

import numpy as np
import pyarrow as pa
import pyarrow.dataset as ds
import pytest
from kafka import KafkaProducer

from discorecs import paths, tables, topics
from discorecs.cassandra import connect
from discorecs.catalog.index import CatalogIndex
from discorecs.catalog.ingest import current_catalog
from discorecs.events import Event, EventKind
from discorecs.genres import scores_and_shares
from discorecs.services.broker import KafkaBroker
from discorecs.tables import LIVE_CHANGE_FIELDS, RELEASE_FIELDS, packed_release_ids
from discorecs.users.population import write_population
from kafka_cluster_scripts.topics import create_topics
from spark_jobs.transforms import latest_events
from streaming import StreamError
from streaming.apply import change_times, holding_events, ingest_dates
from streaming.job import by_user, load_reference, process_batch, start_stream
from streaming.lag import end_offsets, lag_behind, offset_positions
from streaming.live import (
    GENRE_UNITS,
    LATEST_CHANGES,
    Change,
    LiveProfile,
    change_time,
    deciding_events,
    latest_changes,
    next_profile,
)
from streaming.store import StreamProgress, read_collections, read_live_rows
from streaming.transform import mark_records
from tests.conftest import free_port
from tests.test_stream_marking import T, event, raw_records, user_key
from webapp import create_app

pytestmark = pytest.mark.spark


def raw_rows(spark, payloads):
    rows = [
        ("collection_events", 0, offset, user_key(payload), payload, T)
        for offset, payload in enumerate(payloads)
    ]
    return spark.createDataFrame(
        rows,
        "topic string, kafka_partition int, kafka_offset long, "
        "key binary, value binary, timestamp timestamp",
    )


CATALOG_SCHEMA = pa.schema(
    [
        ("release_id", pa.int64()),
        ("genres", pa.list_(pa.string())),
        ("styles", pa.list_(pa.string())),
    ]
)


def catalog_of(genres: dict[int, list[str]]) -> CatalogIndex:
    """A catalog index of the given releases and their genres (no styles)."""
    rows = [{"release_id": r, "genres": g, "styles": []} for r, g in genres.items()]
    return CatalogIndex.from_arrow(pa.Table.from_pylist(rows, schema=CATALOG_SCHEMA))


def test_add_then_remove_in_one_batch_is_a_remove(spark):
    payloads = [
        event("a", 1, 10, EventKind.COLLECTION_ADD, 1),
        event("b", 1, 10, EventKind.COLLECTION_REMOVE, 2),
        event("c", 1, 11, EventKind.COLLECTION_REMOVE, 1),
        event("d", 1, 11, EventKind.COLLECTION_ADD, 3),
        event("d", 1, 11, EventKind.COLLECTION_ADD, 3),
    ]
    marked = mark_records(raw_records(payloads), np.array([1]), np.array([10, 11]))
    valid = spark.createDataFrame(
        [
            (r["event_id"], r["user_id"], r["release_id"], r["kind"], r["event_time"])
            for r in marked.to_pylist()
            if r["reason"] is None
        ],
        "event_id string, user_id long, release_id long, kind string, event_time timestamp",
    )
    changes = latest_events(valid, "collection_add", "collection_remove")
    assert sorted((r.release_id, r.kind) for r in changes.collect()) == [
        (10, "collection_remove"),
        (11, "collection_add"),
    ]


def test_deciding_events_picks_the_event_latest_events_keeps(spark):
    rows = [
        ("a", 1, 10, "collection_add", 1),
        ("b", 1, 10, "collection_remove", 2),  # decides 10
        ("c", 1, 11, "collection_add", 3),  # decides 11 (the remove is older)
        ("d", 1, 11, "collection_remove", 1),
        ("e", 1, 12, "collection_add", 4),  # equal times: the remove wins
        ("f", 1, 12, "collection_remove", 4),
        ("g", 1, 14, "wantlist_add", 9),  # not a collection event
        ("h", 2, 10, "collection_add", 5),  # another user
        ("i", 2, 10, "collection_add", 5),  # equal times and kinds: the larger event id
    ]
    events = [
        SimpleNamespace(event_id=i, user_id=u, release_id=r, kind=k, event_time=T.replace(minute=m))
        for i, u, r, k, m in rows
    ]
    add, remove = "collection_add", "collection_remove"
    decided = deciding_events(events, add, remove)
    assert {user: sorted(pairs) for user, pairs in decided.items()} == {
        1: [(10, False), (11, True), (12, False)],
        2: [(10, True)],
    }
    frame = spark.createDataFrame(
        [(e.event_id, e.user_id, e.release_id, e.kind, e.event_time) for e in events],
        "event_id string, user_id long, release_id long, kind string, event_time timestamp",
    )
    kept = latest_events(frame, add, remove).collect()
    assert sorted((r.user_id, r.release_id, r.kind == add) for r in kept) == sorted(
        (user, release, is_add) for user, pairs in decided.items() for release, is_add in pairs
    )


def test_the_apply_pass_takes_the_valid_collection_and_wantlist_events():
    moment = T.replace(second=5, microsecond=120_000)  # events carry milliseconds
    payloads = [
        event("a", 1, 10, EventKind.COLLECTION_ADD, minute=3),
        event("p", 1, 10, EventKind.PLAY),  # master dataset only
        b"{not json",  # a dead letter
        Event("w", 2, 11, EventKind.WANTLIST_REMOVE, moment).to_json(),
        event("u", 99, 10, EventKind.WANTLIST_ADD),  # unknown user: a dead letter
    ]
    marked = mark_records(
        raw_records(payloads), np.array([1, 2], np.int64), np.array([10, 11], np.int64)
    )
    events = holding_events(pa.Table.from_batches([marked]))
    assert [tuple(e) for e in events] == [
        (1, 10, "collection_add", "a", 1_795_608_180_000_000, "2026-11-25T12:03:00.000000+00:00"),
        (2, 11, "wantlist_remove", "w", 1_795_608_005_120_000, change_time(moment)),
    ]


def test_change_times_and_ingest_dates_format_a_whole_column_as_python_does():
    moments = [
        T,
        T.replace(microsecond=5),
        datetime(1999, 12, 31, 23, 59, 59, 999_999, tzinfo=UTC),
        datetime(2027, 1, 1, tzinfo=UTC),
    ]
    column = pa.array([*moments, None], pa.timestamp("us", tz="UTC"))
    assert change_times(column).to_pylist() == [*map(change_time, moments), None]
    assert change_times(column).to_pylist()[1] == "2026-11-25T12:00:00.000005+00:00"
    assert ingest_dates(column).to_pylist() == [
        "2026-11-25",
        "2026-11-25",
        "1999-12-31",
        "2027-01-01",
        None,
    ]


CATALOG = catalog_of(
    {13: ["Rock", "Pop", "Jazz"], 10: ["Jazz", "Funk / Soul"], 11: ["Jazz"], 12: []}
)
CHANGE = Change(change_time(T), "e-1", "wantlist_add", 13)


def test_a_live_profile_starts_from_a_collection_and_adds_exact_genre_units():
    start = LiveProfile.of_collection([10, 12, 404], CATALOG)  # 404: not in the catalog
    assert start == LiveProfile(
        frozenset({10, 12, 404}), {"Funk / Soul": GENRE_UNITS // 2, "Jazz": GENRE_UNITS // 2}
    )
    decided = [
        (11, True),  # new: counts
        (10, True),  # already held: nothing
        (12, False),  # held, no genre: only the size changes
        (13, True),
        (99, False),  # not held: nothing
    ]
    after = next_profile(start, decided, CATALOG)
    third = GENRE_UNITS // 3
    assert after == LiveProfile(
        frozenset({10, 11, 13, 404}),
        {
            "Jazz": GENRE_UNITS // 2 + GENRE_UNITS + third,
            "Funk / Soul": GENRE_UNITS // 2,
            "Rock": third,
            "Pop": third,
        },
    )
    assert after.collection_size == 4
    assert after.scores["Jazz"] == 1.5 + 1 / 3 and after.scores["Rock"] == 1 / 3
    assert abs(sum(after.shares.values()) - 1.0) < 1e-12
    # The profile equals the one computed from the whole collection in one pass.
    assert after == LiveProfile.of_collection([10, 11, 13, 404], CATALOG)


def test_removing_the_last_record_leaves_an_empty_profile():
    start = LiveProfile.of_collection([10], CATALOG)
    after = next_profile(start, [(10, False)], CATALOG)
    assert (after.collection_size, after.genre_units, after.scores, after.shares) == (
        0,
        {},
        {},
        {},
    )
    assert next_profile(after, [(10, False)], CATALOG) == after


def test_genre_units_of_an_empty_catalog_are_empty():
    empty = catalog_of({})
    assert LiveProfile.of_collection([1, 2], empty) == LiveProfile(frozenset({1, 2}), {})


def test_a_live_row_stores_the_profile_and_its_holdings():
    change = CHANGE
    profile = replace(LiveProfile.of_collection([13, 10, 2**40], CATALOG), changes=(change,))
    blob = profile.holdings_blob()
    assert blob[:8] == (10).to_bytes(8, "big") and len(blob) == 24  # sorted, 8 bytes each
    assert LiveProfile.of_row(profile.document(), blob) == profile
    document = json.loads(profile.document())
    assert document == {
        "collection_size": 3,
        "genre_units": {
            "Funk / Soul": GENRE_UNITS // 2,
            "Jazz": GENRE_UNITS // 2 + GENRE_UNITS // 3,
            "Pop": GENRE_UNITS // 3,
            "Rock": GENRE_UNITS // 3,
        },
        "latest_changes": [["2026-11-25T12:00:00.000000+00:00", "e-1", "wantlist_add", 13]],
    }
    # What the site shows is derived from the units.
    scores, shares = scores_and_shares(document["genre_units"])
    assert scores == profile.scores and abs(scores["Jazz"] - (0.5 + 1 / 3)) < 1e-12
    assert shares == profile.shares and abs(sum(shares.values()) - 1.0) < 1e-12
    assert LiveProfile.of_row(None, None) == LiveProfile()
    # A row written when changes were objects reads the same.
    older = json.dumps(
        {
            "collection_size": 3,
            "genre_units": profile.genre_units,
            "scores": profile.scores,
            "latest_changes": [dict(zip(LIVE_CHANGE_FIELDS, CHANGE, strict=True))],
        }
    )
    assert LiveProfile.of_row(older, blob) == profile
    # The same profile is the same text, whatever order its genres were added in.
    units = list(profile.genre_units.items())
    reordered = replace(profile, genre_units=dict(reversed(units)))
    assert len(units) > 1 and reordered.document() == profile.document()


def test_a_live_row_keeps_the_latest_changes_however_batches_split_them():
    times = [change_time(T.replace(minute=m, microsecond=999 * m)) for m in range(14)]
    changes = [Change(times[m], f"e-{m:02d}", "collection_add", m) for m in range(14)]
    changes.append(Change(times[13], "e-13b", "wantlist_remove", 99))  # the same time
    newest_first = [changes[13], changes[14], *reversed(changes[3:13])][:LATEST_CHANGES]
    assert latest_changes(changes) == tuple(newest_first)
    assert latest_changes(changes[:7], changes[5:], changes[12:13]) == tuple(newest_first)
    start = LiveProfile.of_collection([10], CATALOG)
    after = start
    for part in (changes[:4], changes[4:9], [], changes[9:]):
        after = next_profile(after, [], CATALOG, part)
        assert (after.holdings, after.genre_units) == (start.holdings, start.genre_units)
    assert after.changes == tuple(newest_first)
    assert next_profile(after, [], CATALOG, changes[12:]) == after  # replayed events count once


class AsOnACluster:
    """The same connection, but reporting more than one node (the per-user read path)."""

    one_replica_set = False

    def __init__(self, connection):
        self.session, self.prepare = connection.session, connection.prepare


@pytest.mark.services
def test_live_row_and_collection_reads_agree_on_one_node_and_on_a_cluster(services):
    stored = {7101: LiveProfile.of_collection([10, 11], CATALOG), 7102: LiveProfile()}
    with connect(services, keyspace=services.cassandra_keyspace) as connection:
        for user, profile in stored.items():
            connection.session.execute(
                "INSERT INTO recommendations_by_user (user_id, profile, holdings, stream_id, "
                "batch_id) VALUES (%s, %s, %s, 'query-1', 4)",
                (user, profile.document(), profile.holdings_blob()),
            )
            for release in profile.holdings:
                connection.session.execute(
                    "INSERT INTO collections (user_id, release_id) VALUES (%s, %s)",
                    (user, release),
                )
        assert connection.one_replica_set
        users = [7101, 7102, 7104]  # 7104 has no live row
        both = (connection, AsOnACluster(connection))
        results = [read_live_rows(c, users) for c in both]
        collections = [read_collections(c, users) for c in both]
    for found in collections:
        assert {user: sorted(releases) for user, releases in found.items()} == {
            7101: [10, 11],
            7102: [],
            7104: [],
        }
    for live in results:
        assert set(live) == {7101, 7102}
        assert {user: LiveProfile.of_row(r.profile, r.holdings) for user, r in live.items()} == (
            stored
        )
        assert (live[7101].stream_id, live[7101].batch_id) == ("query-1", 4)


def poison(user: int, release: int) -> dict[bytes, str]:
    """Records that once stopped the stream for good (or were applied where they should not
    be), each with the topic it is sent to."""

    def raw(**fields):
        values = {"event_id": "p", "user_id": user, "release_id": release}
        return json.dumps({**values, "kind": "collection_add", **fields}).encode()

    return {
        raw(event_id="p-big", user_id=2**63): topics.COLLECTION_EVENTS,
        raw(event_id="p-early", event_time="0001-01-01T00:00:00+01:00"): topics.COLLECTION_EVENTS,
        raw(event_id="p-future", event_time="2999-01-01T00:00:00Z"): topics.COLLECTION_EVENTS,
        raw(event_id="p-topic", kind="wantlist_add"): topics.COLLECTION_EVENTS,
        raw(event_id="\ud800", event_time=T.isoformat()): topics.COLLECTION_EVENTS,
        b'{"event_id": ' + b"[" * 5000 + b"]" * 5000 + b"}": topics.ACTIVITY_EVENTS,
        b"\xff\xfe\x00 not utf-8": topics.ACTIVITY_EVENTS,
    }


@pytest.fixture(scope="module")
def stream_world(services, small_catalog, tmp_path_factory):
    """A data root with catalog and users, a broker of its own with known events in it."""
    root = tmp_path_factory.mktemp("stream") / "data"
    shutil.copytree(small_catalog, root / "catalog" / "releases")
    write_population(small_catalog, root / "users", 50, seed=31, say=lambda m: None)
    settings = services.replace(
        data_root=str(root),
        kafka_bootstrap_servers=(f"127.0.0.1:{free_port()}",),
        kafka_controller_port=free_port(),
        home=tmp_path_factory.mktemp("stream-home"),
    )
    broker = KafkaBroker(settings)
    broker.start()
    create_topics(settings, partitions=2)
    collections = ds.dataset(root / "users" / "collections").to_table().to_pylist()
    user = collections[0]["user_id"]
    owned = {r["release_id"] for r in collections if r["user_id"] == user}
    catalog = ds.dataset(small_catalog).to_table(columns=["release_id"])["release_id"].to_pylist()
    new = [r for r in catalog if r not in owned][:2]
    removed = sorted(owned)[0]
    events = [
        Event("s-1", user, new[0], EventKind.COLLECTION_ADD, T),
        Event("s-2", user, removed, EventKind.COLLECTION_REMOVE, T),
        Event("s-3", user, new[1], EventKind.WANTLIST_ADD, T),
        Event("s-4", user, new[1], EventKind.PLAY, T),
    ]
    producer = KafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers[0])
    for e in events:
        producer.send(e.topic, key=e.key, value=e.to_json())
    producer.send(topics.COLLECTION_EVENTS, key=b"x", value=b"{broken")
    for payload, topic in poison(user, new[0]).items():
        producer.send(topic, key=str(user).encode(), value=payload)
    producer.send(
        topics.COLLECTION_EVENTS,
        key=b"1",
        value=Event("s-5", 10**9, new[0], EventKind.COLLECTION_ADD, T).to_json(),
    )
    producer.flush()
    producer.close()
    yield settings, user, new, removed
    broker.stop()


@pytest.mark.services
def test_a_bounded_run_applies_events_and_dead_letters_the_rest(spark, stream_world):
    settings, user, new, removed = stream_world
    query = start_stream(spark, settings, available_now=True, say=lambda m: None)
    query.awaitTermination(240)
    assert query.exception() is None
    with connect(settings, keyspace=settings.cassandra_keyspace) as connection:

        def rows(cql, *args):
            return connection.session.execute(cql, args).all()

        owned = {
            r.release_id
            for r in rows("SELECT release_id FROM collections WHERE user_id = %s", user)
        }
        wanted = {
            r.release_id for r in rows("SELECT release_id FROM wantlists WHERE user_id = %s", user)
        }
        dead = rows(
            "SELECT payload, reason FROM dead_letters WHERE day = %s",
            datetime.now(UTC).strftime("%Y-%m-%d"),
        )
        row = rows("SELECT * FROM recommendations_by_user WHERE user_id = %s", user)[0]
    live = LiveProfile.of_row(row.profile, row.holdings)
    catalog = current_catalog(settings).dataset().to_table().to_pylist()
    genres = {r["release_id"]: r["genres"] for r in catalog}
    expected: dict[str, float] = {}
    for release in owned:
        for genre in genres[release]:
            expected[genre] = expected.get(genre, 0) + 1 / len(genres[release])
    assert live.holdings == owned  # the stream's state agrees with the collection it wrote
    assert json.loads(row.profile)["collection_size"] == len(owned)
    assert live.scores.keys() == expected.keys()
    assert all(abs(live.scores[g] - expected[g]) < 1e-6 for g in expected)
    assert new[0] in owned and removed not in owned
    assert new[1] in wanted
    assert [Change(*c).event_id for c in live.changes] == ["s-1", "s-2", "s-3"]  # no plays
    reasons = {d.payload: d.reason for d in dead}
    assert reasons[b"{broken"].startswith("not JSON")
    assert [r for p, r in reasons.items() if b'"s-5"' in p] == [f"unknown user {10**9}"]
    assert set(poison(user, new[0])) <= reasons.keys()  # each kept byte for byte
    assert len(dead) == len(poison(user, new[0])) + 2
    assert reasons[b"\xff\xfe\x00 not utf-8"].startswith("not UTF-8: byte 0xff at offset 0")
    log = (
        ds.dataset(paths.event_log(settings.data_root), format="parquet", partitioning="hive")
        .to_table()
        .to_pylist()
    )
    assert sorted(r["event_id"] for r in log) == ["s-1", "s-2", "s-3", "s-4"]


@pytest.mark.services
def test_a_replayed_micro_batch_changes_nothing(spark, stream_world):
    settings, user, new, _ = stream_world
    ids, batch = "k", 910
    reference = load_reference(spark, settings)
    payloads = [Event(f"{ids}-1", user, new[1], EventKind.COLLECTION_ADD, T).to_json()]
    raw = raw_rows(spark, payloads)
    first = process_batch(spark, settings, reference, raw, batch, lambda m: None)
    again = process_batch(spark, settings, reference, raw, batch, lambda m: None)
    assert first == again
    assert first == {
        "input_rows": 1,
        "valid_rows": 1,
        "dead_lettered": 0,
        "upserts": 1,
        "live_profiles": 1,
    }
    log = (
        ds.dataset(paths.event_log(settings.data_root), format="parquet", partitioning="hive")
        .to_table()
        .to_pylist()
    )
    assert [r["event_id"] for r in log].count(f"{ids}-1") == 1
    with connect(settings, keyspace=settings.cassandra_keyspace) as connection:
        count = connection.session.execute(
            "SELECT COUNT(*) FROM collections WHERE user_id = %s AND release_id = %s",
            (user, new[1]),
        ).one()[0]
    assert count == 1

    # The next batch starts the user's profile from its task's cache (saved by the batch
    # before), not from Cassandra, and gets the profile of the whole collection all the same.
    catalog = current_catalog(settings).dataset().to_table(columns=["release_id"])
    release = next(r for r in catalog["release_id"].to_pylist() if r not in new)
    said: list[str] = []
    payloads = [Event(f"{ids}-2", user, release, EventKind.COLLECTION_ADD, T).to_json()]
    process_batch(spark, settings, reference, raw_rows(spark, payloads), batch + 1, said.append)
    assert "1 live profiles (1 from the cache)" in said[0]
    with connect(settings, keyspace=settings.cassandra_keyspace) as connection:
        owned = [
            r.release_id
            for r in connection.session.execute(
                "SELECT release_id FROM collections WHERE user_id = %s", (user,)
            )
        ]
        row = connection.session.execute(
            "SELECT profile, holdings FROM recommendations_by_user WHERE user_id = %s", (user,)
        ).one()
    live = LiveProfile.of_row(row.profile, row.holdings)
    whole = LiveProfile.of_collection(owned, load_reference(spark, settings).catalog.value)
    assert release in owned and new[1] in owned
    assert (live.holdings, live.genre_units) == (whole.holdings, whole.genre_units)
    assert [Change(*c).event_id for c in live.changes][:2] == [f"{ids}-1", f"{ids}-2"]


def release_details(release_id: int, title: str) -> dict:
    """A release as a stored answer holds it (``tables.RELEASE_FIELDS``)."""
    listed = {"artists", "genres", "styles", "formats"}
    values = {name: [] if name in listed else None for name in RELEASE_FIELDS}
    return {**values, "release_id": release_id, "title": title}


@pytest.mark.services
def test_the_site_leaves_out_picks_the_stream_applied_since_the_run(spark, stream_world):
    """The serving layer merges the views: the user's stored answer recommends the release
    the stream then added (s-1) and the one it wantlisted (s-3); once the micro-batch is
    applied, the API and the page show the next picks instead and say so."""
    settings, user, new, _ = stream_world
    query = start_stream(spark, settings, available_now=True, say=lambda m: None)
    query.awaitTermination(240)  # (applied already if the bounded run came first)
    with connect(settings, keyspace=settings.cassandra_keyspace) as connection:
        held = {
            row.release_id
            for table in (tables.COLLECTIONS, tables.WANTLISTS)
            for row in connection.session.execute(
                f"SELECT release_id FROM {table} WHERE user_id = %s", (user,)
            )
        }
    assert {new[0], new[1]} <= held
    catalog = current_catalog(settings).dataset().to_table().to_pylist()
    others = [r["release_id"] for r in catalog if r["release_id"] not in held][:12]
    ranked = [others[0], new[0], new[1], *others[1:]]  # 14 picks: 10 shown and spares
    picks = [
        {"release": release_details(r, f"Release {r}"), "score": 1.0, "reason": ""} for r in ranked
    ]
    run = "20261203T000000Z-merged"
    answer = {
        "run_id": run,
        "generated_at": "2026-12-03T00:00:00.000000+00:00",
        "friend": None,
        "other_friends": [],
        "releases": picks[:10],
        "left_out": [],
    }
    spares = picks[10:]
    with connect(settings, keyspace=settings.cassandra_keyspace) as connection:
        session = connection.session
        published = session.execute(
            f"SELECT run_id, published_at FROM {tables.PUBLISHED_RUNS} WHERE scope = %s",
            (tables.BATCH_SCOPE,),
        ).one()
        session.execute(
            f"INSERT INTO {tables.RECOMMENDATIONS} (user_id, run_id, recommendation, "
            "spare_picks, pick_ids) VALUES (%s, %s, %s, %s, %s)",
            (user, run, json.dumps(answer), json.dumps(spares), packed_release_ids(ranked)),
        )
        session.execute(  # the page's user row (the population was not loaded here)
            f"INSERT INTO {tables.USERS} (user_id, name) VALUES (%s, 'Stream Tester')", (user,)
        )
        session.execute(
            f"INSERT INTO {tables.PUBLISHED_RUNS} (scope, run_id, published_at) VALUES "
            "(%s, %s, toTimestamp(now()))",
            (tables.BATCH_SCOPE, run),
        )
        try:
            app = create_app({"TESTING": True}, settings=settings)
            api = app.test_client().get(f"/api/users/{user}/recommendations").get_json()
            page = app.test_client().get(f"/users/{user}").get_data(as_text=True)
            app.extensions["repository"].close()
        finally:
            if published is not None:  # the run other tests serve
                session.execute(
                    f"INSERT INTO {tables.PUBLISHED_RUNS} (scope, run_id, published_at) VALUES "
                    "(%s, %s, %s)",
                    (tables.BATCH_SCOPE, published.run_id, published.published_at),
                )
    shown = [pick["release"]["release_id"] for pick in api["releases"]]
    assert shown == [others[0], *others[1:10]]  # the next picks took their places
    assert api["left_out"] == [new[0], new[1]]
    assert "Adjusted since the nightly run: 2 picks you have added or wanted" in page
    assert f"Release {new[0]}<" not in page and f"Release {others[9]}<" in page


def test_a_users_events_go_to_one_task_the_same_one_batch_after_batch(spark):
    """What the apply pass and the live cache rely on: a batch's records, shuffled by their
    Kafka key (the user id), put every event of a user in one task, and a later batch puts
    them in the same task, whichever topic and partition they came from."""
    from pyspark.sql import functions as F

    def tasks_of_users(rows):
        frame = spark.createDataFrame(rows, "topic string, kafka_partition int, key binary")
        placed = by_user(frame, 2).select("key", F.spark_partition_id().alias("task"))
        tasks: dict[bytes, set[int]] = {}
        for row in placed.collect():
            tasks.setdefault(bytes(row.key), set()).add(row.task)
        return tasks

    first = tasks_of_users(
        [
            (topic, user % partitions, str(user).encode())
            for user in range(1, 201)
            for topic, partitions in (("collection_events", 4), ("activity_events", 6))
        ]
    )
    later = tasks_of_users(
        [("activity_events", user % 3, str(user).encode()) for user in range(1, 201, 7)]
    )
    assert all(len(tasks) == 1 for tasks in first.values())
    assert all(later[key] == first[key] for key in later)
    assert {task for tasks in first.values() for task in tasks} == {0, 1}  # both tasks used


def test_spark_kafka_end_offsets_become_positions():
    assert offset_positions('{"a": {"0": 5, "1": 7}, "b": {"0": 0}}') == {
        "a:0": 5,
        "a:1": 7,
        "b:0": 0,
    }
    assert offset_positions(None) == {}


def test_the_write_plan_of_each_kind_of_row():
    from streaming import store

    at = datetime(2026, 11, 25, 12, 0)
    invalid = {
        "topic": "t",
        "kafka_partition": 1,
        "kafka_offset": 9,
        "payload": "{x",
        "reason": "not JSON",
    }
    dead = store.dead_letter(invalid, "2026-11-25", at)
    assert dead == (store.DEAD_LETTER, ("2026-11-25", "t", 1, 9, "{x", "not JSON", at))
    add = store.holding_write("collection_add", 1, 2, 1_764_072_000_123_456)
    assert add[0].startswith("INSERT INTO collections") and "USING TIMESTAMP" in add[0]
    assert add[1] == (1, 2, 1_764_072_000_123, 1_764_072_000_123_456)  # added_at in ms
    remove = store.holding_write("wantlist_remove", 1, 2, 5)
    assert remove == (store.HOLDING_WRITES["wantlist_remove"], (5, 1, 2))
    assert remove[0].startswith("DELETE FROM wantlists USING TIMESTAMP")
    assert "play" not in store.HOLDING_WRITES


def create_topic(bootstrap: list[str], topic: str, partitions: int) -> str:
    from kafka.admin import KafkaAdminClient, NewTopic

    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    admin.create_topics([NewTopic(topic, num_partitions=partitions, replication_factor=1)])
    admin.close()
    return topic


@pytest.mark.services
def test_the_lag_is_what_the_broker_holds_beyond_the_positions(services):
    bootstrap = list(services.kafka_bootstrap_servers)
    topic = create_topic(bootstrap, "discorecs-test-lag", partitions=3)
    producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
    start: dict[str, int] = {}
    produced = 0
    for round_size in (3_000, 20_000, 7):
        for i in range(round_size):
            producer.send(topic, key=str(i).encode(), value=b"x" * 150)
        producer.flush()
        produced += round_size
        ends = end_offsets(bootstrap, [topic])
        assert sorted(ends) == [f"{topic}:{p}" for p in range(3)]
        assert sum(ends.values()) == produced
        assert lag_behind(bootstrap, [topic], start) == round_size
        start = ends
    producer.close()


@pytest.mark.services
def test_stream_progress_writes_until_closed_and_never_reopens(services):
    """The listener may deliver a progress event after the stream has ended: once closed,
    the store refuses it rather than open a connection nobody would close."""
    progress = StreamProgress(services)
    batch_id = 900_000 + free_port() % 1000
    counts = {"input_rows": 5, "valid_rows": 4, "dead_lettered": 1, "upserts": 4}
    progress.record(batch_id, counts, duration_ms=12)
    progress.record_lag(batch_id, 7)
    with connect(services, keyspace=services.cassandra_keyspace) as connection:
        row = connection.session.execute(
            f"SELECT input_rows, lag FROM {tables.STREAM_PROGRESS} "
            "WHERE query_name = %s AND batch_id = %s",
            (tables.STREAM_QUERY, batch_id),
        ).one()
    assert (row.input_rows, row.lag) == (5, 7)
    progress.close()
    with pytest.raises(StreamError, match="has stopped"):
        progress.record_lag(batch_id, 8)
    assert progress._connection is None


def test_a_live_cache_is_trusted_only_straight_after_the_batch_before(tmp_path, monkeypatch):
    from streaming import live_cache
    from streaming.live_cache import CopyState, LiveCache

    cache = LiveCache(tmp_path / "copies" / "query-2-0.pickle")
    assert cache.load(7) == (CopyState.COLD, {})  # nothing saved yet
    first = replace(LiveProfile.of_collection([10, 11], CATALOG), changes=(CHANGE,))
    kept = {1: live_cache.entry(6, first), 2: live_cache.entry(3, LiveProfile())}
    assert live_cache.profile_of(kept[1]) == first  # what the copy keeps is the profile
    cache.save(6, kept)
    assert cache.load(7) == (CopyState.CURRENT, kept)
    assert cache.load(6) == (CopyState.APPLIED, kept)  # a replay of the batch that saved it
    assert cache.load(8) == (CopyState.COLD, {})  # batch 7 ran elsewhere: a gap
    assert cache.load(5) == (CopyState.COLD, {})
    monkeypatch.setattr(live_cache, "KEPT_USERS", 1)
    cache.save(7, kept)
    assert cache.load(8) == (CopyState.CURRENT, {1: kept[1]})  # the most recently written
    cache.save(8, kept)
    live_cache._SAVED.clear()  # as another worker process finds it: read from the file
    assert cache.load(9) == (CopyState.CURRENT, {1: kept[1]})
    cache.path.write_bytes(b"not a pickle")
    assert cache.load(8) == (CopyState.COLD, {})
    assert list(cache.path.parent.iterdir()) == [cache.path]  # no partial file left


def test_a_failed_query_is_reported_by_the_exception_that_caused_it():
    from streaming.job import failure_reason

    text = """[STREAM_FAILED] Query [id = q, runId = r] terminated with exception: \
[FOREACH_BATCH_USER_FUNCTION_ERROR] An error occurred in the user provided function in \
foreach batch sink. Reason: An exception was raised by the Python Proxy. Return Message: \
Traceback (most recent call last):
  File "/x/py4j/clientserver.py", line 644, in _call_proxy
py4j.protocol.Py4JJavaError: An error occurred while calling o412.parquet.
: org.apache.spark.SparkException: Job aborted due to stage failure: Task 1 in stage 9.0 \
failed 1 times, most recent failure: Lost task 1.0 (TID 18): \
org.apache.spark.api.python.PythonException: Traceback (most recent call last):
  File "/x/streaming/job.py", line 380, in apply_partition
discorecs.cassandra.CassandraError: 2 of 40 writes to the stream's tables failed; first: x

\tat org.apache.spark.api.python.BasePythonRunner.handlePythonException(Runner.scala:1)
Caused by: java.net.SocketTimeoutException: Read timed out
"""
    reason = failure_reason(text)
    assert reason.startswith("[STREAM_FAILED] Query [id = q, runId = r]")
    assert reason.endswith(
        "discorecs.cassandra.CassandraError: 2 of 40 writes to the stream's tables failed; first: x"
    )
    # Only the JVM's own exceptions: the last of them; nothing at all: the first line.
    assert failure_reason("boom\nCaused by: java.io.IOException: disk full") == (
        "boom ... java.io.IOException: disk full"
    )
    assert failure_reason("it stopped\n") == "it stopped"
    assert failure_reason("java.io.IOException: disk full") == "java.io.IOException: disk full"
    assert failure_reason("") == "no reason given"


def test_the_apply_pass_pauses_the_garbage_collector_and_restores_it():
    import gc

    from discorecs.python_workers import collector_paused

    assert gc.isenabled()
    with pytest.raises(RuntimeError), collector_paused():
        assert not gc.isenabled()
        raise RuntimeError("a failed pass")
    assert gc.isenabled()  # back on after a failure too
    gc.disable()
    try:
        with collector_paused():
            pass
        assert not gc.isenabled()  # left as it was found
    finally:
        gc.enable()


def test_a_task_freezes_what_the_worker_keeps_only_when_it_has_new_modules(monkeypatch):
    import gc
    import types

    from discorecs import python_workers

    monkeypatch.setattr(python_workers, "_modules_at_freeze", 0)
    try:
        python_workers.task_started()  # a fresh worker's first task: everything it holds
        frozen = gc.get_freeze_count()
        assert frozen > 1_000
        kept = [[] for _ in range(500)]  # containers made since, by a task
        python_workers.task_started()  # no module imported since: nothing more is frozen
        # (the count may drop meanwhile: a frozen object another thread lets go is freed)
        assert gc.get_freeze_count() <= frozen
        monkeypatch.setitem(sys.modules, "discorecs_freshly_imported", types.ModuleType("x"))
        python_workers.task_started()  # a task imported a library: freeze again
        assert gc.get_freeze_count() >= frozen + len(kept)
    finally:
        gc.unfreeze()
