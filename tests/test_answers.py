"""The API's answers put together from a user's friends and picks (pure: Arrow in, Arrow out)."""

import json

import pyarrow as pa

from discorecs import tables
from spark_jobs.answers import only_id, render_answers

PICK = pa.struct(
    [
        ("rank", pa.int32()),
        ("release_id", pa.int64()),
        ("score", pa.float64()),
        ("reason", pa.string()),
    ]
)
BLUE = '{"release_id":10,"title":"Blue","artists":["Miles"],"year":1959}'


def users(rows):
    """A batch of user_id, friends (JSON texts), picks (rank, release_id, score, reason)."""
    return pa.record_batch(
        {
            "user_id": pa.array([row[0] for row in rows], pa.int64()),
            "friends": pa.array([row[1] for row in rows], pa.list_(pa.string())),
            "picks": pa.array(
                [
                    None
                    if row[2] is None
                    else [dict(zip(PICK.names, p, strict=True)) for p in row[2]]
                    for row in rows
                ],
                pa.list_(PICK),
            ),
        }
    )


def render(rows, shown=tables.RELEASES_SHOWN):
    (batch,) = render_answers(
        iter([users(rows)]), "run-7", "2026-11-25T03:00:00.000000+00:00", {10: BLUE}, shown
    )
    return batch.to_pylist()


def test_an_answer_has_the_friends_and_the_shown_picks_in_rank_order():
    (row,) = render(
        [
            (
                1,
                ['{"user":{"user_id":2},"match":0.9}', '{"user":{"user_id":3},"match":0.5}'],
                [(1, 10, 0.75, "first"), (2, 77, 0.25, 'Kayōkyoku "live"'), (3, 78, 1e-05, None)],
            )
        ],
        shown=2,
    )
    assert (row["user_id"], row["run_id"]) == (1, "run-7")
    answer = json.loads(row["recommendation"])
    assert list(answer) == list(tables.RECOMMENDATION_FIELDS)
    assert answer["run_id"] == "run-7"
    assert answer["generated_at"] == "2026-11-25T03:00:00.000000+00:00"
    assert answer["friend"] == {"user": {"user_id": 2}, "match": 0.9}
    assert answer["other_friends"] == [{"user": {"user_id": 3}, "match": 0.5}]
    assert answer["releases"] == [
        {"release": json.loads(BLUE), "score": 0.75, "reason": "first"},
        {"release": json.loads(only_id(77)), "score": 0.25, "reason": 'Kayōkyoku "live"'},
    ]
    assert answer["left_out"] == []
    assert "Kayōkyoku" in row["recommendation"]  # kept as text, as Spark's to_json keeps it
    assert json.loads(row["spare_picks"]) == [
        {"release": json.loads(only_id(78)), "score": 1e-05, "reason": None}
    ]
    assert tables.release_ids(row["pick_ids"]) == (10, 77, 78)


def test_users_of_one_batch_each_get_their_own_picks_and_a_user_without_picks_none():
    rows = render(
        [
            (1, ['{"f":1}'], [(1, 10, 0.5, "a")]),
            (2, ['{"f":2}', '{"f":3}'], None),
            (3, ['{"f":4}'], [(1, 11, 0.5, "b"), (2, 10, 0.25, "a")]),
        ]
    )
    answers = [json.loads(row["recommendation"]) for row in rows]
    assert [a["friend"] for a in answers] == [{"f": 1}, {"f": 2}, {"f": 4}]
    assert [a["other_friends"] for a in answers] == [[], [{"f": 3}], []]
    assert [[p["release"]["release_id"] for p in a["releases"]] for a in answers] == [
        [10],
        [],
        [11, 10],
    ]
    assert [tables.release_ids(row["pick_ids"]) for row in rows] == [(10,), (), (11, 10)]
    assert [row["spare_picks"] for row in rows] == ["[]", "[]", "[]"]


def test_a_release_missing_from_the_catalog_has_only_its_id():
    assert json.loads(only_id(5)) == {
        "release_id": 5,
        "title": None,
        "artists": [],
        "year": None,
        "genres": [],
        "styles": [],
        "country": None,
        "formats": [],
    }
    assert list(json.loads(only_id(5))) == list(tables.RELEASE_FIELDS)


def test_a_user_with_a_profile_and_no_friend_keeps_the_profile_and_has_no_answer():
    batch = users([(1, ['{"f":1}'], None), (2, None, None)]).append_column(
        "genre_profile", pa.array(['{"collection_size":3}', '{"collection_size":1}'])
    )
    (out,) = render_answers(iter([batch]), "run-7", "t", {})
    rows = out.to_pylist()
    assert tuple(rows[0]) == tables.RECOMMENDATION_COLUMNS
    assert [row["genre_profile"] for row in rows] == [
        '{"collection_size":3}',
        '{"collection_size":1}',
    ]
    assert json.loads(rows[0]["recommendation"])["friend"] == {"f": 1}
    assert (rows[1]["recommendation"], rows[1]["spare_picks"], rows[1]["pick_ids"]) == (
        None,
        None,
        None,
    )
