"""Seeded factories of collection and activity events, consistent with each user's taste.

Pure: given the sampling catalog, a sample of users (taste, collection, wantlist) and a seed, the
sequence of events is fixed. The factories keep their own view of each user's collection or
wantlist as they emit events, so a remove is only ever for something the user holds at that
point of the sequence, and an add is never for something they already hold.

- collection factory: 70 % ``collection_add`` (a release drawn by the user's taste; skipped when
  already owned, so about 60 % of the events emitted are adds), 30 %
  ``collection_remove`` (one the user owns);
- activity factory: 50 % ``play`` (a release the user owns), 35 % ``wantlist_add`` (drawn by
  taste, neither owned nor wanted), 15 % ``wantlist_remove`` (one the user wants).

Users are picked with Zipf-like activity (a few users are very active, most are occasional).
Draws are made in blocks of numpy arrays; only the bookkeeping runs per event.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import numpy as np

from discorecs.events import Event, EventKind
from discorecs.users.generate import draw_release_positions
from discorecs.users.sampling_catalog import SamplingCatalog

BLOCK = 4096
ACTIVITY_EXPONENT = 1.5  # user k of the shuffled sample is picked with weight ~ 1 / k**0.67


@dataclass
class UserSample:
    """The users a producer emits events for, with their taste and holdings.

    ``genres``/``mixture``/``styles`` are row-aligned with ``user_ids`` (see
    :func:`discorecs.users.generate.taste_from_preferences`); ``collections`` and
    ``wantlists`` map a row to the set of release ids held.
    """

    user_ids: np.ndarray
    genres: np.ndarray
    mixture: np.ndarray
    styles: np.ndarray
    collections: list[set[int]]
    wantlists: list[set[int]]

    def __len__(self) -> int:
        return len(self.user_ids)


class _Factory:
    kinds: tuple[tuple[EventKind, float], ...] = ()

    def __init__(
        self,
        index: SamplingCatalog,
        sample: UserSample,
        seed: int,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        if len(sample) == 0:
            raise ValueError("no users to produce events for; run `discorecs generate-users`")
        self.index = index
        self.sample = sample
        self.rng = np.random.default_rng(seed)
        self.clock = clock
        weights = 1.0 / np.arange(1, len(sample) + 1) ** (1 / ACTIVITY_EXPONENT)
        self.activity = np.cumsum(weights / weights.sum())
        self.activity_order = self.rng.permutation(len(sample))
        self.kind_cumulative = np.cumsum([share for _, share in self.kinds])

    def __iter__(self) -> Iterator[Event]:
        """Events stamped with the clock as they are taken (i.e. sent), not when drawn.

        Event times travel with millisecond precision, and two events of one user never share
        one: a user's event in the same millisecond as their previous one is stamped a
        millisecond later. (At equal event times the stream and the batch let a remove win;
        a real producer should keep each user's event times strictly increasing too.)"""
        last: dict[int, datetime] = {}
        while True:
            for event_id, user, release, kind in self._block():
                now = self.clock()
                now = now.replace(microsecond=now.microsecond // 1000 * 1000)
                previous = last.get(user)
                if previous is not None and now <= previous:
                    now = previous + timedelta(milliseconds=1)
                last[user] = now
                yield Event(event_id, user, release, kind, now)

    def _block(self) -> list[tuple[str, int, int, EventKind]]:
        rng = self.rng
        rows = self.activity_order[
            np.minimum(np.searchsorted(self.activity, rng.random(BLOCK)), len(self.sample) - 1)
        ]
        kinds = np.searchsorted(self.kind_cumulative, rng.random(BLOCK) * self.kind_cumulative[-1])
        candidates = self.index.release_ids[
            draw_release_positions(
                self.index, self.sample.genres, self.sample.mixture, self.sample.styles, rows, rng
            )
        ]
        picks = rng.random(BLOCK)
        ids = rng.bytes(16 * BLOCK)
        events = []
        for i in range(BLOCK):
            row = int(rows[i])
            kind = self.kinds[int(kinds[i])][0]
            release = self._release_for(kind, row, int(candidates[i]), float(picks[i]))
            if release is None:
                continue
            event_id = str(uuid.UUID(bytes=ids[16 * i : 16 * i + 16], version=4))
            events.append((event_id, int(self.sample.user_ids[row]), release, kind))
        return events

    def _release_for(self, kind: EventKind, row: int, candidate: int, pick: float) -> int | None:
        raise NotImplementedError


def _pick(held: set[int], pick: float) -> int | None:
    """A deterministic element of ``held`` chosen by ``pick`` in [0, 1)."""
    if not held:
        return None
    ordered = sorted(held)
    return ordered[int(pick * len(ordered))]


class CollectionEvents(_Factory):
    """Adds and removes of records in users' collections."""

    kinds = ((EventKind.COLLECTION_ADD, 0.7), (EventKind.COLLECTION_REMOVE, 0.3))

    def _release_for(self, kind: EventKind, row: int, candidate: int, pick: float) -> int | None:
        owned = self.sample.collections[row]
        if kind is EventKind.COLLECTION_ADD:
            if candidate in owned:
                return None
            owned.add(candidate)
            return candidate
        release = _pick(owned, pick)
        if release is not None:
            owned.discard(release)
        return release


class ActivityEvents(_Factory):
    """Plays of owned records, and wantlist adds and removes."""

    kinds = (
        (EventKind.PLAY, 0.5),
        (EventKind.WANTLIST_ADD, 0.35),
        (EventKind.WANTLIST_REMOVE, 0.15),
    )

    def _release_for(self, kind: EventKind, row: int, candidate: int, pick: float) -> int | None:
        wanted = self.sample.wantlists[row]
        if kind is EventKind.PLAY:
            return _pick(self.sample.collections[row], pick)
        if kind is EventKind.WANTLIST_ADD:
            if candidate in wanted or candidate in self.sample.collections[row]:
                return None
            wanted.add(candidate)
            return candidate
        release = _pick(wanted, pick)
        if release is not None:
            wanted.discard(release)
        return release


FACTORIES: dict[str, type[_Factory]] = {"collection": CollectionEvents, "activity": ActivityEvents}
