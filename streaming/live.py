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
from datetime import UTC, datetime
from typing import Any, NamedTuple

import numpy as np

from discorecs import tables
from spark_jobs.tastes import GENRE_NAMES, CatalogIndex

GENRE_UNITS = 360_360
"""lcm(1..15): see the module docstring."""

HOLDINGS_DTYPE = np.dtype(">i8")
"""How the holdings are stored (``holdings`` blob): sorted release ids, 8 bytes big-endian."""

LATEST_CHANGES = 10
"""How many of a user's latest collection and wantlist changes the live row keeps (what the
user page lists)."""


class Change(NamedTuple):
    """One collection or wantlist change, as the user page lists it. A plain tuple with the
    time as text: a live row's changes are copied, sorted and saved every micro-batch."""

    event_time: str  # ISO 8601 in UTC with microseconds (see change_time): sorts as it reads
    event_id: str
    kind: str
    release_id: int

    def fields(self) -> dict[str, Any]:
        return {
            "event_time": self.event_time,
            "event_id": self.event_id,
            "kind": self.kind,
            "release_id": self.release_id,
        }

    @classmethod
    def of_fields(cls, fields: dict[str, Any]) -> Change:
        return cls(fields["event_time"], fields["event_id"], fields["kind"], fields["release_id"])


def change_time(moment: datetime) -> str:
    """A change's ``event_time``: always the same width, so text order is time order."""
    return moment.astimezone(UTC).isoformat(timespec="microseconds")


def latest_changes(*changes: Iterable[Change], keep: int = LATEST_CHANGES) -> tuple[Change, ...]:
    """The ``keep`` latest of ``changes`` (an event id counts once), newest first, then by
    event id: the same list however the changes were split between micro-batches."""
    unique = {change.event_id: change for group in changes for change in group}
    by_id = sorted(unique.values(), key=lambda change: change.event_id)
    return tuple(sorted(by_id, key=lambda change: change.event_time, reverse=True)[:keep])


@dataclass(frozen=True)
class LiveProfile:
    """The releases a user holds and their genre units (genres with none are absent), and
    their latest changes (newest first)."""

    holdings: frozenset[int] = frozenset()
    genre_units: dict[str, int] = field(default_factory=dict)
    changes: tuple[Change, ...] = ()

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
        and the genre units and changes the next micro-batch starts from. Genres in name
        order, so the same profile is the same text however the micro-batches that built it
        were split."""

        def by_genre(values: dict[str, float]) -> dict[str, float]:
            return dict(sorted(values.items()))

        return tables.encode_document(
            tables.LIVE_PROFILE_FIELDS,
            {
                "collection_size": self.collection_size,
                "genre_units": by_genre(self.genre_units),
                "scores": by_genre(self.scores),
                "shares": by_genre(self.shares),
                "latest_changes": [change.fields() for change in self.changes],
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
        changes = tuple(Change.of_fields(c) for c in fields["latest_changes"] or ())
        return cls(frozenset(held.tolist()), dict(fields["genre_units"] or {}), changes)


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
    start: LiveProfile,
    decided: Iterable[tuple[int, bool]],
    catalog: CatalogIndex,
    changes: Iterable[Change] = (),
) -> LiveProfile:
    """The profile after the batch's deciding collection events ``decided`` ((release_id,
    is_add), one per release: see :func:`deciding_events`) and its ``changes`` (every
    collection and wantlist event of the user). An add of a release not held counts +1, a
    remove of a held one -1; a repeated add or a remove of something not held changes
    nothing."""
    latest = latest_changes(start.changes, changes)
    effective = [
        (release, 1 if is_add else -1)
        for release, is_add in decided
        if is_add != (release in start.holdings)
    ]
    if not effective:
        return LiveProfile(start.holdings, start.genre_units, latest)
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
        latest,
    )
