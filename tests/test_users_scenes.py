"""The scenes taste model: collectors who follow a label in a decade and complete its artists."""

import numpy as np
import pyarrow as pa
import pyarrow.dataset as ds
import pytest

from discorecs.errors import DiscorecsError
from discorecs.users.population import write_population
from discorecs.users.sampling_catalog import build_sampling_catalog
from discorecs.users.scenes import (
    MIN_SCENE_RELEASES,
    NoScenesError,
    build_scene_index,
    most_common,
)


def tiny_catalog() -> pa.Table:
    """Releases 1-5 on Blue Note in the 1960s (one of them twice on it), 6-8 on Blue Note in
    the 1970s (too few for a scene), 9 with no year, 10-14 on Impulse! in the 1960s."""
    rows = [(i, ["Blue Note"] * (2 if i == 3 else 1), 1960 + i) for i in range(1, 6)]
    rows += [(i, ["Blue Note"], 1970 + i) for i in range(6, 9)]
    rows += [(9, ["Blue Note"], None)]
    rows += [(i, ["Impulse!"], 1961) for i in range(10, 15)]
    artists = {1: ["Sun Ra"], 2: ["Various"], 10: ["Sun Ra"], 11: []}
    return pa.table(
        {
            "release_id": [r[0] for r in rows],
            "genres": [["Jazz"]] * len(rows),
            "styles": [["Free Jazz"]] * len(rows),
            "artists": [artists.get(r[0], [f"Artist {r[0]}"]) for r in rows],
            "labels": [r[1] for r in rows],
            "year": pa.array([r[2] for r in rows], pa.int32()),
        }
    )


def test_a_scene_is_a_label_in_a_decade_with_enough_releases():
    releases = tiny_catalog()
    index = build_sampling_catalog(releases, seed=3)
    scenes = build_scene_index(releases, index)
    assert MIN_SCENE_RELEASES == 4
    assert scenes.scene_names == ("Blue Note (1960s)", "Impulse! (1960s)")
    members = [sorted(index.release_ids[scenes.scenes.get(k)].tolist()) for k in range(2)]
    assert members == [[1, 2, 3, 4, 5], [10, 11, 12, 13, 14]]
    for k in range(2):  # most popular (lowest position) first
        assert scenes.scenes.get(k).tolist() == sorted(scenes.scenes.get(k).tolist())
    # Bigger scenes draw more followers, in proportion to the square root of their size.
    assert scenes.scene_cumulative.tolist() == pytest.approx([0.5, 1.0])


def test_artists_are_completed_by_their_first_artist_but_never_various():
    releases = tiny_catalog()
    index = build_sampling_catalog(releases, seed=3)
    scenes = build_scene_index(releases, index)
    artist_of = {int(index.release_ids[p]): int(scenes.first_artist[p]) for p in range(index.size)}
    assert artist_of[2] == artist_of[11] == -1  # "Various", no artist at all
    assert artist_of[1] == artist_of[10] >= 0  # both by Sun Ra
    sun_ra = scenes.artists.get(artist_of[1])
    assert sorted(index.release_ids[sun_ra].tolist()) == [1, 10]


def test_a_catalog_without_years_has_no_scenes():
    releases = tiny_catalog().set_column(5, "year", pa.array([None] * 14, pa.int32()))
    with pytest.raises(NoScenesError, match="use --taste-model genres"):
        build_scene_index(releases, build_sampling_catalog(releases))


def test_most_common_codes_per_user_ties_to_the_lower_code():
    rows = np.array([0, 0, 0, 0, 2, 2, 2])
    codes = np.array([5, 3, 5, -1, 1, 2, 2])
    assert most_common(rows, codes, 3, 2).tolist() == [[5, 3], [-1, -1], [2, 1]]


@pytest.fixture(scope="module")
def populations(small_catalog, tmp_path_factory):
    def generate(model: str) -> dict[str, pa.Table]:
        folder = tmp_path_factory.mktemp(model) / "users"
        report = write_population(
            small_catalog, folder, 1500, seed=4, taste_model=model, say=lambda m: None
        )
        assert report.taste_model == model
        return {
            name: ds.dataset(folder / name).to_table().sort_by("user_id")
            for name in ("preferences", "collections")
        }

    return {model: generate(model) for model in ("genres", "scenes")}


def _top_share(collections: pa.Table, key_of: dict[int, tuple]) -> float:
    """Median over users of the share of their records in their own most common key."""
    per_user: dict[int, dict[tuple, int]] = {}
    for user, release in zip(
        collections["user_id"].to_pylist(), collections["release_id"].to_pylist(), strict=True
    ):
        for key in key_of.get(release, ()):
            counts = per_user.setdefault(user, {})
            counts[key] = counts.get(key, 0) + 1
    sizes = dict(
        zip(*np.unique(collections["user_id"].to_numpy(), return_counts=True), strict=True)
    )
    return float(
        np.median([max(c.values()) / sizes[u] for u, c in per_user.items() if sizes[u] >= 10])
    )


def test_scene_collectors_gather_around_a_label_era_where_genre_collectors_do_not(
    populations, small_catalog
):
    releases = ds.dataset(small_catalog).to_table(columns=["release_id", "labels", "year"])
    label_era = {
        r["release_id"]: [(label, r["year"] // 10) for label in r["labels"]]
        for r in releases.to_pylist()
        if r["year"]
    }
    scenes = _top_share(populations["scenes"]["collections"], label_era)
    genres = _top_share(populations["genres"]["collections"], label_era)
    print(f"median share of the top label-decade: scenes {scenes:.2f}, genres {genres:.2f}")
    assert scenes > 0.2
    assert scenes > 3 * genres


def test_scene_collectors_preferences_are_their_own_most_common_genres(populations, small_catalog):
    releases = ds.dataset(small_catalog).to_table(columns=["release_id", "genres"]).to_pydict()
    genres_of = dict(zip(releases["release_id"], releases["genres"], strict=True))
    collections = populations["scenes"]["collections"].to_pydict()
    counts: dict[int, dict[str, int]] = {}
    for user, release in zip(collections["user_id"], collections["release_id"], strict=True):
        mine = counts.setdefault(user, {})
        for genre in genres_of[release]:
            mine[genre] = mine.get(genre, 0) + 1
    for row in populations["scenes"]["preferences"].to_pylist():
        mine = counts[row["user_id"]]
        assert row["genres"] and mine[row["genres"][0]] == max(mine.values())


def test_an_unknown_taste_model_is_refused(small_catalog, tmp_path):
    with pytest.raises(DiscorecsError, match="unknown taste model 'moods'; choose one of"):
        write_population(small_catalog, tmp_path / "u", 10, taste_model="moods")
