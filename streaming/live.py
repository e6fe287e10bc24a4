"""The real-time view's per-user arithmetic: a user's live genre profile after a micro-batch.

Pure (numpy and dicts, no Spark, no Cassandra), so it is tested on tiny inline data; the
stream's executor pass (:func:`streaming.apply.apply_partition`) reads each touched user's live row,
calls :func:`next_profile` and writes the result.

A live profile carries the releases the user holds (as the stream last applied them), so a
micro-batch decides which adds and removes change anything from the live row alone: one
single-row read per user instead of a read of their collection. Genre units make the profile
exact under any number of updates: a release with n of the 15 genres adds
``GENRE_UNITS // n`` units to each (an integer, since GENRE_UNITS is divisible by 1..15), so a
profile updated by thousands of micro-batches never drifts by rounding and equals one computed
from the whole collection in a single pass. The site derives scores and shares from the units
(``discorecs.genres.scores_and_shares``).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cache
from typing import Any, NamedTuple

import numpy as np

from discorecs import tables
from discorecs.catalog.index import CatalogIndex
from discorecs.genres import GENRE_UNITS, GENRES, scores_and_shares
from discorecs.tables import LATEST_CHANGES


class Change(NamedTuple):
    """One collection or wantlist change, as the user page lists it (``LIVE_CHANGE_FIELDS``),
    with the time as text. Every touched user's changes are saved, loaded and encoded every
    micro-batch, so the stream builds them as plain tuples; a Change is equal to the tuple
    of its fields."""

    event_time: str  # ISO 8601 in UTC with microseconds (see change_time): sorts as it reads
    event_id: str
    kind: str
    release_id: int


def change_time(moment: datetime) -> str:
    """A change's ``event_time``: always the same width, so text order is time order."""
    return moment.astimezone(UTC).isoformat(timespec="microseconds")


def latest_changes(*changes: Iterable[tuple], keep: int = LATEST_CHANGES) -> tuple[tuple, ...]:
    """The ``keep`` latest of ``changes`` (Change tuples; an event id counts once), newest
    first, then by event id: the same list however the changes were split between
    micro-batches."""
    unique = {change[1]: change for group in changes for change in group}
    by_id = sorted(unique.values(), key=_event_id)
    return tuple(sorted(by_id, key=_event_time, reverse=True)[:keep])


def _event_time(change: tuple) -> str:
    return change[0]


def _event_id(change: tuple) -> str:
    return change[1]


@dataclass(frozen=True)
class LiveProfile:
    """The releases a user holds and their genre units (genres with none are absent), and
    their latest changes (newest first). ``blob``: the holdings as ``holdings_blob()``
    returns them, when already known (a profile read from a live row or the stream's copy
    and not changed since), so a user whose holdings did not change is not sorted again."""

    holdings: frozenset[int] = frozenset()
    genre_units: dict[str, int] = field(default_factory=dict)
    changes: tuple[tuple, ...] = ()
    blob: bytes | None = field(default=None, compare=False, repr=False)

    @property
    def collection_size(self) -> int:
        return len(self.holdings)

    @property
    def scores(self) -> dict[str, float]:
        return scores_and_shares(self.genre_units)[0]

    @property
    def shares(self) -> dict[str, float]:
        return scores_and_shares(self.genre_units)[1]

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
        return tables.encode_document(
            tables.LIVE_PROFILE_FIELDS,
            {
                "collection_size": len(self.holdings),
                "genre_units": dict(sorted(self.genre_units.items())),
                "latest_changes": self.changes,
            },
        )

    def holdings_blob(self) -> bytes:
        """The live row's ``holdings``."""
        return self.blob if self.blob is not None else holdings_bytes(self.holdings)

    @classmethod
    def of_blob(
        cls, holdings: bytes | None, genre_units: dict[str, int], changes: tuple[tuple, ...]
    ) -> LiveProfile:
        """The profile with the holdings ``holdings_blob()`` gave."""
        return cls(tables.held_releases(holdings), genre_units, changes, holdings or b"")

    @classmethod
    def of_row(cls, document: str | None, holdings: bytes | None) -> LiveProfile:
        """The profile a live row (``document()``, ``holdings_blob()``) stores."""
        fields = tables.decode_document(tables.LIVE_PROFILE_FIELDS, document)
        changes = tuple(
            tuple(Change(**tables.live_change(listed)))  # plain tuples, as the stream builds
            for listed in fields["latest_changes"] or ()
        )
        return cls.of_blob(holdings, dict(fields["genre_units"] or {}), changes)


def holdings_bytes(holdings: Iterable[int]) -> bytes:
    """Release ids as a live row's ``holdings`` blob: sorted, packed as
    ``tables.packed_release_ids`` packs them."""
    return tables.packed_release_ids(sorted(holdings))


GENRE_BIT = np.arange(len(GENRES), dtype=np.int64)


def genre_units(bits: np.ndarray, signs: np.ndarray) -> dict[str, int]:
    """The genre units of releases given by their genre bits (``CatalogIndex.genre_bits``),
    each counted ``signs`` times (+1 added, -1 removed); genres that sum to 0 are absent.
    One (releases x genres) 0/1 matrix product: called once per touched user per batch."""
    has = (bits.astype(np.int64)[:, None] >> GENRE_BIT) & 1
    genres = has.sum(axis=1)
    each = np.where(genres > 0, GENRE_UNITS // np.maximum(genres, 1), 0) * signs
    totals = each @ has
    return {GENRES[g]: int(totals[g]) for g in np.flatnonzero(totals)}


def deciding_events(
    rows: Iterable[Any], add: str, remove: str
) -> dict[int, list[tuple[int, bool]]]:
    """Per user, the (release_id, is_add) of the event that decides each of their (user,
    release) pairs among ``rows`` (valid events: user_id, release_id, kind, event_time,
    event_id) whose kind is ``add`` or ``remove``.

    The rule of :class:`discorecs.events.Holdings` (the batch applies it too): the latest
    event time wins, at equal times a remove beats an add (as a Cassandra tombstone beats a
    write of the same timestamp, which is how the stream writes them), then the larger event
    id."""
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


@cache
def units_of_genres(bits: int) -> tuple[tuple[str, int], ...]:
    """(genre, units) of a release with the genre bits ``bits``: ``GENRE_UNITS // n`` to each
    of its n genres (the arithmetic of :func:`genre_units`, for one release at a time)."""
    genres = [GENRES[g] for g in range(len(GENRES)) if bits >> g & 1]
    return tuple((genre, GENRE_UNITS // len(genres)) for genre in genres)


def genre_bits_by_release(releases: Iterable[int], catalog: CatalogIndex) -> dict[int, int]:
    """Each release's genre bits (``CatalogIndex.genre_bits``; 0 for one not in the catalog),
    looked up together: once per partition of a micro-batch, not once per user."""
    ids = np.fromiter(set(releases), dtype=np.int64)
    return dict(zip(ids.tolist(), catalog.genre_bits_of(ids).tolist(), strict=True))


def next_profile(
    start: LiveProfile,
    decided: Iterable[tuple[int, bool]],
    catalog: CatalogIndex,
    changes: Iterable[tuple] = (),
    genre_bits: Mapping[int, int] | None = None,
) -> LiveProfile:
    """The profile after the batch's deciding collection events ``decided`` ((release_id,
    is_add), one per release: see :func:`deciding_events`) and its ``changes`` (every
    collection and wantlist event of the user, as Change tuples). An add of a release not
    held counts +1, a remove of a held one -1; a repeated add or a remove of something not
    held changes nothing. ``genre_bits``: the decided releases' genre bits, if the caller
    looked them up for many users at once (:func:`genre_bits_by_release`)."""
    latest = latest_changes(start.changes, changes) if changes else start.changes
    effective = [
        (release, is_add) for release, is_add in decided if is_add != (release in start.holdings)
    ]
    if not effective:
        return LiveProfile(start.holdings, start.genre_units, latest, start.blob)
    if genre_bits is None:
        genre_bits = genre_bits_by_release((release for release, _ in effective), catalog)
    units = dict(start.genre_units)
    holdings = set(start.holdings)
    for release, is_add in effective:
        sign = 1 if is_add else -1
        for genre, value in units_of_genres(genre_bits[release]):
            units[genre] = units.get(genre, 0) + sign * value
        if is_add:
            holdings.add(release)
        else:
            holdings.discard(release)
    return LiveProfile(
        frozenset(holdings),
        {genre: value for genre, value in units.items() if value > 0},
        latest,
        holdings_bytes(holdings),  # once: the live row and the stream's copy both store it
    )
