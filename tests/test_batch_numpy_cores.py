"""The numpy cores of the batch (tastes, release picks, taste neighbours) on tiny arrays."""

import dataclasses

import numpy as np
import pyarrow as pa
import pytest

from discorecs.affinities import release_groups
from discorecs.catalog.index import CatalogIndex
from spark_jobs import cocollection, neighbours, picks, tastes
from spark_jobs.releases import Reasons


def lists(*rows):
    """(offsets, values) of a list column, as Arrow stores it."""
    offsets = np.concatenate([[0], np.cumsum([len(r) for r in rows])]).astype(np.int64)
    values = [v for r in rows for v in r]
    return offsets, values


POPULAR = picks.PopularLists.build(
    [
        ("g:Jazz", 10, 0.5),
        ("g:Jazz", 11, 0.3),
        ("g:Jazz", 12, 0.2),
        ("s:Hard Bop", 11, 0.6),
        ("s:Hard Bop", 13, 0.4),
        ("s:Punk", 20, 1.0),
    ],
    depth=3,
)
JAZZ, HARD_BOP, PUNK = (
    POPULAR.names.to_pylist().index(n) for n in ("g:Jazz", "s:Hard Bop", "s:Punk")
)


def pick(taste, held, friend, wants=None, kept=10, similar=None, owned=(), co_weight=0.0):
    """pick_releases on lists per user (taste: (group, share) pairs); ``owned``: the owned
    releases per user that ``similar`` is looked up with."""
    taste_offsets, entries = lists(*taste)
    held_offsets, held_values = lists(*held)
    friend_offsets, friend_values = lists(*friend)
    owned_offsets, owned_values = lists(*owned)
    return picks.pick_releases(
        len(taste),
        taste_offsets,
        np.array([g for g, _ in entries], dtype=np.int64),
        np.array([s for _, s in entries], dtype=np.float64),
        held_offsets,
        np.array(held_values, dtype=np.int64),
        friend_offsets,
        np.array(friend_values, dtype=np.int64),
        np.ones(len(taste), dtype=bool) if wants is None else np.array(wants),
        POPULAR,
        np.array([20, 10, 30], dtype=np.int64),
        np.array([9, 7, 5], dtype=np.int64),
        kept,
        similar=similar,
        owned_offsets=owned_offsets if similar is not None else None,
        owned_releases=np.array(owned_values, dtype=np.int64),
        co_weight=co_weight,
    )


def rows(found):
    return list(
        zip(
            found.user.tolist(),
            found.rank.tolist(),
            found.release.tolist(),
            found.score.tolist(),
            found.source.tolist(),
            found.friend_owns.tolist(),
            strict=True,
        )
    )


def test_picks_sum_taste_over_groups_skip_held_and_boost_the_friends():
    # User 0: 80 % Jazz, 20 % Hard Bop; owns 10, wants 12; the friend owns 13.
    found = pick([[(JAZZ, 0.8), (HARD_BOP, 0.2)]], [[10, 12]], [[13]])
    assert rows(found) == [
        # 11: 0.8 x 0.3 (Jazz) + 0.2 x 0.6 (Hard Bop) = 0.36, mostly from Jazz
        (0, 1, 11, 0.36, JAZZ, False),
        # 13: 0.2 x 0.4 = 0.08, x 1.5 because the friend owns it
        (0, 2, 13, 0.12, HARD_BOP, True),
    ]


def test_sources_survive_int32_group_indices_from_arrow():
    # Arrow's index_in gives int32; each user's source must still be their heaviest group.
    taste_offsets, entries = lists([(JAZZ, 0.8), (HARD_BOP, 0.2)], [(HARD_BOP, 1.0)])
    found = picks.pick_releases(
        2,
        taste_offsets,
        np.array([g for g, _ in entries], dtype=np.int32),
        np.array([s for _, s in entries]),
        np.array([0, 0, 0]),
        np.zeros(0, dtype=np.int64),
        np.array([0, 0, 0]),
        np.zeros(0, dtype=np.int64),
        np.array([True, True]),
        POPULAR,
        np.zeros(0, dtype=np.int64),
        np.zeros(0, dtype=np.int64),
        2,
    )
    assert rows(found) == [
        (0, 1, 10, 0.4, JAZZ, False),
        (0, 2, 11, 0.36, JAZZ, False),  # 0.24 from Jazz, 0.12 from Hard Bop
        (1, 1, 11, 0.6, HARD_BOP, False),
        (1, 2, 13, 0.4, HARD_BOP, False),
    ]


def test_ties_go_to_the_lower_release_and_lists_stop_at_kept():
    tied = picks.PopularLists.build([("s:Punk", 21, 0.5), ("s:Punk", 20, 0.5)], depth=2)
    found = picks.pick_releases(
        1,
        np.array([0, 1]),
        np.array([0]),
        np.array([1.0]),
        np.array([0, 0]),
        np.zeros(0, dtype=np.int64),
        np.array([0, 0]),
        np.zeros(0, dtype=np.int64),
        np.array([True]),
        tied,
        np.zeros(0, dtype=np.int64),
        np.zeros(0, dtype=np.int64),
        1,
    )
    assert rows(found) == [(0, 1, 20, 0.5, 0, False)]


def test_a_user_with_nothing_left_gets_the_fallback_a_user_without_records_nothing():
    # User 0's only group (Punk) offers 20, which they own; user 1 owns nothing.
    found = pick([[(PUNK, 1.0)], []], [[20], []], [[], []], wants=[True, False])
    assert rows(found) == [
        (0, 1, 10, pytest.approx(7e-9), picks.NO_SOURCE, False),
        (0, 2, 30, pytest.approx(5e-9), picks.NO_SOURCE, False),
    ]


def test_unknown_groups_are_ignored():
    found = pick([[(-1, 0.5), (PUNK, 0.5)]], [[]], [[]])
    assert rows(found) == [(0, 1, 20, 0.5, PUNK, False)]


def test_releases_kept_by_the_collectors_of_what_a_user_owns_blend_in_with_taste():
    # User 0: all Jazz (10: 0.5, 11: 0.3, 12: 0.2), owns 13 and wants 12. Collectors of 13
    # also keep 30 (0.9) and 11 (0.3) and 12 (0.6), which the user already wants.
    similar = picks.SimilarReleases.build(
        np.array([13, 13, 13, 40]), np.array([30, 11, 12, 10]), np.array([0.9, 0.3, 0.6, 1.0])
    )
    found = pick([[(JAZZ, 1.0)]], [[13, 12]], [[]], similar=similar, owned=[[13]], co_weight=0.5)
    # Each part relative to the user's best by it: taste 0.5 / 0.5 x 0.5 for 10; co
    # 0.9 / 0.9 x 0.5 for 30 (tied with 10: the lower id first); 11 has both,
    # 0.3 / 0.5 x 0.5 + 0.3 / 0.9 x 0.5, mostly taste. 40's neighbours are not the user's.
    assert rows(found) == [
        (0, 1, 10, 0.5, JAZZ, False),
        (0, 2, 30, 0.5, picks.NO_SOURCE, False),
        (0, 3, 11, pytest.approx(0.3 + 0.5 / 3), JAZZ, False),
    ]
    assert found.because.tolist() == [picks.NO_SOURCE, 13, picks.NO_SOURCE]


def test_a_co_collection_pick_names_the_owned_release_that_suggests_it_most():
    # The user owns 13 and 14; both suggest 30, 14 more strongly; each suggests at most
    # CO_CANDIDATES_PER_RECORD of its neighbours (13's weakest, 11, is left out at 2).
    similar = picks.SimilarReleases.build(
        np.array([13, 13, 13, 14]), np.array([30, 12, 11, 30]), np.array([0.9, 0.6, 0.3, 0.95])
    )
    user, release, similarity, because = similar.candidates(
        np.array([0, 0]), np.array([13, 14]), most=2
    )
    assert list(zip(user, release, similarity, because, strict=True)) == [
        (0, 30, 0.9, 13),
        (0, 12, 0.6, 13),
        (0, 30, 0.95, 14),
    ]
    found = pick([[]], [[13, 14]], [[]], similar=similar, owned=[[13, 14]], co_weight=1.0)
    assert list(zip(found.release, found.because, strict=True)) == [(30, 14), (12, 13), (11, 13)]


def test_without_similar_releases_a_pick_names_no_release_behind_it():
    found = pick([[(PUNK, 1.0)]], [[]], [[]])
    assert found.because.tolist() == [picks.NO_SOURCE]


def test_each_pick_takes_the_reason_of_its_evidence():
    names = pa.array(["g:Jazz", "s:Hard Bop", "a:Sun Ra", "l:Blue Note (1960s)"])
    reasons = Reasons.of(names, np.array([13, 14]), pa.array(["Lanquidity", None]))
    none = picks.NO_SOURCE
    found = picks.Picks(
        user=np.zeros(8, np.int64),
        rank=np.arange(1, 9),
        release=np.arange(20, 28),
        score=np.ones(8),
        source=np.array([0, 1, 1, 2, 2, 3, none, none]),
        friend_owns=np.array([False, False, True, False, True, True, False, False]),
        because=np.array([none, none, none, none, none, none, none, 14]),
    )
    assert reasons.of_picks(found).to_pylist() == [
        "popular among Jazz collectors like you",
        "popular among Hard Bop collectors like you",
        "owned by your closest taste match and popular in Hard Bop",
        "more by Sun Ra, whose records you keep",
        "more by Sun Ra, whose records you keep",  # the friend does not change an artist's
        "from Blue Note (1960s), a label and era you collect",
        "one of the most collected records on discorecs",
        "collectors of release 14 also keep it",  # untitled: its id
    ]
    titled = dataclasses.replace(found, because=np.full(8, 13))
    assert set(reasons.of_picks(titled).to_pylist()) == {"collectors of Lanquidity also keep it"}


def test_a_run_without_co_collection_has_the_reasons_of_its_groups():
    reasons = Reasons.of(pa.array(["g:Rock"]), np.zeros(0, np.int64), pa.array([], pa.string()))
    found = picks.Picks(
        *(np.array([v]) for v in (0, 1, 5, 1.0, 0)), np.array([True]), np.array([picks.NO_SOURCE])
    )
    assert reasons.of_picks(found).to_pylist() == [
        "owned by your closest taste match and popular in Rock"
    ]


def unit(*weights):
    vector = np.array(weights, dtype=np.float64)
    return vector / np.linalg.norm(vector)


def test_window_similarities_compare_each_own_row_with_the_next_ones():
    vectors = np.array([unit(1, 0), unit(1, 1), unit(0, 1), unit(1, 0)])
    dots = neighbours.window_similarities(vectors, window=2, first_rows=3)
    half = round(1 / np.sqrt(2), 9)
    assert dots.tolist() == [
        [half, 0.0],  # row 0 with rows 1 and 2
        [half, half],  # row 1 with rows 2 and 3
        [0.0, -np.inf],  # row 2 with row 3; there is no row 4
    ]


def test_named_features_add_the_products_of_what_both_rows_name():
    # Rows 0 and 2 have the same dense part; rows 0 and 1 name the same artist (code 7).
    vectors = np.array([[0.6, 0.0], [0.0, 0.6], [0.6, 0.0]])
    codes, weights = neighbours.named_rows(
        np.array([0, 2, 3, 4]), np.array([7, 9, 7, 8]), np.array([0.8, 0.1, 0.8, 0.8])
    )
    assert codes.tolist() == [[7, 9], [7, -1], [8, -1]]
    dots = neighbours.window_similarities(vectors, window=2, first_rows=3, named=(codes, weights))
    assert dots.tolist() == [
        [0.64, 0.36],  # with row 1: 0.8 x 0.8 for the artist both name; with row 2: 0.6 x 0.6
        [0.0, -np.inf],
        [-np.inf, -np.inf],
    ]


def test_chunk_neighbours_keep_each_users_best_in_both_directions():
    # Users 5, 6, 7 in block order; user 7 is the next chunk's head (compared, not comparing).
    offsets, features = lists([0], [0, 1], [1])
    weights = np.concatenate([unit(1), unit(1, 1), unit(1)])
    user, friend, similarity = neighbours.chunk_neighbours(
        np.array([5, 6, 7]),
        offsets,
        np.array(features),
        weights,
        dims=2,
        own_rows=2,
        window=2,
        kept=1,
    )
    half = round(1 / np.sqrt(2), 9)
    assert list(zip(user.tolist(), friend.tolist(), similarity.tolist(), strict=True)) == [
        (5, 6, half),
        (6, 5, half),  # ties with 7: the lower id first
        (7, 6, half),
    ]


def test_best_per_user_counts_a_pair_once_at_its_highest():
    user = np.array([1, 1, 1, 2, 1])
    friend = np.array([3, 3, 4, 1, 5])
    similarity = np.array([0.9, 0.2, 0.5, 0.7, 0.5])
    best = neighbours.best_per_user(user, friend, similarity, kept=2)
    # User 1: 3 (0.9, met twice), then 4 and 5 tie at 0.5: the lower id, 4.
    assert list(
        zip(user[best].tolist(), friend[best].tolist(), similarity[best].tolist(), strict=True)
    ) == [(1, 3, 0.9), (1, 4, 0.5), (2, 1, 0.7)]


def friend_pairs(*pairs):
    """A batch of (similarity, mine, theirs) rows as friend_reasons reads it; mine and theirs:
    (genre shares, affinity records), each a dict by name (affinities None: a null list)."""
    rows = {}
    for side in ("", "their_"):
        at = 1 if side == "" else 2
        kept = [None if pair[at][1] is None else list(pair[at][1]) for pair in pairs]
        rows[f"{side}genres"] = pa.array([list(pair[at][0]) for pair in pairs])
        rows[f"{side}genre_shares"] = pa.array(
            [list(pair[at][0].values()) for pair in pairs], pa.list_(pa.float64())
        )
        rows[f"{side}affinities"] = pa.array(kept, pa.list_(pa.string()))
        rows[f"{side}affinity_records"] = pa.array(
            [None if pair[at][1] is None else list(pair[at][1].values()) for pair in pairs],
            pa.list_(pa.int32()),
        )
    return pa.record_batch({"similarity": pa.array([pair[0] for pair in pairs]), **rows})


def test_a_friends_reason_names_what_both_keep_most_then_the_genres_both_collect():
    batch = friend_pairs(
        # Jazz and Funk / Soul tie at 0.3 (by name); Rock is only 0.1 of theirs.
        (
            0.914,
            ({"Jazz": 0.5, "Funk / Soul": 0.3, "Rock": 0.2}, None),
            ({"Funk / Soul": 0.6, "Jazz": 0.3, "Rock": 0.1}, {"a:Sun Ra": 9}),
        ),
        # Both keep Sun Ra (5) and Blue Note (14): the larger of the smaller counts wins.
        (
            0.81,
            ({"Jazz": 1.0}, {"a:Sun Ra": 5, "l:Blue Note (1960s)": 14, "a:Miles Davis": 3}),
            ({"Jazz": 1.0}, {"l:Blue Note (1960s)": 20, "a:Sun Ra": 14, "a:Frank Zappa": 9}),
        ),
        # A tie in records goes to the name first in order.
        (
            0.5,
            ({"Jazz": 1.0}, {"a:Sun Ra": 3, "a:John Coltrane": 4}),
            ({"Jazz": 1.0}, {"a:Sun Ra": 3, "a:John Coltrane": 3}),
        ),
        (0.495, ({"Rock": 0.9, "Jazz": 0.1}, {}), ({"Rock": 0.5, "Jazz": 0.5}, {})),
        (0.12, ({"Rock": 1.0}, {"a:Sun Ra": 2}), ({"Jazz": 1.0}, {"a:Miles Davis": 2})),
    )
    shared, reasons = neighbours.friend_reasons(batch)
    assert shared.to_pylist() == [["Funk / Soul", "Jazz"], ["Jazz"], ["Jazz"], ["Rock"], []]
    assert reasons.to_pylist() == [
        "you both collect Funk / Soul and Jazz, 91% taste match",
        "you both own at least 14 Blue Note (1960s) records, 81% taste match",
        "you both own at least 3 John Coltrane records, 50% taste match",
        "you both collect Rock, 50% taste match",
        "similar styles, 12% taste match",
    ]


def test_friends_reasons_without_any_affinity_in_the_batch():
    batch = friend_pairs((0.3, ({"Rock": 1.0}, None), ({"Rock": 1.0}, None)))
    shared, reasons = neighbours.friend_reasons(batch)
    assert shared.to_pylist() == [["Rock"]]
    assert reasons.to_pylist() == ["you both collect Rock, 30% taste match"]


def test_user_tastes_from_holdings():
    catalog = CatalogIndex.from_arrow(
        pa.table(
            {
                "release_id": [7, 1, 2, 5],
                "genres": [["Funk / Soul"], ["Jazz"], ["Jazz", "Funk / Soul"], []],
                "styles": [["Soul"], ["Hard Bop"], ["Soul-Jazz"], []],
            }
        )
    )
    # User 10 owns 1, 2, 5 (no genre) and 99 (not in the catalog) and wants 7; 11 only wants.
    user = np.array([10, 11, 10, 10, 10, 10])
    release = np.array([7, 7, 2, 1, 99, 5])
    owned = np.array([False, False, True, True, True, True])
    found = tastes.user_tastes(user, release, owned, catalog).to_pylist()
    first, second = found
    norm = np.sqrt(0.75**2 + 0.25**2 + 0.5**2 + 0.5**2)
    expected_vector = {
        "g:Jazz": 0.75 / norm,
        "g:Funk / Soul": 0.25 / norm,
        "s:Hard Bop": 0.5 / norm,
        "s:Soul-Jazz": 0.5 / norm,
    }
    assert first.pop("features") == sorted(catalog.features.index(f) for f in expected_vector)
    names = sorted(expected_vector, key=catalog.features.index)
    vector = dict(zip(names, first.pop("weights"), strict=True))
    assert vector == pytest.approx(expected_vector)
    assert first.pop("signature") == pytest.approx(
        sum(w * tastes.direction(f) for f, w in expected_vector.items())
    )
    assert first == {
        "user_id": 10,
        "collection_size": 4,
        "genres": ["Jazz", "Funk / Soul"],
        "genre_scores": [1.5, 0.5],
        "genre_shares": [0.75, 0.25],
        "styles": ["Hard Bop", "Soul-Jazz"],  # tied shares: by name
        "style_shares": [0.5, 0.5],
        "missing": 1,  # 99
        "owned": [1, 2, 5, 99],
        "wanted": [7],
        # Top styles, then top genres (this catalog has no credits: no affinity groups).
        "taste_groups": [
            catalog.group_names.to_pylist().index(name)
            for name in ("s:Hard Bop", "s:Soul-Jazz", "g:Jazz", "g:Funk / Soul")
        ],
        "taste_shares": [0.5, 0.5, 0.75, 0.25],
        "affinities": [],
        "affinity_records": [],
        "affinity_weights": [],
    }
    assert second == {
        "user_id": 11,
        "collection_size": 0,
        "genres": [],
        "genre_scores": [],
        "genre_shares": [],
        "styles": [],
        "style_shares": [],
        "features": [],
        "weights": [],
        "signature": 0.0,
        "missing": 0,
        "owned": [],
        "wanted": [7],
        "taste_groups": [],
        "taste_shares": [],
        "affinities": [],
        "affinity_records": [],
        "affinity_weights": [],
    }


def test_most_owned_ranks_every_group_and_the_catalog():
    catalog = CatalogIndex.from_arrow(
        pa.table(
            {
                "release_id": [1, 2, 3, 4],
                "genres": [["Jazz"], ["Jazz", "Rock"], ["Rock"], ["Rock"]],
                "styles": [["Hard Bop"], [], ["Punk"], ["Punk"]],
            }
        )
    )
    # Owners: 1 -> 5, 2 -> 3, 3 -> 3, 4 -> 1, and 99 (not in the catalog) -> 50.
    popular, fallback, owners = picks.most_owned(
        catalog, np.array([4, 99, 1, 2, 3]), np.array([1, 50, 5, 3, 3]), depth=2, fallback_depth=3
    )
    assert popular_lists(popular) == {
        "g:Jazz": [(1, 5 / 8), (2, 3 / 8)],
        "g:Rock": [(2, 3 / 7), (3, 3 / 7)],  # equal owners: lower id first; 4 is cut
        "s:Hard Bop": [(1, 1.0)],
        "s:Punk": [(3, 3 / 4), (4, 1 / 4)],
    }
    assert fallback.tolist() == [1, 2, 3] and owners.tolist() == [5, 3, 3]


def popular_lists(popular):
    """{group name: [(release, popularity), ...]} of the groups with releases."""
    return {
        name: [
            (int(r), pytest.approx(p))
            for r, p in zip(
                popular.releases[popular.offsets[g] : popular.offsets[g + 1]],
                popular.popularity[popular.offsets[g] : popular.offsets[g + 1]],
                strict=True,
            )
        ]
        for g, name in enumerate(popular.names.to_pylist())
        if popular.offsets[g + 1] > popular.offsets[g]
    }


CREDITED = pa.table(
    {
        "release_id": [1, 2, 3, 4, 5, 6],
        "genres": [["Jazz"], ["Jazz"], ["Jazz"], ["Rock"], ["Jazz"], ["Jazz"]],
        "styles": [["Free Jazz"], ["Free Jazz"], [], ["Punk"], [], ["Hard Bop"]],
        "artists": [["Sun Ra"], ["Various"], ["Sun Ra"], ["X-Ray Spex"], ["Sun Ra"], []],
        "labels": [["Saturn"], ["Saturn", "Saturn"], ["Impulse!"], ["EMI"], ["Saturn"], []],
        "year": [1961, 1965, None, 1978, 1967, 1960],
    }
)


def test_affinity_groups_are_the_first_artist_and_each_label_in_its_decade():
    rows, names = release_groups(CREDITED)
    assert list(zip(rows.tolist(), names.to_pylist(), strict=True)) == [
        (0, "a:Sun Ra"),
        (0, "l:Saturn (1960s)"),
        (1, "l:Saturn (1960s)"),  # "Various" is nobody's record; a label listed twice, once
        (2, "a:Sun Ra"),  # no year: no label-era
        (3, "a:X-Ray Spex"),
        (3, "l:EMI (1970s)"),
        (4, "a:Sun Ra"),
        (4, "l:Saturn (1960s)"),
    ]


def test_affinities_need_two_records_and_weigh_their_share_of_the_collection():
    catalog = CatalogIndex.from_arrow(CREDITED)
    # User 1 owns 1, 2, 3, 4: Sun Ra twice (1, 3), Saturn in the 1960s twice (1, 2).
    found = tastes.user_tastes(
        np.array([1, 1, 1, 1]), np.array([1, 2, 3, 4]), np.ones(4, bool), catalog
    ).to_pylist()[0]
    names = catalog.group_names.to_pylist()
    groups = [names[g] for g in found["taste_groups"]]
    shares = dict(zip(groups, found["taste_shares"], strict=True))
    # Styles first, then genres, then the artist, then the label-era; X-Ray Spex and EMI
    # hold one record each and are no pattern yet.
    assert groups == ["s:Free Jazz", "s:Punk", "g:Jazz", "g:Rock", "a:Sun Ra", "l:Saturn (1960s)"]
    assert (shares["a:Sun Ra"], shares["l:Saturn (1960s)"]) == (0.5, 0.5)
    assert found["affinities"] == ["a:Sun Ra", "l:Saturn (1960s)"]
    assert found["affinity_records"] == [2, 2]
    # The taste vector is unit length over genres, styles and affinities together.
    squares = sum(w * w for w in found["weights"]) + sum(w * w for w in found["affinity_weights"])
    assert squares == pytest.approx(1.0)
    # Genres 0.75 and 0.25, styles 2/3 (Free Jazz) and 1/3 (Punk), affinities 0.5 and 0.5.
    norm = np.sqrt(0.75**2 + 0.25**2 + (2 / 3) ** 2 + (1 / 3) ** 2 + 0.5**2 + 0.5**2)
    assert found["affinity_weights"] == pytest.approx([0.5 / norm, 0.5 / norm])


def test_most_owned_ranks_the_affinity_groups_like_styles():
    catalog = CatalogIndex.from_arrow(CREDITED)
    popular, _, _ = picks.most_owned(
        catalog, np.array([1, 3, 5, 2]), np.array([2, 5, 2, 1]), depth=2, fallback_depth=1
    )
    lists = popular_lists(popular)
    assert lists["a:Sun Ra"] == [(3, 5 / 9), (1, 2 / 9)]  # 5 cut at depth 2 (ties: lower id)
    assert lists["l:Saturn (1960s)"] == [(1, 2 / 5), (5, 2 / 5)]


def test_similar_releases_count_the_collectors_who_keep_both():
    # Users 2, 3, 4 keep 3 and 4; user 5 keeps 3 and 6 (one co-owner: dropped).
    pairs = [(1, 3), (2, 3), (2, 4), (3, 3), (3, 4), (4, 3), (4, 4), (5, 3), (5, 6)]
    holdings = pa.table(
        {
            "user_id": [u for u, _ in pairs],
            "release_id": [r for _, r in pairs],
            "draw": list(range(len(pairs))),
        }
    )
    similar = cocollection.similar_releases(holdings)
    table = similar.as_table().to_pylist()
    # 3 has 5 owners, 4 has 3: 3 / (5 * 3) ** 0.8.
    expected = round(3 / 15**cocollection.OWNERS_EXPONENT, 9)
    assert table == [
        {"release_id": 3, "similar_id": 4, "similarity": expected},
        {"release_id": 4, "similar_id": 3, "similarity": expected},
    ]


def test_a_user_pairs_at_most_their_paired_records():
    # Users 1 and 2 both own 10, 11 and 12; user 1's draws pick 10 and 11 only.
    holdings = pa.table(
        {
            "user_id": [1, 1, 1, 2, 2, 2],
            "release_id": [10, 11, 12, 10, 11, 12],
            "draw": [5, 1, 9, 0, 0, 0],
        }
    )
    similar = cocollection.similar_releases(holdings, paired_records=2)
    pairs = {(row["release_id"], row["similar_id"]) for row in similar.as_table().to_pylist()}
    # 10-11 seen by both users; 10-12 and 11-12 by user 2 only (once: dropped).
    assert pairs == {(10, 11), (11, 10)}
