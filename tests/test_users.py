"""Synthetic users: reproducible, with measurable taste, heavy-tailed, catalog-bound."""

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pytest

from discorecs import paths
from discorecs.errors import DiscorecsError
from discorecs.settings import load_settings
from discorecs.storage import StorageError
from discorecs.tables import name_prefix
from discorecs.users.population import current_users, generate_users, write_population
from discorecs.users.sampling_catalog import EmptyCatalogError, build_sampling_catalog


@pytest.fixture(scope="module")
def catalog(small_catalog):
    return small_catalog


@pytest.fixture(scope="module")
def population(catalog, tmp_path_factory):
    folder = tmp_path_factory.mktemp("users") / "users"
    write_population(catalog, folder, 3000, seed=8, batch_size=1000, say=lambda m: None)
    return {
        name: ds.dataset(folder / name).to_table().sort_by("user_id")
        for name in ("users", "preferences", "collections", "wantlists")
    }


def test_same_seed_same_population(catalog, tmp_path):
    again = tmp_path / "again"
    write_population(catalog, again, 300, seed=8, batch_size=1000, say=lambda m: None)
    other = tmp_path / "other"
    write_population(catalog, other, 300, seed=9, batch_size=1000, say=lambda m: None)
    first = ds.dataset(again / "collections").to_table()
    assert first.equals(ds.dataset(again / "collections").to_table())
    regenerated = tmp_path / "regenerated"
    write_population(catalog, regenerated, 300, seed=8, batch_size=1000, say=lambda m: None)
    for name in ("users", "preferences", "collections", "wantlists"):
        assert ds.dataset(regenerated / name).to_table().equals(ds.dataset(again / name).to_table())
    assert not ds.dataset(other / "collections").to_table().equals(first)


def test_users_have_names_places_and_ids(population):
    users = population["users"]
    assert users["user_id"].to_pylist() == list(range(1, 3001))
    assert all(" " in name for name in users["name"].to_pylist())
    assert all(", " in place for place in users["location"].to_pylist())


def test_collections_only_hold_catalog_releases_once(population, catalog):
    catalog_ids = ds.dataset(catalog).to_table(columns=["release_id"])["release_id"]
    for name in ("collections", "wantlists"):
        items = population[name]
        assert pc.all(pc.is_in(items["release_id"], value_set=catalog_ids)).as_py()
        keys = pc.add(pc.multiply(items["user_id"], 10**9), items["release_id"])
        assert len(pc.unique(keys)) == items.num_rows
    owned = set(
        zip(
            population["collections"]["user_id"].to_pylist(),
            population["collections"]["release_id"].to_pylist(),
            strict=True,
        )
    )
    wanted = zip(
        population["wantlists"]["user_id"].to_pylist(),
        population["wantlists"]["release_id"].to_pylist(),
        strict=True,
    )
    assert not owned & set(wanted)


def test_collection_sizes_are_heavy_tailed(population):
    sizes = pc.value_counts(population["collections"]["user_id"]).field("counts").to_numpy()
    assert len(sizes) == 3000  # everyone owns at least one record
    median = np.median(sizes)
    assert 20 <= median <= 45  # most users own tens of records
    assert np.percentile(sizes, 99) > 5 * median
    assert sizes.max() > 15 * median  # a few own many hundreds or thousands


def test_top_genre_by_collection_matches_the_drawn_preference(population, catalog):
    releases = ds.dataset(catalog).to_table(columns=["release_id", "genres"]).to_pydict()
    genres_of = dict(zip(releases["release_id"], releases["genres"], strict=True))
    scores: dict[int, dict[str, float]] = {}
    collections = population["collections"].to_pydict()
    for user, release in zip(collections["user_id"], collections["release_id"], strict=True):
        genres = genres_of[release]
        for genre in genres:  # a release with n genres counts 1/n towards each
            mine = scores.setdefault(user, {})
            mine[genre] = mine.get(genre, 0.0) + 1 / len(genres)
    best = {user: (max(mine, key=mine.get), 0) for user, mine in scores.items()}
    drawn = {row["user_id"]: row["genres"][0] for row in population["preferences"].to_pylist()}
    matches = sum(best[user][0] == drawn[user] for user in drawn)
    print(f"top genre matches the drawn preference for {matches / len(drawn):.1%} of users")
    assert matches / len(drawn) > 0.8


def test_users_need_a_catalog_and_a_positive_count(tmp_path):
    settings = load_settings({"DISCORECS_HOME": str(tmp_path)})
    with pytest.raises(DiscorecsError, match="--users must be at least 1"):
        generate_users(settings, 0, load_cassandra=False)
    with pytest.raises(
        StorageError, match=r"holds no published catalog; run `discorecs ingest-dump"
    ):
        generate_users(settings, 10, load_cassandra=False)


def test_a_catalog_without_genres_is_refused():
    releases = pa.table(
        {"release_id": [1, 2], "genres": [[], ["Not A Genre"]], "styles": [["Techno"], []]}
    )
    with pytest.raises(EmptyCatalogError, match="no release with one of the 15 genres"):
        build_sampling_catalog(releases)


def test_name_prefix():
    assert name_prefix("  Élodie Martin") == "él"
    assert name_prefix("X") == "x"


@pytest.mark.services
def test_users_are_loaded_into_cassandra(services, catalog, tmp_path):
    import shutil

    from discorecs.cassandra import connect

    settings = services.replace(data_root=str(tmp_path / "data"))
    shutil.copytree(catalog, tmp_path / "data" / "catalog" / "releases")
    report = generate_users(settings, 150, seed=4, say=lambda m: None)
    assert report.cassandra_rows["users"] == 150
    assert report.cassandra_rows["collections"] == report.collection_items
    with connect(settings, keyspace=settings.cassandra_keyspace) as connection:
        user = connection.session.execute(
            "SELECT user_id, name FROM users WHERE user_id = 42"
        ).one()
        owned = connection.session.execute(
            "SELECT COUNT(*) FROM collections WHERE user_id = 42"
        ).one()[0]
        found = connection.session.execute(
            "SELECT user_id FROM users_by_name WHERE name_prefix = %s AND name_lower >= %s "
            "AND name_lower < %s",
            (name_prefix(user.name), user.name.lower(), user.name.lower() + "\uffff"),
        ).all()
    expected = (
        current_users(settings)
        .dataset(paths.INITIAL_COLLECTIONS)
        .to_table(filter=pc.field("user_id") == 42)
        .num_rows
    )
    assert owned == expected > 0
    assert 42 in [row.user_id for row in found]
