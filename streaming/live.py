"""The real-time view's per-user arithmetic: a user's live genre profile after a micro-batch.

Pure (numpy and dicts, no Spark, no Cassandra), so it is tested on tiny inline data; the
stream's executor pass (:func:`streaming.job.apply_batch`) reads each touched user's live row
and held releases, calls :func:`next_profile` and writes the result.

Genre units make the profile exact under any number of updates: a release with n of the 15
genres adds ``GENRE_UNITS // n`` units to each (an integer, since GENRE_UNITS is divisible by
1..15), so a profile updated by thousands of micro-batches never drifts by rounding and equals
one computed from the whole collection in a single pass. Score = units / GENRE_UNITS (a record
with n genres counts 1/n towards each, the batch layer's formula); share = units / total.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np

from spark_jobs.tastes import GENRE_NAMES, CatalogIndex, genre_counts

GENRE_UNITS = 360_360
"""lcm(1..15): see the module docstring."""


@dataclass(frozen=True)
class LiveProfile:
    """A user's collection size and genre units (genres with none are absent)."""

    collection_size: int
    genre_units: dict[str, int] = field(default_factory=dict)

    @property
    def scores(self) -> dict[str, float]:
        return {genre: units / GENRE_UNITS for genre, units in self.genre_units.items()}

    @property
    def shares(self) -> dict[str, float]:
        total = sum(self.genre_units.values())
        return {genre: units / total for genre, units in self.genre_units.items()}

    @classmethod
    def of_collection(cls, release_ids: Iterable[int], catalog: CatalogIndex) -> LiveProfile:
        """The profile of a whole collection (records missing from the catalog count towards
        the size only)."""
        ids = np.fromiter(release_ids, dtype=np.int64)
        return cls(len(ids), genre_units(catalog.genre_bits_of(ids), np.ones(len(ids), np.int64)))


def genre_units(bits: np.ndarray, signs: np.ndarray) -> dict[str, int]:
    """The genre units of releases given by their genre bits (``CatalogIndex.genre_bits``),
    each counted ``signs`` times (+1 added, -1 removed); genres that sum to 0 are absent."""
    bits = bits.astype(np.int64)
    genres = genre_counts(bits)
    each = np.where(genres > 0, GENRE_UNITS // np.maximum(genres, 1), 0) * signs
    units = {}
    for g, name in enumerate(GENRE_NAMES):
        total = int(each[((bits >> g) & 1) == 1].sum())
        if total:
            units[name] = total
    return units


def next_profile(
    start: LiveProfile,
    decided: Iterable[tuple[int, bool]],
    held: set[int],
    catalog: CatalogIndex,
) -> LiveProfile:
    """The profile after the batch's deciding collection events ``decided`` ((release_id,
    is_add), one per release: see :func:`spark_jobs.transforms.flag_deciding`), given the
    releases among them the user ``held`` before the batch. An add of a release not held
    counts +1, a remove of a held one -1; a repeated add or a remove of something not held
    changes nothing."""
    effective = [
        (release, 1 if is_add else -1) for release, is_add in decided if is_add != (release in held)
    ]
    if not effective:
        return start
    releases = np.array([release for release, _ in effective], dtype=np.int64)
    signs = np.array([sign for _, sign in effective], dtype=np.int64)
    units = dict(start.genre_units)
    for genre, delta in genre_units(catalog.genre_bits_of(releases), signs).items():
        units[genre] = units.get(genre, 0) + delta
    return LiveProfile(
        start.collection_size + int(signs.sum()),
        {genre: value for genre, value in units.items() if value > 0},
    )
