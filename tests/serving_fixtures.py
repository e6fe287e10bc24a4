"""Seed the serving tables directly (known rows, so repository tests can assert exactly)."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from discorecs import tables
from discorecs.cassandra import connect
from discorecs.settings import Settings
from discorecs.statements import upsert_rows
from discorecs.tables import packed_release_ids as packed
from webapp.models import FriendPick, Recommendations, Release, ReleasePick, User, to_json

RUN = "20261125T030000Z-seeded"
OLD_RUN = "20261124T030000Z-older1"
WHEN = datetime(2026, 11, 25, 3, 0, tzinfo=UTC)


LIVE_DOCUMENT = tables.encode_document(
    tables.LIVE_PROFILE_FIELDS,
    {
        "collection_size": 1,
        "genre_units": {"Jazz": 360360},
        "latest_changes": [[WHEN, "e-1", "collection_add", 9101]],
    },
)
"""User 7001's live row: the stream has applied one change (Kind of Blue added)."""


USERS = {
    7001: User(7001, "Ada Lovelace", "London, UK", WHEN),
    7002: User(7002, "Charles Babbage", "London, UK", WHEN),
    7003: User(7003, "Grace Hopper", "New York, USA", WHEN),
}
HEAD_HUNTERS = Release(
    9102,
    "Head Hunters",
    ["Herbie Hancock"],
    1973,
    ["Jazz", "Funk / Soul"],
    ["Jazz-Funk"],
    "US",
    ["Vinyl"],
)
FRIENDS = {RUN: 7002, OLD_RUN: 7003}
# Collectors' names come in every script; the leaderboard's screenshot shows Japanese and
# Chinese ones.
LEADERBOARD_NAMES = ("Collector 1", "山田 花子", "王 芳", "Zoë Ødegård", "Collector 5")
"""User 7001's recommended friend in each seeded run."""


def recommendation_document(run: str, friend: int) -> str:
    """User 7001's answer in ``run``, as the batch renders it (the models' JSON)."""
    answer = Recommendations(
        run,
        WHEN,
        FriendPick(USERS[friend], 0.91, ["Jazz"], "you both collect Jazz, 91% taste match"),
        [FriendPick(USERS[7003], 0.5, [], "")],
        [ReleasePick(HEAD_HUNTERS, 0.3, "popular among Jazz-Funk collectors like you")],
    )
    return json.dumps(to_json(answer))


def seed_serving(settings: Settings) -> None:
    with connect(settings, keyspace=settings.cassandra_keyspace) as c:
        upsert_rows(
            c,
            tables.USERS,
            ("user_id", "name", "location", "joined_at"),
            [(u.user_id, u.name, u.location, u.joined_at) for u in USERS.values()],
        )
        upsert_rows(
            c,
            tables.USERS_BY_NAME,
            ("name_prefix", "name_lower", "user_id", "name"),
            [
                ("ad", "ada lovelace", 7001, "Ada Lovelace"),
                ("ch", "charles babbage", 7002, "Charles Babbage"),
            ],
        )
        upsert_rows(
            c,
            tables.RELEASES,
            ("release_id", "title", "artists", "genres", "styles", "year", "country", "formats"),
            [
                (9101, "Kind of Blue", ["Miles Davis"], ["Jazz"], ["Modal"], 1959, "US", ["Vinyl"]),
                (
                    9102,
                    "Head Hunters",
                    ["Herbie Hancock"],
                    ["Jazz", "Funk / Soul"],
                    ["Jazz-Funk"],
                    1973,
                    "US",
                    ["Vinyl"],
                ),
            ],
        )
        upsert_rows(
            c, tables.COLLECTIONS, ("user_id", "release_id", "added_at"), [(7001, 9101, WHEN)]
        )
        upsert_rows(
            c,
            tables.RECOMMENDATIONS,
            ("user_id", "profile", "holdings", "updated_at"),
            [(7001, LIVE_DOCUMENT, packed([9101]), WHEN)],
        )
        profile = tables.encode_document(
            tables.PROFILE_FIELDS,
            {
                "collection_size": 1,
                "scores": {"Jazz": 1.0},
                "shares": {"Jazz": 1.0},
                "ranks": {"Jazz": 2},
                "percentiles": {"Jazz": 50.0},
                "top_styles": ["Modal"],
            },
        )
        upsert_rows(
            c,
            tables.RECOMMENDATIONS,
            tables.RECOMMENDATION_COLUMNS,
            [
                (
                    7001,
                    run,
                    profile if run == RUN else None,
                    recommendation_document(run, friend),
                    "[]",
                    packed([9102]),
                )
                for run, friend in FRIENDS.items()
            ],
        )
        upsert_rows(
            c,
            tables.GENRE_LEADERBOARDS,
            ("genre", "run_id", "bucket", "rank", "user_id", "user_name", "score", "percentile"),
            [
                ("Jazz", RUN, 0, rank, 7000 + rank, name, 10.0 - rank, 90.0 - rank)
                for rank, name in enumerate(LEADERBOARD_NAMES, start=1)
            ],
        )
        upsert_rows(
            c,
            tables.BATCH_RUNS,
            ("scope", "started_at", "run_id", "finished_at", "status", "step_counts"),
            [(tables.BATCH_SCOPE, WHEN, RUN, WHEN, "succeeded", {"users_with_friend": 3})],
        )
        upsert_rows(
            c,
            tables.PUBLISHED_RUNS,
            ("scope", "run_id", "published_at"),
            [(tables.BATCH_SCOPE, RUN, WHEN)],
        )
