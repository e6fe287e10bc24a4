"""The batch's pure transforms on tiny inline data, with exact expected rows."""

import json
from datetime import UTC, datetime

import pytest

from spark_jobs import transforms as t
from spark_jobs.friends import best_friends, candidate_friends
from spark_jobs.releases import flat_picks, pick_lists, popularity

pytestmark = pytest.mark.spark

T0 = datetime(2026, 1, 1)


def at(hour: int) -> datetime:
    return datetime(2026, 1, 1, hour)


def releases(spark):
    return spark.createDataFrame(
        [
            (1, ["Jazz"], ["Hard Bop"]),
            (2, ["Jazz", "Funk / Soul"], ["Soul-Jazz"]),
            (3, ["Rock"], ["Punk"]),
            (4, ["Rock", "Pop"], ["Power Pop", "Punk"]),
            (5, [], []),
            (6, ["Jazz"], ["Hard Bop"]),
            (7, ["Funk / Soul"], ["Soul"]),
        ],
        "release_id long, genres array<string>, styles array<string>",
    )


def holdings(spark, rows):
    return spark.createDataFrame(
        rows, "user_id long, release_id long, added_at timestamp, changed_at timestamp"
    )


def events(spark, rows):
    return spark.createDataFrame(
        rows, "event_id string, user_id long, release_id long, kind string, event_time timestamp"
    )


def collect(df, *order):
    return [tuple(row) for row in df.orderBy(*order).collect()]


def test_events_apply_in_event_time_order(spark):
    snapshot = holdings(spark, [(1, 10, T0, None), (1, 11, T0, None), (2, 10, T0, at(5))])
    log = events(
        spark,
        [
            ("e1", 1, 12, "collection_add", at(1)),
            ("e2", 1, 12, "collection_remove", at(2)),  # add then remove: gone
            ("e3", 1, 10, "collection_remove", at(3)),
            ("e4", 1, 10, "collection_add", at(4)),  # remove then add: kept
            ("e5", 1, 11, "collection_remove", at(2)),  # removed
            ("e6", 2, 10, "collection_remove", at(4)),  # older than the snapshot's change: ignored
            ("e7", 2, 13, "collection_add", at(6)),
            ("e7", 2, 13, "collection_add", at(6)),  # duplicate event id: once
            ("e8", 2, 14, "wantlist_add", at(6)),  # not a collection event
        ],
    )
    result = t.current_collections(snapshot, log)
    assert collect(result, "user_id", "release_id") == [
        (1, 10, T0, at(4)),
        (2, 10, T0, at(5)),
        (2, 13, at(6), at(6)),
    ]


def test_at_equal_event_times_a_remove_wins_whatever_the_event_ids(spark):
    log = events(
        spark,
        [
            ("z-add", 1, 10, "collection_add", at(1)),
            ("a-remove", 1, 10, "collection_remove", at(1)),
            ("a-add", 1, 11, "collection_add", at(1)),
            ("z-remove", 1, 11, "collection_remove", at(1)),
            ("b", 1, 12, "collection_add", at(1)),
            ("c", 1, 12, "collection_add", at(1)),
        ],
    )
    latest = t.latest_events(log, "collection_add", "collection_remove")
    assert collect(latest.select("release_id", "kind"), "release_id") == [
        (10, "collection_remove"),
        (11, "collection_remove"),
        (12, "collection_add"),
    ]


def test_empty_event_log_keeps_the_snapshot(spark):
    snapshot = holdings(spark, [(1, 10, T0, None)])
    assert collect(t.current_wantlists(snapshot, events(spark, [])), "user_id") == [
        (1, 10, T0, None)
    ]


def test_genre_scores_split_multi_genre_releases(spark):
    collections = holdings(
        spark,
        [(1, 1, T0, None), (1, 2, T0, None), (1, 5, T0, None), (1, 99, T0, None), (2, 3, T0, None)],
    )
    tastes = t.user_tastes(collections, holdings(spark, []), releases(spark))
    scores = t.genre_scores(tastes)
    assert collect(scores, "user_id", "genre") == [
        # 1 = Jazz; 2 = Jazz + Funk / Soul (half each); 5 has no genre; 99 is not in the catalog
        (1, "Funk / Soul", 0.5, 0.25, 4),
        (1, "Jazz", 1.5, 0.75, 4),
        (2, "Rock", 1.0, 1.0, 1),  # a user with one record
    ]


def test_ranks_break_ties_by_user_id(spark):
    scores = spark.createDataFrame(
        [(3, "Jazz", 2.0), (1, "Jazz", 2.0), (2, "Jazz", 5.0), (4, "Jazz", 1.0), (1, "Rock", 1.0)],
        "user_id long, genre string, score double",
    )
    assert collect(t.rank_users(scores), "genre", "rank") == [
        ("Jazz", 2, 5.0, 1, 75.0),
        ("Jazz", 1, 2.0, 2, 50.0),
        ("Jazz", 3, 2.0, 3, 25.0),
        ("Jazz", 4, 1.0, 4, 0.0),
        ("Rock", 1, 1.0, 1, 0.0),
    ]


def friends_for(spark, rows, catalog=None, wanted=()):
    collections = holdings(spark, [(u, r, T0, None) for u, r in rows])
    wantlists = holdings(spark, [(u, r, T0, None) for u, r in wanted])
    tastes = t.user_tastes(collections, wantlists, catalog or releases(spark))
    return collections, tastes, best_friends(candidate_friends(tastes), tastes)


def test_friends_are_the_most_similar_other_user_with_a_reason(spark):
    rows = [(1, 1), (1, 2), (2, 1), (2, 6), (2, 2), (3, 3), (3, 4), (4, 3)]
    _, _, friends = friends_for(spark, rows)
    best = {row.user_id: row for row in friends.filter("rank = 1").collect()}
    assert set(best) == {1, 2, 3, 4}
    assert all(row.friend_id != user for user, row in best.items())
    assert best[1].friend_id == 2 and best[2].friend_id == 1
    assert best[3].friend_id == 4 and best[4].friend_id == 3
    assert best[1].shared_genres == ["Jazz", "Funk / Soul"]
    assert best[1].reason == (
        f"you both collect Jazz and Funk / Soul, {round(best[1].similarity * 100)}% taste match"
    )
    assert best[3].reason.startswith("you both collect Rock, ")
    assert 0 < best[1].similarity <= 1.0000001


def test_candidate_friends_compare_every_pair_of_a_block_across_chunks(spark):
    # Every user is in the global block; with a window as large as it, every pair is
    # compared, whatever chunks of two rows the block is cut into.
    rows = [(1, 1), (1, 2), (2, 1), (2, 6), (3, 3), (3, 4), (4, 3), (5, 7), (5, 2), (6, 6)]
    _, tastes, _ = friends_for(spark, rows)
    vectors = {
        row.user_id: dict(zip(row.features, row.weights, strict=True)) for row in tastes.collect()
    }
    found = candidate_friends(tastes, window=5, kept=5, chunk_rows=2).collect()
    pairs = {(row.user_id, row.friend_id): row.similarity for row in found}
    everyone = sorted(vectors)
    assert set(pairs) == {(u, f) for u in everyone for f in everyone if u != f}
    for (user, friend), similarity in pairs.items():
        mine, theirs = vectors[user], vectors[friend]
        dot = sum(weight * theirs.get(feature, 0.0) for feature, weight in mine.items())
        assert similarity == pytest.approx(dot, abs=1e-8)


def test_blocks_cut_between_range_partitions_still_give_everyone_candidates(spark):
    rows = [(1, 1), (1, 2), (2, 1), (2, 6), (3, 3), (3, 4), (4, 3), (5, 7), (5, 2), (6, 6)]
    _, tastes, _ = friends_for(spark, rows)
    spark.conf.set("spark.sql.shuffle.partitions", "3")
    try:
        # 10 users counted in 5 blocks each, 8 a partition: as many partitions as the
        # shuffle allows, the global block cut between them.
        found = candidate_friends(tastes, window=5, kept=5, chunk_rows=2, partition_rows=8)
        partitions = found.rdd.getNumPartitions()
        found = found.collect()
    finally:
        spark.conf.set("spark.sql.shuffle.partitions", "1")
    assert partitions == 3
    everyone = {row.user_id for row in tastes.collect()}
    assert {row.user_id for row in found} == everyone
    assert all(row.user_id != row.friend_id and row.friend_id in everyone for row in found)
    whole = candidate_friends(tastes, window=5, kept=5, chunk_rows=2).collect()
    assert len(found) < len(whole)  # pairs across a cut are not compared


def test_release_recommendations_skip_owned_and_wanted(spark):
    rows = [(1, 1), (2, 1), (2, 6), (2, 2), (3, 1), (3, 6), (5, 7)]
    collections, tastes, friends = friends_for(spark, rows, wanted=[(1, 2)])
    recommended = flat_picks(pick_lists(collections, releases(spark), tastes, friends))
    mine = recommended.filter("user_id = 1").orderBy("rank").collect()
    # User 1 owns 1 and wants 2: the next Jazz / Hard Bop release is 6, owned by the friend.
    assert mine[0].release_id == 6
    assert mine[0].reason == "owned by your closest taste match and popular in Hard Bop"
    every = recommended.collect()
    owned = {(u, r) for u, r in rows} | {(1, 2)}
    assert not {(row.user_id, row.release_id) for row in every} & owned
    assert {row.user_id for row in every} == {1, 2, 3, 5}


def test_a_user_whose_taste_is_exhausted_gets_a_fallback(spark):
    # User 1 owns every Jazz, Hard Bop and Soul-Jazz release there is.
    rows = [(1, 1), (1, 2), (1, 6), (2, 3), (2, 4), (3, 3)]
    collections, tastes, friends = friends_for(spark, rows)
    recommended = flat_picks(pick_lists(collections, releases(spark), tastes, friends))
    mine = [row for row in recommended.collect() if row.user_id == 1]
    assert mine and {row.release_id for row in mine} <= {3, 4}
    assert {row.reason for row in mine} == {"one of the most collected records on discorecs"}


def test_popularity_is_a_share_of_the_group(spark):
    collections = holdings(spark, [(1, 1, T0, None), (2, 1, T0, None), (3, 6, T0, None)])
    popular = popularity(collections, releases(spark), "genre")
    assert collect(popular, "genre", "release_id") == [("Jazz", 1, 2 / 3), ("Jazz", 6, 1 / 3)]


def test_holdout_hides_a_share_but_never_a_users_last_record(spark):
    from spark_jobs.evaluate import split_holdout

    rows = (
        [(1, r, T0, None) for r in range(1, 21)]
        + [(2, 1, T0, None)]
        + [(3, 1, T0, None), (3, 2, T0, None)]
    )
    train, hidden = split_holdout(holdings(spark, rows), 0.1, seed=3)
    hidden_rows = collect(hidden, "user_id", "release_id")
    assert [u for u, _ in hidden_rows] == [1, 1, 3]  # 10 % of 20 = 2; user 3: one of two
    assert train.count() + hidden.count() == len(rows)
    assert not {tuple(r) for r in hidden.collect()} & {
        (r.user_id, r.release_id) for r in train.collect()
    }
    again = collect(split_holdout(holdings(spark, rows), 0.1, seed=3)[1], "user_id", "release_id")
    assert again == hidden_rows
    with pytest.raises(ValueError, match="between 0 and 1"):
        split_holdout(holdings(spark, rows), 1.5, seed=3)


def gathered_picks(spark, picks):
    """Flat (user, rank, release, score, reason) picks gathered per user in rank order, as
    spark_jobs.releases.pick_lists gives them."""
    from spark_jobs.releases import PICKS

    users = sorted({pick[0] for pick in picks})
    return spark.createDataFrame(
        [(user, sorted(p[1:] for p in picks if p[0] == user)) for user in users],
        f"user_id long, picks {PICKS}",
    )


def test_a_recommendation_is_the_apis_whole_answer(spark):
    from discorecs import tables
    from spark_jobs.serving import run_row_parts, run_rows
    from webapp.models import merge_views, to_json
    from webapp.repository import recommendations_of

    when = datetime(2026, 11, 25, 3, 0, tzinfo=UTC)
    joined = datetime(2020, 1, 2, 3, 4, 5, tzinfo=UTC)
    friends = spark.createDataFrame(
        [(1, 1, 2, 0.9, "you both collect Jazz", ["Jazz"]), (1, 2, 99, 0.5, "unused", ["Rock"])],
        "user_id long, rank int, friend_id long, similarity double, reason string, "
        "shared_genres array<string>",
    )
    picks = gathered_picks(spark, [(1, 2, 77, 0.25, "second"), (1, 1, 10, 0.75, "first")])
    users = spark.createDataFrame(
        [(2, "Bo", "Oslo", joined)],
        "user_id long, name string, location string, joined_at timestamp",
    )
    releases = spark.createDataFrame(
        [(10, "Blue", ["Miles"], 1959, ["Jazz"], None, "US", ["Vinyl"])],
        "release_id long, title string, artists array<string>, year int, genres array<string>, "
        "styles array<string>, country string, formats array<string>",
    )
    rows = run_rows(*run_row_parts(friends, picks, users, releases, "run-1", when)).collect()
    assert [(row.user_id, row.run_id) for row in rows] == [(1, "run-1")]
    answer = json.loads(rows[0].recommendation)
    assert answer == {
        "run_id": "run-1",
        "generated_at": "2026-11-25T03:00:00.000000+00:00",
        "friend": {
            "user": {
                "user_id": 2,
                "name": "Bo",
                "location": "Oslo",
                "joined_at": "2020-01-02T03:04:05.000000+00:00",
            },
            "match": 0.9,
            "shared_genres": ["Jazz"],
            "reason": "you both collect Jazz",
        },
        "other_friends": [  # not in the users: named by id; only the best has a reason
            {
                "user": {
                    "user_id": 99,
                    "name": "collector #99",
                    "location": None,
                    "joined_at": None,
                },
                "match": 0.5,
                "shared_genres": [],
                "reason": "",
            }
        ],
        "releases": [  # in rank order; 77 is not in the catalog
            {
                "release": {
                    "release_id": 10,
                    "title": "Blue",
                    "artists": ["Miles"],
                    "year": 1959,
                    "genres": ["Jazz"],
                    "styles": [],
                    "country": "US",
                    "formats": ["Vinyl"],
                },
                "score": 0.75,
                "reason": "first",
            },
            {
                "release": {
                    "release_id": 77,
                    "title": None,
                    "artists": [],
                    "year": None,
                    "genres": [],
                    "styles": [],
                    "country": None,
                    "formats": [],
                },
                "score": 0.25,
                "reason": "second",
            },
        ],
        "left_out": [],
    }
    assert list(answer) == list(tables.RECOMMENDATION_FIELDS)
    assert json.loads(rows[0].spare_picks) == []
    assert tables.release_ids(rows[0].pick_ids) == (10, 77)
    # The page's models read from it (merged, nothing taken since) render back to it.
    assert to_json(recommendations_of(merge_views(answer, [], set()))) == answer


def no_people_and_no_catalog(spark):
    """Empty users and releases frames: every friend and release is unknown."""
    users = spark.createDataFrame(
        [], "user_id long, name string, location string, joined_at timestamp"
    )
    releases = spark.createDataFrame(
        [],
        "release_id long, title string, artists array<string>, year int, "
        "genres array<string>, styles array<string>, country string, formats array<string>",
    )
    return users, releases


def test_picks_after_the_shown_ones_are_kept_as_spares(spark):
    from discorecs import tables
    from spark_jobs.serving import run_row_parts, run_rows

    when = datetime(2026, 11, 25, 3, 0, tzinfo=UTC)
    friends = spark.createDataFrame(
        [(1, 1, 2, 0.9, "r", ["Jazz"])],
        "user_id long, rank int, friend_id long, similarity double, reason string, "
        "shared_genres array<string>",
    )
    count = tables.RELEASES_SHOWN + 2
    picks = gathered_picks(
        spark, [(1, rank, 100 + rank, 1.0 / rank, "") for rank in range(1, count + 1)]
    )
    users, releases = no_people_and_no_catalog(spark)
    row = run_rows(*run_row_parts(friends, picks, users, releases, "run-1", when)).collect()[0]
    shown = [p["release"]["release_id"] for p in json.loads(row.recommendation)["releases"]]
    spares = [p["release"]["release_id"] for p in json.loads(row.spare_picks)]
    assert shown == list(range(101, 101 + tables.RELEASES_SHOWN))
    assert spares == [101 + tables.RELEASES_SHOWN, 102 + tables.RELEASES_SHOWN]
    assert tables.release_ids(row.pick_ids) == tuple(range(101, 101 + count))


def test_a_users_profile_and_recommendation_of_a_run_are_one_row(spark):
    from discorecs import tables
    from spark_jobs.serving import run_row_parts, run_rows

    profiles = spark.createDataFrame(
        [(1, "run-1", '{"collection_size": 3}'), (2, "run-1", '{"collection_size": 1}')],
        "user_id long, run_id string, genre_profile string",
    )
    friends = spark.createDataFrame(
        [(1, 1, 2, 0.9, "r", ["Jazz"]), (3, 1, 1, 0.8, "r", ["Rock"])],
        "user_id long, rank int, friend_id long, similarity double, reason string, "
        "shared_genres array<string>",
    )
    picks = gathered_picks(spark, [(1, 1, 10, 0.5, "first")])
    users, releases = no_people_and_no_catalog(spark)
    when = datetime(2026, 11, 25, 3, 0, tzinfo=UTC)
    rows = sorted(
        run_rows(*run_row_parts(friends, picks, users, releases, "run-1", when, profiles)).collect()
    )
    assert tuple(rows[0].asDict()) == tables.RECOMMENDATION_COLUMNS
    assert [(row.user_id, row.run_id, row.genre_profile) for row in rows] == [
        (1, "run-1", '{"collection_size": 3}'),
        (2, "run-1", '{"collection_size": 1}'),
        (3, "run-1", None),  # a friend and no profile (no genre scored): no profile
    ]
    assert json.loads(rows[0].recommendation)["friend"]["user"]["user_id"] == 2
    assert tables.release_ids(rows[0].pick_ids) == (10,)
    # no friend, so no recommendation: the row still carries the profile
    assert (rows[1].recommendation, rows[1].spare_picks, rows[1].pick_ids) == (None, None, None)
    assert json.loads(rows[2].recommendation)["releases"] == []


def catalog_with_credits(spark):
    """Releases 1-7 as above, with titles, first artists, labels and years."""
    credits = {
        1: ("Sun Ra", ["Saturn"], 1961),
        2: ("Various", ["Saturn"], 1965),
        3: ("Sun Ra", ["Impulse!"], None),
        4: ("X-Ray Spex", ["EMI"], 1978),
        5: ("Sun Ra", ["Saturn"], 1967),
        6: ("Art Blakey", ["Blue Note"], 1960),
        7: ("Sun Ra", ["Saturn"], 1972),
    }
    rows = []
    for r in releases(spark).collect():
        artist, labels, year = credits[r.release_id]
        rows.append(
            (r.release_id, f"Title {r.release_id}", r.genres, r.styles, [artist], labels, year)
        )
    return spark.createDataFrame(
        rows,
        "release_id long, title string, genres array<string>, styles array<string>, "
        "artists array<string>, labels array<string>, year int",
    )


def test_an_artist_the_user_completes_brings_their_other_records(spark):
    catalog = catalog_with_credits(spark)
    # User 1 owns two Sun Ra records; users 2 and 3 own 7, another Sun Ra (on Saturn, 1972).
    rows = [(1, 1), (1, 3), (2, 7), (2, 6), (3, 7), (3, 4)]
    collections, tastes, friends = friends_for(spark, rows, catalog)
    recommended = flat_picks(pick_lists(collections, catalog, tastes, friends))
    mine = {row.release_id: row.reason for row in recommended.filter("user_id = 1").collect()}
    assert mine[7] == "more by Sun Ra, whose records you keep"


def test_friends_who_keep_the_same_artist_hear_of_it(spark):
    catalog = catalog_with_credits(spark)
    # Users 1 and 2 each own two Sun Ra records (1 and 5, 3 and 7) and no genre in common;
    # 3 and 4 own one X-Ray Spex record each: no pattern yet.
    rows = [(1, 1), (1, 5), (2, 3), (2, 7), (3, 4), (4, 4)]
    _, _, friends = friends_for(spark, rows, catalog)
    best = {row.user_id: row for row in friends.filter("rank = 1").collect()}
    assert best[1].friend_id == 2
    assert best[1].reason == (
        f"you both own at least 2 Sun Ra records, {round(best[1].similarity * 100)}% taste match"
    )
    assert not best[3].reason.startswith("you both own")


def test_collectors_of_a_users_record_name_it_in_the_reason(spark):
    from spark_jobs.cocollection import sampled_holdings, similar_releases

    catalog = catalog_with_credits(spark)
    # Users 2, 3 and 4 keep 3 and 4 together; user 1 owns 3.
    rows = [(1, 3), (2, 3), (2, 4), (3, 3), (3, 4), (4, 3), (4, 4), (5, 6)]
    collections, tastes, friends = friends_for(spark, rows, catalog)
    similar = similar_releases(sampled_holdings(collections))
    neighbours = [(row["release_id"], row["similar_id"]) for row in similar.as_table().to_pylist()]
    assert neighbours == [(3, 4), (4, 3)]
    recommended = flat_picks(
        pick_lists(collections, catalog, tastes, friends, similar=similar, co_weight=0.9)
    )
    mine = recommended.filter("user_id = 1").orderBy("rank").collect()
    assert (mine[0].release_id, mine[0].reason) == (4, "collectors of Title 3 also keep it")


def test_the_tastes_freed_before_the_serving_load_leave_what_a_profile_shows(spark):
    from spark_jobs.nightly import materialize, release
    from spark_jobs.serving import profile_tastes

    tastes = materialize(
        spark.createDataFrame(
            [
                (
                    1,
                    4,
                    ["Jazz", "Funk / Soul"],
                    [3.0, 1.0],
                    [0.75, 0.25],
                    ["Bop", "Soul", "Funk", "Modal"],
                ),
                (2, 0, [], [], [], []),
            ],
            "user_id long, collection_size int, genres array<string>, "
            "genre_scores array<double>, genre_shares array<double>, styles array<string>",
        )
    )

    def stored() -> set[int]:
        return {info.id() for info in spark.sparkContext._jsc.sc().getRDDStorageInfo()}

    tastes_blocks = tastes._jdf.logicalPlan().rdd().id()
    assert tastes_blocks in stored()
    shown = materialize(profile_tastes(tastes))
    release(tastes)

    assert tastes_blocks not in stored()
    assert [row.asDict() for row in shown.collect()] == [
        {
            "user_id": 1,
            "collection_size": 4,
            "genres": ["Jazz", "Funk / Soul"],
            "genre_scores": [3.0, 1.0],
            "genre_shares": [0.75, 0.25],
            "top_styles": ["Bop", "Soul", "Funk"],
        }
    ]
