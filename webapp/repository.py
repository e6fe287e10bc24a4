"""Every CQL statement the site runs, prepared once per connection; plain models out.

Views never see CQL or driver types. When Cassandra is down or restarting, every method
raises :class:`ServingUnavailable` (the site answers 503); the driver keeps reconnecting in
the background, and a repository that never connected tries again on the next request, so the
site recovers by itself.

Why one module: every query the site makes reads here, next to the others, so that each can
be checked against the table that serves it (cassandra_schema/schema.cql).
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any, NamedTuple

from cassandra import DriverException, OperationTimedOut, ReadTimeout, Unavailable
from cassandra.cluster import NoHostAvailable

from discorecs import tables
from discorecs.cassandra import CassandraConnection, CassandraError, connect
from discorecs.errors import DiscorecsError
from discorecs.events import EventKind
from discorecs.genres import GENRES, scores_and_shares
from discorecs.settings import Settings
from discorecs.tables import STREAM_QUERY, leaderboard_bucket, name_prefix
from webapp.cache import BoundedCache
from webapp.models import (
    BatchRun,
    CollectionChange,
    FriendPick,
    GenreStanding,
    Health,
    Leaderboard,
    LeaderboardEntry,
    LiveScores,
    Profile,
    Recommendations,
    Release,
    ReleasePick,
    StoredAnswer,
    StreamHealth,
    User,
    UserPage,
    with_live_scores,
)

PUBLISHED_RUN_TTL = 10.0  # seconds a published run id is reused before it is read again
RECONNECT_EVERY = 2.0
READ_ATTEMPTS = 2  # a read that timed out on the client is asked once more
_UNAVAILABLE = (
    NoHostAvailable,
    OperationTimedOut,
    Unavailable,
    ReadTimeout,
    DriverException,
    CassandraError,
)

BOTH_VIEWS = "recommendation, pick_ids, profile, holdings, updated_at"
"""What a user's row of a run gives for their recommendations: the stored answer and the live
state (the API reads only these; the user page also the run's genre profile)."""

STATEMENTS = {
    "user": f"SELECT user_id, name, location, joined_at FROM {tables.USERS} WHERE user_id = ?",
    "users": f"SELECT user_id, name, location, joined_at FROM {tables.USERS} WHERE user_id IN ?",
    "random_user": f"SELECT user_id FROM {tables.USERS} WHERE token(user_id) >= ? LIMIT 1",
    "by_name": f"SELECT user_id, name FROM {tables.USERS_BY_NAME} WHERE name_prefix = ? "
    "AND name_lower >= ? AND name_lower < ? LIMIT ?",
    "published": f"SELECT run_id FROM {tables.PUBLISHED_RUNS} WHERE scope = ?",
    # Both views at once: the run's row and the user's live state (static columns).
    "recommendations": f"SELECT {BOTH_VIEWS} FROM {tables.RECOMMENDATIONS} "
    "WHERE user_id = ? AND run_id = ?",
    # The user page: the run's genre profile too.
    "user_run": f"SELECT genre_profile, {BOTH_VIEWS} FROM {tables.RECOMMENDATIONS} "
    "WHERE user_id = ? AND run_id = ?",
    "spare_picks": f"SELECT spare_picks FROM {tables.RECOMMENDATIONS} "
    "WHERE user_id = ? AND run_id = ?",
    "releases": f"SELECT release_id, title, artists, year, genres, styles, country, formats "
    f"FROM {tables.RELEASES} WHERE release_id IN ?",
    "collection_size": f"SELECT COUNT(*) FROM {tables.COLLECTIONS} WHERE user_id = ?",
    "live_row": f"SELECT profile, holdings, updated_at FROM {tables.RECOMMENDATIONS} "
    "WHERE user_id = ? LIMIT 1",
    "wanted_of": f"SELECT release_id FROM {tables.WANTLISTS} WHERE user_id = ? AND release_id IN ?",
    "leaderboard": f"SELECT rank, user_id, user_name, score, percentile "
    f"FROM {tables.GENRE_LEADERBOARDS} WHERE genre = ? AND run_id = ? "
    "AND bucket = ? AND rank >= ? AND rank <= ?",
    "runs": f"SELECT run_id, status, started_at, finished_at, step_counts, message "
    f"FROM {tables.BATCH_RUNS} WHERE scope = ? LIMIT ?",
    "stream": f"SELECT batch_id, processed_at, input_rows, dead_lettered, duration_ms, lag "
    f"FROM {tables.STREAM_PROGRESS} WHERE query_name = ? LIMIT ?",
}


def _timestamp(text: str | None) -> datetime | None:
    """A document's ISO 8601 time as the driver gives timestamps: naive, in UTC."""
    if not text:
        return None
    moment = datetime.fromisoformat(text)
    return moment.astimezone(UTC).replace(tzinfo=None) if moment.tzinfo else moment


class ServingUnavailable(DiscorecsError):
    """Cassandra is down or restarting; the site answers 503 until it is back."""


class CassandraRepository:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        # Releases and user names change only when the catalog or the users are regenerated:
        # most page views then need two queries, not four.
        self._release_cache = BoundedCache(200_000, ttl=60.0)
        self._user_cache = BoundedCache(200_000, ttl=60.0)
        self._connection: CassandraConnection | None = None
        self._prepared: dict[str, Any] = {}
        self._lock = threading.Lock()
        self._last_attempt = 0.0
        self._published: tuple[float, str | None] = (0.0, None)

    # -- connection --------------------------------------------------------------------------
    def _session(self):
        if self._connection is None:
            with self._lock:
                if self._connection is None:
                    now = time.monotonic()
                    if now - self._last_attempt < RECONNECT_EVERY:
                        raise ServingUnavailable("Cassandra is not reachable yet")
                    self._last_attempt = now
                    try:
                        connection = connect(
                            self.settings,
                            keyspace=self.settings.cassandra_keyspace,
                            connect_timeout=3,
                            request_timeout=5,
                        )
                        self._prepared = {
                            name: connection.prepare(cql) for name, cql in STATEMENTS.items()
                        }
                    except _UNAVAILABLE as error:
                        raise ServingUnavailable(str(error)) from error
                    self._connection = connection
        return self._connection.session

    def _run(self, name: str, params: Iterable[Any]) -> list[Any]:
        """The statement's rows. A read that timed out on the client is asked once more
        before the site answers 503: on a loaded machine every coordinator the driver tried
        can stall for seconds while a node dies or rejoins, and a second plan, a moment
        later, usually finds one that answers (every statement here is a read)."""
        session = self._session()
        params = tuple(params)
        for _ in range(READ_ATTEMPTS - 1):
            try:
                return list(session.execute(self._prepared[name], params))
            except OperationTimedOut:
                continue  # timed out on the client: once more
            except _UNAVAILABLE as error:
                raise ServingUnavailable(f"Cassandra did not answer: {error}") from error
        try:
            return list(session.execute(self._prepared[name], params))
        except _UNAVAILABLE as error:
            raise ServingUnavailable(f"Cassandra did not answer: {error}") from error

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    # -- reads -------------------------------------------------------------------------------
    def published_run(self) -> str | None:
        fetched_at, run_id = self._published
        if time.monotonic() - fetched_at < PUBLISHED_RUN_TTL and run_id:
            return run_id
        rows = self._run("published", [tables.BATCH_SCOPE])
        run_id = rows[0].run_id if rows else None
        self._published = (time.monotonic(), run_id)
        return run_id

    def user(self, user_id: int) -> User | None:
        rows = self._run("user", [user_id])
        return _user(rows[0]) if rows else None

    def users(self, user_ids: list[int]) -> dict[int, User]:
        found, missing = self._user_cache.get_many(list(dict.fromkeys(user_ids)))
        if missing:
            fetched = {row.user_id: _user(row) for row in self._run("users", [missing])}
            self._user_cache.put_many(fetched)
            found.update(fetched)
        return found

    def random_user_id(self) -> int | None:
        for _ in range(3):
            rows = self._run("random_user", [random.randint(-(2**63), 2**63 - 1)])
            if rows:
                return rows[0].user_id
        rows = self._run("random_user", [-(2**63)])
        return rows[0].user_id if rows else None

    def search_by_name(self, prefix: str, limit: int = 20) -> list[User]:
        lowered = prefix.strip().lower()
        if len(lowered) < 2:
            return []
        rows = self._run("by_name", [name_prefix(lowered), lowered, lowered + "\uffff", limit])
        return [User(row.user_id, row.name) for row in rows]

    def releases(self, release_ids: list[int]) -> dict[int, Release]:
        found, missing = self._release_cache.get_many(list(dict.fromkeys(release_ids)))
        if missing:
            fetched = self._fetch_releases(missing)
            self._release_cache.put_many(fetched)
            found.update(fetched)
        return found

    def _fetch_releases(self, release_ids: list[int]) -> dict[int, Release]:
        rows = self._run("releases", [release_ids])
        return {
            row.release_id: Release(
                row.release_id,
                row.title,
                list(row.artists or []),
                row.year,
                list(row.genres or []),
                list(row.styles or []),
                row.country,
                list(row.formats or []),
            )
            for row in rows
        }

    def answer_and_live(
        self, user_id: int, run_id: str
    ) -> tuple[StoredAnswer | None, LiveView | None]:
        """The user's answer in ``run_id`` as the batch rendered it (see
        ``tables.RECOMMENDATION_COLUMNS``) and their live state as the stream last applied it:
        one single-partition read, nothing rebuilt. (None, None) when the run has no answer
        for them."""
        rows = self._run("recommendations", [user_id, run_id])
        if not rows or not rows[0].recommendation:
            return None, None
        return stored_answer(rows[0]), live_view(rows[0])

    def spare_picks(self, user_id: int, run_id: str) -> str | None:
        """The JSON array of the user's spare picks in ``run_id`` (read only when a shown
        pick was taken since the run)."""
        rows = self._run("spare_picks", [user_id, run_id])
        return rows[0].spare_picks if rows else None

    def live_view(self, user_id: int) -> LiveView | None:
        """The user's live state alone (None if the stream has not applied any of theirs)."""
        rows = self._run("live_row", [user_id])
        return live_view(rows[0]) if rows else None

    def taken(self, user_id: int, live: LiveView | None, pick_ids: Sequence[int]) -> set[int]:
        """Which of ``pick_ids`` the user holds or wants now, as the stream last applied it
        (``live``): the speed view the site merges into the batch's. A user with a full list
        of changes (older ones may have dropped off) costs a read of the wantlist."""
        if live is None or not pick_ids:  # the stream has applied nothing of theirs
            return set()
        if len(live.changes) < tables.LATEST_CHANGES:  # every change it applied is listed
            wanted = wanted_by_changes(live.changes)
        else:
            wanted = {row.release_id for row in self._run("wanted_of", [user_id, list(pick_ids)])}
        return {pick for pick in pick_ids if pick in live.held or pick in wanted}

    def recommendations(self, user_id: int, run_id: str) -> Recommendations | None:
        """The run's recommendations merged with what the stream applied since
        (:func:`webapp.models.merge_views`)."""
        stored, live = self.answer_and_live(user_id, run_id)
        if stored is None:
            return None
        return self._merged(user_id, run_id, stored, live)

    def _merged(
        self, user_id: int, run_id: str, stored: StoredAnswer, live: LiveView | None
    ) -> Recommendations:
        taken = self.taken(user_id, live, stored.pick_ids)
        spares = self.spare_picks(user_id, run_id) if stored.adjusted(taken) else None
        return recommendations_of(stored.merged(taken, spares))

    def live_collection_size(self, user_id: int) -> int:
        return int(self._run("collection_size", [user_id])[0][0])

    def _changes(self, live: LiveView) -> list[CollectionChange]:
        releases = self.releases([change["release_id"] for change in live.changes])
        return [
            CollectionChange(
                _timestamp(change["event_time"]),
                change["kind"],
                releases.get(change["release_id"], Release(change["release_id"], None)),
            )
            for change in live.changes
        ]

    def user_page(self, user_id: int) -> UserPage | None:
        user = self.user(user_id)
        if user is None:
            return None
        run_id = self.published_run()
        rows = self._run("user_run", [user_id, run_id]) if run_id else []
        row = rows[0] if rows else None
        profile = genre_profile(run_id, row.genre_profile) if row and row.genre_profile else None
        stored = stored_answer(row) if row and row.recommendation else None
        live = live_view(row) if row else self.live_view(user_id)
        if live is not None:  # the stream has seen this user's collection change
            profile = with_live_scores(profile, live.scores)
        recommendations = None
        if stored is not None:
            recommendations = self._merged(user_id, run_id, stored, live)
        return UserPage(
            user=user,
            profile=profile,
            live_collection_size=(
                live.scores.collection_size if live else self.live_collection_size(user_id)
            ),
            recommendations=recommendations,
            changes=self._changes(live) if live else [],
        )

    def leaderboard(self, genre: str, page: int = 1, page_size: int = 50) -> Leaderboard:
        run_id = self.published_run()
        if run_id is None:
            return Leaderboard(genre, None, page, page_size, [], False)
        first = (page - 1) * page_size + 1
        last = first + page_size  # one extra row tells whether there is a next page
        rows: list[Any] = []
        for bucket in sorted({leaderboard_bucket(first), leaderboard_bucket(last)}):
            rows += self._run("leaderboard", [genre, run_id, bucket, first, last])
        entries = [
            LeaderboardEntry(row.rank, row.user_id, row.user_name, row.score, row.percentile)
            for row in rows
        ]
        return Leaderboard(
            genre, run_id, page, page_size, entries[:page_size], len(entries) > page_size
        )

    def health(self) -> Health:
        runs = [
            BatchRun(
                row.run_id,
                row.status,
                row.started_at,
                row.finished_at,
                dict(row.step_counts or {}),
                row.message,
            )
            for row in self._run("runs", [tables.BATCH_SCOPE, 5])
        ]
        return Health(self.published_run(), runs, self.stream_health())

    def stream_health(self, batches: int = 20) -> StreamHealth | None:
        rows = self._run("stream", [STREAM_QUERY, batches])
        if not rows:
            return None
        newest, oldest = rows[0].processed_at, rows[-1].processed_at
        span = (newest - oldest).total_seconds()
        if len(rows) > 1 and span > 0:
            # Events of the batches after the oldest, over the time they took to arrive.
            rate = sum(row.input_rows or 0 for row in rows[:-1]) / span
        else:  # one batch: its own processing rate
            rate = (rows[0].input_rows or 0) / max((rows[0].duration_ms or 0) / 1000, 0.001)
        return StreamHealth(
            len(rows), rate, rows[0].lag, newest, sum(row.dead_lettered or 0 for row in rows)
        )


def _user(row: Any) -> User:
    joined = row.joined_at if isinstance(row.joined_at, datetime) else None
    return User(row.user_id, row.name, row.location, joined)


def genre_profile(run_id: str, document: str) -> Profile:
    """A user's genre profile in ``run_id`` from its stored document (``PROFILE_FIELDS``)."""
    row = SimpleNamespace(**tables.decode_document(tables.PROFILE_FIELDS, document))
    scores, shares = dict(row.scores or {}), dict(row.shares or {})
    ranks, percentiles = dict(row.ranks or {}), dict(row.percentiles or {})
    standings = sorted(
        (
            GenreStanding(
                genre,
                scores.get(genre, 0.0),
                shares.get(genre, 0.0),
                ranks.get(genre),
                percentiles.get(genre),
            )
            for genre in GENRES
            if genre in scores
        ),
        key=lambda s: (-s.share, s.genre),
    )
    return Profile(run_id, row.collection_size or 0, standings, list(row.top_styles or []))


def stored_answer(row: Any) -> StoredAnswer:
    """A user's stored answer from their row of a run."""
    if row.pick_ids is None:  # stored by an earlier release (without spares)
        answer = {"left_out": [], **json.loads(row.recommendation)}
        ids = tuple(pick["release"]["release_id"] for pick in answer.get("releases") or [])
        return StoredAnswer(json.dumps(answer, ensure_ascii=False), ids)
    return StoredAnswer(row.recommendation, tables.release_ids(row.pick_ids))


def live_view(row: Any) -> LiveView | None:
    """The live state in a row of a user's partition (None if the stream wrote none)."""
    if row.profile is None:
        return None
    live = tables.decode_document(tables.LIVE_PROFILE_FIELDS, row.profile)
    scores = LiveScores(
        live["collection_size"] or 0,
        *scores_and_shares(live["genre_units"] or {}),
        row.updated_at,
    )
    listed = [tables.live_change(change) for change in live["latest_changes"] or []]
    return LiveView(scores, listed, tables.held_releases(row.holdings))


class LiveView(NamedTuple):
    """A user's live row as the repository reads it."""

    scores: LiveScores
    changes: list[dict[str, Any]]  # LIVE_CHANGE_FIELDS, newest first
    held: frozenset[int]  # the collection as the stream last applied it


WANTLIST_KINDS = (EventKind.WANTLIST_ADD.value, EventKind.WANTLIST_REMOVE.value)


def wanted_by_changes(changes: list[dict[str, Any]]) -> set[int]:
    """The releases whose latest wantlist change among ``changes`` (newest first) is an add."""
    latest: dict[int, str] = {}
    for change in changes:
        if change["kind"] in WANTLIST_KINDS:
            latest.setdefault(change["release_id"], change["kind"])
    return {release for release, kind in latest.items() if kind == EventKind.WANTLIST_ADD}


def recommendations_of(answer: dict[str, Any]) -> Recommendations:
    """The models of a recommendation answer (a stored document's JSON, merged)."""
    fields = {name: answer.get(name) for name in (*tables.RECOMMENDATION_FIELDS, "left_out")}

    def user(values: dict) -> User:
        return User(
            values["user_id"],
            values["name"],
            values.get("location"),
            _timestamp(values.get("joined_at")),
        )

    def friend(values: dict) -> FriendPick:
        return FriendPick(
            user(values["user"]),
            values["match"],
            list(values.get("shared_genres") or []),
            values.get("reason") or "",
        )

    def release(values: dict) -> ReleasePick:
        details = values["release"]
        return ReleasePick(
            Release(**{name: details.get(name) for name in tables.RELEASE_FIELDS}),
            values["score"],
            values.get("reason") or "",
        )

    return Recommendations(
        fields["run_id"],
        _timestamp(fields["generated_at"]),
        friend(fields["friend"]) if fields["friend"] else None,
        [friend(values) for values in fields["other_friends"] or []],
        [release(values) for values in fields["releases"] or []],
        list(fields["left_out"] or []),
    )
