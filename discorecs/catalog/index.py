"""What the batch and the speed layer need of each release, as numpy arrays: the catalog
collected once to the driver (and broadcast), so that a taste or a live profile is a few
vector operations over a user's release ids, never a join with the catalog.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from discorecs.affinities import ARTIST, CREDIT_COLUMNS, release_groups
from discorecs.flatlists import flat_lists, offsets_of, owners
from discorecs.genres import GENRES

if TYPE_CHECKING:
    from pyspark.sql import DataFrame


@dataclass(frozen=True)
class CatalogIndex:
    """What a taste needs of each release, as arrays: sorted ids, a bit per known genre
    (bit g = GENRES[g]), the styles (indices into ``style_names``) and the affinity
    groups (:mod:`discorecs.affinities`, indices into ``affinity_names``) as flat lists.

    Taste groups share one numbering, :attr:`group_names`: the genres, then the styles, then
    the affinity groups (artists before label-eras), each part in name order."""

    release_ids: np.ndarray
    genre_bits: np.ndarray
    style_offsets: np.ndarray
    style_ids: np.ndarray
    style_names: list[str]
    affinity_offsets: np.ndarray
    affinity_ids: np.ndarray
    affinity_names: pa.Array  # string, sorted
    artist_groups: int  # affinity ids below it are artists, the rest label-eras

    @classmethod
    def from_arrow(cls, releases: pa.Table) -> CatalogIndex:
        """From a table of release_id, genres (list of names), styles (list of names) and,
        when it has them, the credit columns the affinity groups are read from."""
        releases = releases.sort_by("release_id")
        genres = releases.column("genres").combine_chunks()
        styles = releases.column("styles").combine_chunks()
        genre_offsets, genre_values = flat_lists(genres)
        index = pc.index_in(genre_values, value_set=pa.array(GENRES))
        known = pc.is_valid(index).to_numpy(zero_copy_only=False)
        bits = np.zeros(releases.num_rows, dtype=np.int64)
        np.bitwise_or.at(
            bits,
            owners(genre_offsets)[known],
            np.left_shift(1, index.fill_null(0).to_numpy()[known].astype(np.int64)),
        )
        style_offsets, style_values = flat_lists(styles)
        style_names = sorted(pc.unique(style_values.drop_null()).to_pylist())
        style_ids = pc.index_in(style_values, value_set=pa.array(style_names, pa.string()))
        if all(column in releases.column_names for column in CREDIT_COLUMNS):
            rows, names = release_groups(releases)
        else:
            rows, names = np.zeros(0, np.int64), pa.array([], pa.string())
        encoded = names.dictionary_encode()
        order = pc.sort_indices(encoded.dictionary).to_numpy()
        rank = np.empty(len(order), dtype=np.int64)
        rank[order] = np.arange(len(order))
        return cls(
            releases.column("release_id").to_numpy(),
            bits,
            style_offsets,
            style_ids.fill_null(0).to_numpy().astype(np.int64),
            style_names,
            offsets_of(rows, releases.num_rows),
            rank[encoded.indices.to_numpy(zero_copy_only=False)],
            encoded.dictionary.take(pa.array(order)),
            pc.sum(pc.starts_with(encoded.dictionary, ARTIST)).as_py() or 0,
        )

    @property
    def group_names(self) -> pa.Array:
        """Every taste group's name: "g:" genres, "s:" styles, then the affinity groups."""
        return pa.concat_arrays([pa.array(self.features, pa.string()), self.affinity_names])

    def locate(self, release_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(position, found) of each release in the catalog's arrays (position 0 where the
        release is not in the catalog)."""
        release_ids = np.asarray(release_ids, dtype=np.int64)
        at = np.searchsorted(self.release_ids, release_ids)
        found = at < len(self.release_ids)
        found[found] = self.release_ids[at[found]] == release_ids[found]
        return np.where(found, at, 0), found

    def genre_bits_of(self, release_ids: np.ndarray) -> np.ndarray:
        """Each release's genre bits (int64); 0 for a release not in the catalog."""
        return self.genre_bits_at(*self.locate(release_ids))

    def genre_bits_at(self, at: np.ndarray, found: np.ndarray) -> np.ndarray:
        """The genre bits (int64) at catalog positions ``at`` (:meth:`locate`); 0 where not
        ``found``."""
        if not len(self.release_ids):
            return np.zeros(len(at), dtype=np.int64)
        return np.where(found, self.genre_bits[at], 0).astype(np.int64)

    @property
    def features(self) -> list[str]:
        """The taste vector's features: "g:" genres, then "s:" styles."""
        return [f"g:{g}" for g in GENRES] + [f"s:{s}" for s in self.style_names]


def genre_counts(bits: np.ndarray) -> np.ndarray:
    """How many of the 15 genres each release has, from its genre bits."""
    counts = np.zeros(len(bits), dtype=np.int64)
    for g in range(len(GENRES)):
        counts += (bits >> g) & 1
    return counts


def catalog_index(releases: DataFrame, affinities: bool = True) -> CatalogIndex:
    """The catalog's genres, styles and (when ``affinities`` and ``releases`` has the credit
    columns) affinity groups as arrays, collected to the driver. Genres that are not one of the
    15 are left out."""
    from pyspark.sql import functions as F

    credits = [c for c in CREDIT_COLUMNS if c in releases.columns]
    return CatalogIndex.from_arrow(
        releases.select(
            "release_id",
            F.coalesce(F.col("genres"), F.array()).alias("genres"),
            F.coalesce(F.col("styles"), F.array()).alias("styles"),
            *(credits if affinities and len(credits) == len(CREDIT_COLUMNS) else []),
        ).toArrow()
    )
