"""Synthetic collectors with real taste structure, generated in vectorised batches.

Each user is drawn as:

- **preferred genres**: 1, 2 or 3 (45 / 35 / 20 %), drawn without replacement in proportion to
  how common each genre is in the catalog; the first dominates (mixture 1 : 0.45 : 0.25);
- **preferred styles**: 2-5, each drawn from the styles the catalog pairs with one of the
  user's genres, in proportion to how often they are paired;
- **collection size**: lognormal, median 30 records, sigma 1.1, clipped to 1..10,000: most
  users own tens of records, the top 1 % several hundred, the largest thousands;
- **wantlist size**: lognormal, median 8, sigma 1.0, clipped to 0..2,000, never overlapping
  the collection;
- **each record**: 55 % through a preferred style, else through a preferred genre (by the
  mixture), then a release of that style or genre by Zipf-like popularity: position
  ``floor(n * u ** 2.5)`` in the list ordered by popularity (the top 1 % of a genre's
  releases take ~16 % of its picks).

Release ids come from the catalog only. The random draws for a batch are numpy arrays, so
generation costs a few array operations per record, not a Python call; names and places come
from Faker-seeded pools.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np
import pyarrow as pa

from discorecs.genres import GENRES
from discorecs.users.sampling_catalog import SamplingCatalog
from discorecs.users.scenes import (
    SceneIndex,
    codes_of_records,
    draw_scene_positions,
    draw_scenes,
    most_common,
)

GENRE_COUNT_SHARES = (0.45, 0.35, 0.20)
GENRE_MIXTURE = np.array([1.0, 0.45, 0.25])
MAX_STYLES = 5
STYLE_SHARE = 0.55
POPULARITY_EXPONENT = 2.5
COLLECTION_MEDIAN, COLLECTION_SIGMA, COLLECTION_MAX = 30, 1.1, 10_000
WANTLIST_MEDIAN, WANTLIST_SIGMA, WANTLIST_MAX = 8, 1.0, 2_000
JOINED_FROM = datetime(2004, 1, 1, tzinfo=UTC)
JOINED_UNTIL = datetime(2026, 6, 1, tzinfo=UTC)
COLLECTED_UNTIL = datetime(2026, 11, 1, tzinfo=UTC)

# (Faker locale, the country shown with its cities)
LOCALES = (
    ("en_US", "USA"),
    ("en_GB", "UK"),
    ("de_DE", "Germany"),
    ("fr_FR", "France"),
    ("ja_JP", "Japan"),
    ("pt_BR", "Brazil"),
    ("es_ES", "Spain"),
    ("it_IT", "Italy"),
    ("nl_NL", "Netherlands"),
    ("sv_SE", "Sweden"),
    ("pl_PL", "Poland"),
    ("en_AU", "Australia"),
)
POOL_SIZE = 400

_TIMESTAMP = pa.timestamp("ms", tz="UTC")
USERS_SCHEMA = pa.schema(
    [
        pa.field("user_id", pa.int64(), nullable=False),
        pa.field("name", pa.string()),
        pa.field("location", pa.string()),
        pa.field("joined_at", _TIMESTAMP),
    ]
)
PREFERENCES_SCHEMA = pa.schema(
    [
        pa.field("user_id", pa.int64(), nullable=False),
        pa.field("genres", pa.list_(pa.string())),
        pa.field("styles", pa.list_(pa.string())),
    ]
)
ITEMS_SCHEMA = pa.schema(
    [
        pa.field("user_id", pa.int64(), nullable=False),
        pa.field("release_id", pa.int64(), nullable=False),
        pa.field("added_at", _TIMESTAMP),
    ]
)


@dataclass(frozen=True)
class NamePools:
    """Per locale, ``POOL_SIZE`` first names, last names and cities (flat, locale-major)."""

    first: np.ndarray
    last: np.ndarray
    places: np.ndarray

    @classmethod
    def build(cls, seed: int) -> NamePools:
        from faker import Faker

        first, last, places = [], [], []
        for index, (locale, country) in enumerate(LOCALES):
            fake = Faker(locale)
            fake.seed_instance(seed * 1000 + index)
            first += [fake.first_name() for _ in range(POOL_SIZE)]
            last += [fake.last_name() for _ in range(POOL_SIZE)]
            places += [f"{fake.city()}, {country}" for _ in range(POOL_SIZE)]
        return cls(np.array(first, object), np.array(last, object), np.array(places, object))


@dataclass(frozen=True)
class Population:
    users: pa.Table
    preferences: pa.Table
    collections: pa.Table
    wantlists: pa.Table


def generate_population(
    index: SamplingCatalog,
    pools: NamePools,
    first_user_id: int,
    count: int,
    rng: np.random.Generator,
    scenes: SceneIndex | None = None,
) -> Population:
    """``count`` users with ids from ``first_user_id`` (pure: everything from ``rng``), by
    the genre taste model, or by the scenes model when ``scenes`` is given."""
    user_ids = np.arange(first_user_id, first_user_id + count, dtype=np.int64)
    if scenes is None:
        genres, mixture = _preferred_genres(index, count, rng)
        styles = _preferred_styles(index, genres, mixture, rng)

        def draw(rows: np.ndarray) -> np.ndarray:
            return draw_release_positions(index, genres, mixture, styles, rows, rng)
    else:
        followed, scene_mixture = draw_scenes(scenes, count, rng)

        def draw(rows: np.ndarray) -> np.ndarray:
            return draw_scene_positions(
                index, scenes, followed, scene_mixture, rows, rng, POPULARITY_EXPONENT
            )

    joined = _uniform_times(rng, count, JOINED_FROM, JOINED_UNTIL)
    collection = _draw_items(
        index, draw, _sizes(rng, count, COLLECTION_MEDIAN, COLLECTION_SIGMA, 1, COLLECTION_MAX)
    )
    wanted = _draw_items(
        index, draw, _sizes(rng, count, WANTLIST_MEDIAN, WANTLIST_SIGMA, 0, WANTLIST_MAX)
    )
    if scenes is not None:
        # What the event producers draw from: the user's most common genres and styles.
        rows, positions = np.divmod(collection, index.size)
        genres = most_common(*codes_of_records(index.genres, index.size, rows, positions), count, 3)
        styles = most_common(
            *codes_of_records(index.styles, index.size, rows, positions), count, MAX_STYLES
        )
    wanted = wanted[~np.isin(wanted, collection, assume_unique=True)]
    locale = rng.integers(0, len(LOCALES), count) * POOL_SIZE
    names = [
        f"{a} {b}"
        for a, b in zip(
            pools.first[locale + rng.integers(0, POOL_SIZE, count)],
            pools.last[locale + rng.integers(0, POOL_SIZE, count)],
            strict=True,
        )
    ]
    places = pools.places[locale + rng.integers(0, POOL_SIZE, count)]
    users = pa.table(
        {
            "user_id": user_ids,
            "name": names,
            "location": places.tolist(),
            "joined_at": pa.array(joined, _TIMESTAMP),
        },
        schema=USERS_SCHEMA,
    )
    preferences = pa.table(
        {
            "user_id": user_ids,
            "genres": _list_of_names(genres, np.array(GENRES, object)),
            "styles": _list_of_names(styles, np.array(index.style_names, object)),
        },
        schema=PREFERENCES_SCHEMA,
    )
    return Population(
        users,
        preferences,
        _items_table(collection, index, user_ids, joined, rng),
        _items_table(wanted, index, user_ids, joined, rng),
    )


def _preferred_genres(index: SamplingCatalog, count: int, rng: np.random.Generator):
    """(count, 3) genre codes (-1 = none) and their mixture weights (rows sum to 1)."""
    with np.errstate(divide="ignore"):
        log_weights = np.log(index.genre_weights)
    # Gumbel top-k: sampling without replacement in proportion to the weights, vectorised.
    keys = log_weights + rng.gumbel(size=(count, len(GENRES)))
    top = np.argsort(-keys, axis=1)[:, :3]
    wanted = rng.choice([1, 2, 3], count, p=GENRE_COUNT_SHARES)
    valid = (np.arange(3) < wanted[:, None]) & (index.genre_weights[top] > 0)
    genres = np.where(valid, top, -1)
    mixture = GENRE_MIXTURE * valid
    return genres, mixture / mixture.sum(axis=1, keepdims=True)


def _pick_slot(mixture: np.ndarray, rows: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """For each row, a slot 0-2 drawn from that row's user's mixture."""
    cumulative = np.cumsum(mixture[rows], axis=1)
    return np.minimum((rng.random(len(rows))[:, None] > cumulative).sum(axis=1), 2)


def _preferred_styles(
    index: SamplingCatalog, genres: np.ndarray, mixture: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """(count, MAX_STYLES) style codes (-1 = none), valid ones first."""
    count = len(genres)
    wanted = rng.integers(2, MAX_STYLES + 1, count)
    rows = np.repeat(np.arange(count), MAX_STYLES)
    genre = genres[rows, _pick_slot(mixture, rows, rng)]
    # Weighted choice within each genre's (style, count) list via one global cumulative sum.
    cumulative = np.concatenate([[0], np.cumsum(index.genre_style_counts)])
    start = cumulative[index.genre_styles.offsets[genre]]
    total = cumulative[index.genre_styles.offsets[genre + 1]] - start
    target = start + rng.random(len(rows)) * total
    position = np.searchsorted(cumulative, target, side="right") - 1
    has_styles = total > 0
    style = np.where(
        has_styles,
        index.genre_styles.members[np.minimum(position, len(index.genre_styles.members) - 1)],
        -1,
    )
    style = style.reshape(count, MAX_STYLES)
    style[np.arange(MAX_STYLES) >= wanted[:, None]] = -1
    return -np.sort(-style, axis=1)  # valid codes (>= 0) first


def _sizes(
    rng: np.random.Generator, count: int, median: float, sigma: float, low: int, high: int
) -> np.ndarray:
    return np.clip(np.rint(rng.lognormal(np.log(median), sigma, count)), low, high).astype(np.int64)


def draw_release_positions(
    index: SamplingCatalog,
    genres: np.ndarray,
    mixture: np.ndarray,
    styles: np.ndarray,
    rows: np.ndarray,
    rng: np.random.Generator,
) -> np.ndarray:
    """One release (a position in ``index.release_ids``) per entry of ``rows``, drawn by the
    taste of user ``rows[i]`` (a row of ``genres``/``mixture``/``styles``)."""
    genre = genres[rows, _pick_slot(mixture, rows, rng)]
    style_count = (styles >= 0).sum(axis=1)[rows]
    style = styles[rows, (rng.random(len(rows)) * np.maximum(style_count, 1)).astype(np.int64)]
    style_size = np.where(style >= 0, index.styles.sizes[np.maximum(style, 0)], 0)
    via_style = (rng.random(len(rows)) < STYLE_SHARE) & (style_size > 0)
    start = np.where(
        via_style, index.styles.offsets[np.maximum(style, 0)], index.genres.offsets[genre]
    )
    size = np.where(via_style, style_size, index.genres.sizes[genre])
    position = start + (size * rng.random(len(rows)) ** POPULARITY_EXPONENT).astype(np.int64)
    from_styles = index.styles.members[np.minimum(position, len(index.styles.members) - 1)]
    from_genres = index.genres.members[np.minimum(position, len(index.genres.members) - 1)]
    return np.where(via_style, from_styles, from_genres)


def taste_from_preferences(index: SamplingCatalog, preferences: pa.Table):
    """(genres, mixture, styles) arrays, as drawn at generation, from a preferences table."""
    count = preferences.num_rows
    genre_code = {genre: code for code, genre in enumerate(GENRES)}
    style_code = {style: code for code, style in enumerate(index.style_names)}
    genres = np.full((count, 3), -1, dtype=np.int64)
    styles = np.full((count, MAX_STYLES), -1, dtype=np.int64)
    for row, (user_genres, user_styles) in enumerate(
        zip(preferences["genres"].to_pylist(), preferences["styles"].to_pylist(), strict=True)
    ):
        codes = [genre_code[g] for g in user_genres[:3] if g in genre_code]
        genres[row, : len(codes)] = codes
        known = [style_code[s] for s in user_styles[:MAX_STYLES] if s in style_code]
        styles[row, : len(known)] = known
    if (genres[:, 0] < 0).any():
        raise ValueError("a user has no genre known to the catalog; regenerate the users")
    mixture = GENRE_MIXTURE * (genres >= 0)
    return genres, mixture / mixture.sum(axis=1, keepdims=True), styles


def _draw_items(
    index: SamplingCatalog, draw: Callable[[np.ndarray], np.ndarray], sizes: np.ndarray
) -> np.ndarray:
    """Sorted unique keys ``user_row * catalog_size + release_position``."""
    rows = np.repeat(np.arange(len(sizes)), sizes)
    return np.unique(rows * index.size + draw(rows))


def _items_table(
    keys: np.ndarray,
    index: SamplingCatalog,
    user_ids: np.ndarray,
    joined: np.ndarray,
    rng: np.random.Generator,
) -> pa.Table:
    rows, positions = np.divmod(keys, index.size)
    until = int(COLLECTED_UNTIL.timestamp() * 1000)
    added = joined[rows] + (rng.random(len(rows)) * (until - joined[rows])).astype(np.int64)
    return pa.table(
        {
            "user_id": user_ids[rows],
            "release_id": index.release_ids[positions],
            "added_at": pa.array(added, _TIMESTAMP),
        },
        schema=ITEMS_SCHEMA,
    )


def _uniform_times(
    rng: np.random.Generator, count: int, start: datetime, end: datetime
) -> np.ndarray:
    low, high = int(start.timestamp() * 1000), int(end.timestamp() * 1000)
    return rng.integers(low, high, count, dtype=np.int64)


def _list_of_names(codes: np.ndarray, names: np.ndarray) -> pa.Array:
    valid = codes >= 0
    offsets = np.concatenate([[0], np.cumsum(valid.sum(axis=1))]).astype(np.int32)
    return pa.ListArray.from_arrays(
        pa.array(offsets), pa.array(names[codes[valid]].tolist(), pa.string())
    )
