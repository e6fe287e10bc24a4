"""The catalog as the users generator and the producers sample it.

Every release gets a popularity rank (seeded); each genre and each style keeps its releases as
a list ordered by that rank (compressed sparse rows: one ``members`` array, ``offsets`` per
genre or style). A release popular in Rock is therefore popular in its other genres too, and
"a release of genre g by Zipf-like popularity" is one vectorised index into g's list.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from discorecs.errors import DiscorecsError
from discorecs.genres import GENRES
from discorecs.storage import Location, location


class EmptyCatalogError(DiscorecsError):
    """The catalog has no release with a genre; there is nothing to collect."""


@dataclass(frozen=True)
class Lists:
    """Compressed sparse rows: list ``k`` is ``members[offsets[k]:offsets[k + 1]]``."""

    offsets: np.ndarray
    members: np.ndarray

    @property
    def sizes(self) -> np.ndarray:
        return np.diff(self.offsets)

    def get(self, k: int) -> np.ndarray:
        return self.members[self.offsets[k] : self.offsets[k + 1]]


@dataclass(frozen=True)
class SamplingCatalog:
    release_ids: np.ndarray  # int64, by popularity: position 0 is the most popular release
    genres: Lists  # per genre (in GENRES order): positions into release_ids, most popular first
    style_names: tuple[str, ...]
    styles: Lists  # per style: positions into release_ids, most popular first
    genre_weights: np.ndarray  # share of the catalog's genre tags per genre
    genre_styles: Lists  # per genre: style codes seen with it, most frequent first
    genre_style_counts: np.ndarray  # co-occurrence count per entry of genre_styles.members

    @property
    def size(self) -> int:
        return len(self.release_ids)


def csr_lists(groups: np.ndarray, positions: np.ndarray, group_count: int) -> Lists:
    """Group catalog ``positions`` by ``groups`` (codes 0..group_count-1), each group's most
    popular (lowest position) first."""
    sort = np.lexsort((positions, groups))
    counts = np.bincount(groups, minlength=group_count)
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    return Lists(offsets, positions[sort].astype(np.int64))


def build_sampling_catalog(releases: pa.Table, seed: int = 0) -> SamplingCatalog:
    """Index a table with ``release_id``, ``genres`` and ``styles`` (pure)."""
    rng = np.random.default_rng(seed)
    genres_flat = pc.list_flatten(releases["genres"])
    genre_parent = pc.list_parent_indices(releases["genres"]).to_numpy()
    # Genres outside the 15 (a data problem the ingest reports) get code -1 and are ignored.
    genre_code = (
        pc.fill_null(pc.index_in(genres_flat, value_set=pa.array(GENRES)), -1)
        .to_numpy(zero_copy_only=False)
        .astype(np.int64)
    )
    with_genre = np.unique(genre_parent[genre_code >= 0])
    if not len(with_genre):
        raise EmptyCatalogError(
            "the catalog has no release with one of the 15 genres; ingest a releases dump "
            "first (`discorecs ingest-dump` or `discorecs generate-dump`)"
        )
    # Popularity: a seeded random rank per release, kept only for releases with a genre.
    position_of_row = np.full(releases.num_rows, -1, dtype=np.int64)
    ranked_rows = rng.permutation(with_genre)
    position_of_row[ranked_rows] = np.arange(len(ranked_rows))
    release_ids = releases["release_id"].to_numpy()[ranked_rows].astype(np.int64)

    keep = genre_code >= 0
    genre_positions = position_of_row[genre_parent[keep]]
    genres = csr_lists(genre_code[keep], genre_positions, len(GENRES))

    styles_flat = pc.list_flatten(releases["styles"])
    style_parent = pc.list_parent_indices(releases["styles"]).to_numpy()
    encoded = pc.dictionary_encode(styles_flat).combine_chunks()
    style_names = tuple(encoded.dictionary.to_pylist()) if len(styles_flat) else ()
    style_code = encoded.indices.to_numpy() if len(styles_flat) else np.zeros(0, np.int64)
    style_positions = position_of_row[style_parent]
    has_genre = style_positions >= 0
    styles = csr_lists(style_code[has_genre], style_positions[has_genre], len(style_names))

    # Which styles go with which genre: count (genre, style) pairs over releases.
    genre_of = _first_genre_per_row(genre_parent[keep], genre_code[keep], releases.num_rows)
    pair_genre = genre_of[style_parent][has_genre]
    pair_style = style_code[has_genre]
    valid = pair_genre >= 0
    pairs = pair_genre[valid] * max(len(style_names), 1) + pair_style[valid]
    unique_pairs, pair_counts = np.unique(pairs, return_counts=True)
    pair_genres = unique_pairs // max(len(style_names), 1)
    pair_styles = unique_pairs % max(len(style_names), 1)
    order = np.lexsort((-pair_counts, pair_genres))
    genre_style_offsets = np.concatenate(
        [[0], np.cumsum(np.bincount(pair_genres, minlength=len(GENRES)))]
    ).astype(np.int64)
    genre_weights = np.bincount(genre_code[keep], minlength=len(GENRES)).astype(float)
    return SamplingCatalog(
        release_ids=release_ids,
        genres=genres,
        style_names=style_names,
        styles=styles,
        genre_weights=genre_weights / genre_weights.sum(),
        genre_styles=Lists(genre_style_offsets, pair_styles[order].astype(np.int64)),
        genre_style_counts=pair_counts[order].astype(np.int64),
    )


def _first_genre_per_row(parents: np.ndarray, codes: np.ndarray, rows: int) -> np.ndarray:
    """For style co-occurrence each release counts under its first listed genre."""
    first = np.full(rows, -1, dtype=np.int64)
    first[parents[::-1]] = codes[::-1]  # later writes win, so reversing keeps the first
    return first


def read_sampling_catalog(
    catalog: Location | Path,
    seed: int = 0,
    columns: Sequence[str] = ("release_id", "genres", "styles"),
) -> SamplingCatalog:
    """Read a catalog's ids, genres and styles and index them."""
    table = location(catalog).dataset().to_table(columns=list(columns))
    return build_sampling_catalog(table, seed)
