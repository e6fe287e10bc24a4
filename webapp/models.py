"""Plain data the repository returns and the views render (no Cassandra types leak out)."""

from __future__ import annotations

import json
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, NamedTuple, Protocol, runtime_checkable

from discorecs.tables import RELEASES_SHOWN, document_json, document_time


def to_json(value: Any) -> Any:
    """Dataclasses (and lists of them) as JSON-ready dicts, datetimes as ISO 8601.

    Walks the fields itself rather than calling ``dataclasses.asdict``, which deep-copies every
    value: a cost paid on every API request.
    """
    fields = getattr(type(value), "__dataclass_fields__", None)
    if fields is not None:
        return {name: to_json(getattr(value, name)) for name in fields}
    if isinstance(value, list | tuple):
        return [to_json(item) for item in value]
    if isinstance(value, dict):
        return {key: to_json(item) for key, item in value.items()}
    if isinstance(value, datetime):
        return document_time(value)
    return value


@dataclass(frozen=True)
class User:
    user_id: int
    name: str
    location: str | None = None
    joined_at: datetime | None = None


@dataclass(frozen=True)
class Release:
    release_id: int
    title: str | None
    artists: list[str] = field(default_factory=list)
    year: int | None = None
    genres: list[str] = field(default_factory=list)
    styles: list[str] = field(default_factory=list)
    country: str | None = None
    formats: list[str] = field(default_factory=list)

    @property
    def discogs_url(self) -> str:
        return f"https://www.discogs.com/release/{self.release_id}"


@dataclass(frozen=True)
class GenreStanding:
    genre: str
    score: float
    share: float
    rank: int | None
    percentile: float | None


@dataclass(frozen=True)
class Profile:
    run_id: str | None  # the batch run the ranks come from (None: no run yet)
    collection_size: int
    genres: list[GenreStanding]  # by share, largest first
    top_styles: list[str]
    live_at: datetime | None = None  # set when scores and shares are the stream's, as of then


@dataclass(frozen=True)
class LiveScores:
    """A user's genre scores as the stream last computed them (the real-time view)."""

    collection_size: int
    scores: dict[str, float]
    shares: dict[str, float]
    updated_at: datetime | None


def with_live_scores(profile: Profile | None, live: LiveScores) -> Profile:
    """The batch profile with the stream's newer scores and shares; ranks and percentiles stay
    those of the last batch run (a rank needs every other user's score)."""
    from discorecs.genres import GENRES

    standing = {s.genre: (s.rank, s.percentile) for s in profile.genres} if profile else {}
    genres = sorted(
        (
            GenreStanding(
                genre,
                live.scores[genre],
                live.shares.get(genre, 0.0),
                *standing.get(genre, (None, None)),
            )
            for genre in GENRES
            if genre in live.scores
        ),
        key=lambda s: (-s.share, s.genre),
    )
    return Profile(
        profile.run_id if profile else None,
        live.collection_size,
        genres,
        profile.top_styles if profile else [],
        live_at=live.updated_at,
    )


@dataclass(frozen=True)
class FriendPick:
    user: User
    match: float  # 0..1
    shared_genres: list[str]
    reason: str


@dataclass(frozen=True)
class ReleasePick:
    release: Release
    score: float
    reason: str


@dataclass(frozen=True)
class Recommendations:
    run_id: str
    generated_at: datetime | None
    friend: FriendPick | None
    other_friends: list[FriendPick]
    releases: list[ReleasePick]
    # Ids of the run's picks left out because the user has added or wanted them since the
    # run (per the stream); the next picks took their places.
    left_out: list[int] = field(default_factory=list)


class StoredAnswer(NamedTuple):
    """A user's recommendations as the batch stored them (``tables.RECOMMENDATION_COLUMNS``;
    the spare picks are read only when needed)."""

    document: str  # the API's answer when nothing was taken since the run
    pick_ids: tuple[int, ...]  # every pick's release id, in rank order

    def adjusted(self, taken: Collection[int], shown: int = RELEASES_SHOWN) -> bool:
        """Whether a shown pick was taken since the run (so the spares are needed)."""
        return any(pick in taken for pick in self.pick_ids[:shown])

    def merged(self, taken: Collection[int], spare_picks: str | None) -> dict[str, Any]:
        """The answer with the speed view merged in (:func:`merge_views`); ``spare_picks``:
        the row's JSON array of spares."""
        spares = json.loads(spare_picks) if spare_picks else []
        return merge_views(json.loads(self.document), spares, taken)

    def served(
        self, taken: Collection[int], spare_picks: Callable[[], str | None]
    ) -> tuple[str, list[int]]:
        """The answer's text and the picks left out. The stored text as it is when no shown
        pick was taken (nearly always: reading the spares, parsing and writing the answer
        again would cost more than the read), else the merged answer written out."""
        if not self.adjusted(taken):
            return self.document, []
        merged = self.merged(taken, spare_picks())
        return document_json(merged), merged["left_out"]


def merge_views(
    answer: dict[str, Any],
    spares: list[dict[str, Any]],
    taken: Collection[int],
    shown: int = RELEASES_SHOWN,
) -> dict[str, Any]:
    """A stored recommendation answer (``tables.RECOMMENDATION_FIELDS``) and its spare picks
    as the site serves them: the batch view merged with the speed view. ``taken``: the pick
    ids the user holds or wants now, per the stream. The first ``shown`` picks not taken
    are kept, in rank order, and ``left_out`` lists the taken ones that would have been
    shown."""
    kept: list[dict[str, Any]] = []
    left_out: list[int] = []
    for pick in [*(answer.get("releases") or []), *spares]:
        if len(kept) == shown:
            break
        release_id = pick["release"]["release_id"]
        if release_id in taken:
            left_out.append(release_id)
        else:
            kept.append(pick)
    return {**answer, "releases": kept, "left_out": left_out}


@dataclass(frozen=True)
class CollectionChange:
    event_time: datetime
    kind: str
    release: Release


@dataclass(frozen=True)
class LeaderboardEntry:
    rank: int
    user_id: int
    user_name: str | None
    score: float
    percentile: float


@dataclass(frozen=True)
class Leaderboard:
    genre: str
    run_id: str | None
    page: int
    page_size: int
    entries: list[LeaderboardEntry]
    has_next: bool


@dataclass(frozen=True)
class BatchRun:
    run_id: str
    status: str
    started_at: datetime | None
    finished_at: datetime | None
    counts: dict[str, int]
    message: str | None = None


@dataclass(frozen=True)
class StreamHealth:
    batches: int
    events_per_second: float
    last_lag: int | None
    last_batch_at: datetime | None
    dead_lettered: int


@dataclass(frozen=True)
class Health:
    published_run: str | None
    last_runs: list[BatchRun]
    stream: StreamHealth | None


@dataclass(frozen=True)
class UserPage:
    user: User
    profile: Profile | None
    live_collection_size: int
    recommendations: Recommendations | None
    changes: list[CollectionChange]


@runtime_checkable
class Repository(Protocol):
    """What the views read, and all they may: :class:`webapp.repository.CassandraRepository`
    serves it from Cassandra, the views' tests from a fake; both are checked against this
    (tests/test_webapp_views.py), so neither can drift from what the views call.

    ``live`` is the repository's own token for a user's live state (what ``answer_and_live``
    and ``live_view`` return, ``None`` when the stream has not seen the user); the views only
    pass it back to :meth:`taken`."""

    def published_run(self) -> str | None: ...

    def user(self, user_id: int) -> User | None: ...

    def answer_and_live(self, user_id: int, run_id: str) -> tuple[StoredAnswer | None, Any]: ...

    def live_view(self, user_id: int) -> Any: ...

    def taken(self, user_id: int, live: Any, pick_ids: Sequence[int]) -> set[int]: ...

    def spare_picks(self, user_id: int, run_id: str) -> str | None: ...

    def user_page(self, user_id: int) -> UserPage | None: ...

    def leaderboard(self, genre: str, page: int = 1, page_size: int = 50) -> Leaderboard: ...

    def health(self) -> Health: ...

    def search_by_name(self, prefix: str, limit: int = 20) -> list[User]: ...

    def random_user_id(self) -> int | None: ...
