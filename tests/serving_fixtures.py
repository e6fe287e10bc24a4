"""Seed the serving tables directly (known rows, so repository tests can assert exactly)."""

from __future__ import annotations

from datetime import UTC, datetime

from discorecs import tables
from discorecs.cassandra import connect, upsert_rows
from discorecs.settings import Settings

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


def seed_serving(settings: Settings) -> None:
    with connect(settings, keyspace=settings.cassandra_keyspace) as c:
        upsert_rows(
            c,
            tables.USERS,
            ("user_id", "name", "location", "joined_at"),
            [
                (7001, "Ada Lovelace", "London, UK", WHEN),
                (7002, "Charles Babbage", "London, UK", WHEN),
                (7003, "Grace Hopper", "New York, USA", WHEN),
            ],
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
            tables.USER_LIVE_PROFILES,
            ("user_id", "profile", "updated_at"),
            [(7001, LIVE_DOCUMENT, WHEN)],
        )
        upsert_rows(
            c,
            tables.USER_GENRE_PROFILES,
            tables.PROFILE_COLUMNS,
            [
                (
                    7001,
                    RUN,
                    tables.encode_document(
                        tables.PROFILE_FIELDS,
                        {
                            "collection_size": 1,
                            "scores": {"Jazz": 1.0},
                            "shares": {"Jazz": 1.0},
                            "ranks": {"Jazz": 2},
                            "percentiles": {"Jazz": 50.0},
                            "top_styles": ["Modal"],
                        },
                    ),
                ),
            ],
        )
        for run, friend in ((RUN, 7002), (OLD_RUN, 7003)):
            upsert_rows(
                c,
                tables.RECOMMENDATIONS,
                tables.RECOMMENDATION_COLUMNS,
                [
                    (
                        7001,
                        run,
                        tables.encode_document(
                            tables.RECOMMENDATION_FIELDS,
                            {
                                "friend_id": friend,
                                "friend_match": 0.91,
                                "friend_reason": "you both collect Jazz, 91% taste match",
                                "shared_genres": ["Jazz"],
                                "other_friend_ids": [7003],
                                "other_friend_matches": [0.5],
                                "release_ids": [9102],
                                "release_scores": [0.3],
                                "release_reasons": ["popular among Jazz-Funk collectors like you"],
                                "generated_at": WHEN,
                            },
                        ),
                    ),
                ],
            )
        upsert_rows(
            c,
            tables.GENRE_LEADERBOARDS,
            ("genre", "run_id", "bucket", "rank", "user_id", "user_name", "score", "percentile"),
            [
                ("Jazz", RUN, 0, rank, 7000 + rank, f"Collector {rank}", 10.0 - rank, 90.0 - rank)
                for rank in range(1, 6)
            ],
        )
        upsert_rows(
            c,
            tables.BATCH_RUNS,
            ("scope", "started_at", "run_id", "finished_at", "status", "step_counts"),
            [("nightly", WHEN, RUN, WHEN, "succeeded", {"users_with_friend": 3})],
        )
        upsert_rows(
            c, tables.PUBLISHED_RUNS, ("scope", "run_id", "published_at"), [("nightly", RUN, WHEN)]
        )
