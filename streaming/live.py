"""The real-time view's per-user arithmetic: a user's live genre profile after a micro-batch.

Pure (numpy and dicts, no Spark, no Cassandra), so it is tested on tiny inline data; the
stream's executor pass (:func:`streaming.job.apply_partition`) reads each touched user's live row,
calls :func:`next_profile` and writes the result.

A live profile carries the releases the user holds (as the stream last applied them), so a
micro-batch decides which adds and removes change anything from the live row alone: one
single-row read per user instead of a read of their collection. Genre units make the profile
exact under any number of updates: a release with n of the 15 genres adds
``GENRE_UNITS // n`` units to each (an integer, since GENRE_UNITS is divisible by 1..15), so a
profile updated by thousands of micro-batches never drifts by rounding and equals one computed
from the whole collection in a single pass. Score = units / GENRE_UNITS (a record with n genres
counts 1/n towards each, the batch layer's formula); share = units / total.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from discorecs import tables
from spark_jobs.tastes import GENRE_NAMES, CatalogIndex

GENRE_UNITS = 360_360
"""lcm(1..15): see the module docstring."""

HOLDINGS_DTYPE = np.dtype(">i8")
"""How the holdings are stored (``holdings`` blob): sorted release ids, 8 bytes big-endian."""


@dataclass(frozen=True)
class LiveProfile:
    """The releases a user holds and their genre units (genres with none are absent)."""

    holdings: frozenset[int] = frozenset()
    genre_units: dict[str, int] = field(default_factory=dict)

    @property
    def collection_size(self) -> int:
        return len(self.holdings)

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
        holdings = frozenset(int(r) for r in release_ids)
        ids = np.fromiter(holdings, dtype=np.int64, count=len(holdings))
        return cls(holdings, genre_units(catalog.genre_bits_of(ids), np.ones(len(ids), np.int64)))

    def document(self) -> str:
        """The live row's ``profile`` (``tables.LIVE_PROFILE_FIELDS``): what the site shows,
        and the genre units the next micro-batch starts from. Genres in name order, so the
        same profile is the same text however the micro-batches that built it were split."""

        def by_genre(values: dict[str, float]) -> dict[str, float]:
            return dict(sorted(values.items()))

        return tables.encode_document(
            tables.LIVE_PROFILE_FIELDS,
            {
                "collection_size": self.collection_size,
                "genre_units": by_genre(self.genre_units),
                "scores": by_genre(self.scores),
                "shares": by_genre(self.shares),
            },
        )

    def holdings_blob(self) -> bytes:
        """The live row's ``holdings``."""
        return np.array(sorted(self.holdings), dtype=HOLDINGS_DTYPE).tobytes()

    @classmethod
    def of_row(cls, document: str | None, holdings: bytes | None) -> LiveProfile:
        """The profile a live row (``document()``, ``holdings_blob()``) stores."""
        fields = tables.decode_document(tables.LIVE_PROFILE_FIELDS, document)
        held = np.frombuffer(holdings or b"", dtype=HOLDINGS_DTYPE)
        return cls(frozenset(held.tolist()), dict(fields["genre_units"] or {}))


GENRE_BIT = np.arange(len(GENRE_NAMES), dtype=np.int64)


def genre_units(bits: np.ndarray, signs: np.ndarray) -> dict[str, int]:
    """The genre units of releases given by their genre bits (``CatalogIndex.genre_bits``),
    each counted ``signs`` times (+1 added, -1 removed); genres that sum to 0 are absent.
    One (releases x genres) 0/1 matrix product: called once per touched user per batch."""
    has = (bits.astype(np.int64)[:, None] >> GENRE_BIT) & 1
    genres = has.sum(axis=1)
    each = np.where(genres > 0, GENRE_UNITS // np.maximum(genres, 1), 0) * signs
    totals = each @ has
    return {GENRE_NAMES[g]: int(totals[g]) for g in np.flatnonzero(totals)}


def deciding_events(
    rows: Iterable[Any], add: str, remove: str
) -> dict[int, list[tuple[int, bool]]]:
    """Per user, the (release_id, is_add) of the event that decides each of their (user,
    release) pairs among ``rows`` (valid events: user_id, release_id, kind, event_time,
    event_id) whose kind is ``add`` or ``remove``.

    The rule of :func:`spark_jobs.transforms.latest_events`: the latest event time wins, at
    equal times a remove beats an add (as a Cassandra tombstone beats a write of the same
    timestamp, which is how the stream writes them), then the larger event id."""
    best: dict[tuple[int, int], tuple[Any, bool, str]] = {}
    for row in rows:
        if row.kind != add and row.kind != remove:
            continue
        pair = (row.user_id, row.release_id)
        rank = (row.event_time, row.kind == remove, row.event_id)
        if pair not in best or rank > best[pair]:
            best[pair] = rank
    decided: dict[int, list[tuple[int, bool]]] = defaultdict(list)
    for (user, release), (_, is_remove, _) in best.items():
        decided[user].append((release, not is_remove))
    return dict(decided)


def next_profile(
    start: LiveProfile, decided: Iterable[tuple[int, bool]], catalog: CatalogIndex
) -> LiveProfile:
    """The profile after the batch's deciding collection events ``decided`` ((release_id,
    is_add), one per release: see :func:`deciding_events`). An add of a
    release not held counts +1, a remove of a held one -1; a repeated add or a remove of
    something not held changes nothing."""
    effective = [
        (release, 1 if is_add else -1)
        for release, is_add in decided
        if is_add != (release in start.holdings)
    ]
    if not effective:
        return start
    releases = np.array([release for release, _ in effective], dtype=np.int64)
    signs = np.array([sign for _, sign in effective], dtype=np.int64)
    units = dict(start.genre_units)
    for genre, delta in genre_units(catalog.genre_bits_of(releases), signs).items():
        units[genre] = units.get(genre, 0) + delta
    added = {release for release, sign in effective if sign > 0}
    removed = {release for release, sign in effective if sign < 0}
    return LiveProfile(
        (start.holdings - removed) | added,
        {genre: value for genre, value in units.items() if value > 0},
    )
