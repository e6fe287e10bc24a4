"""Cassandra table names, one constant per table in ``cassandra_schema/schema.cql``.

Code refers to tables only through these names; a test checks that each one is created by the
schema file and that the schema creates nothing unnamed here.
"""

RELEASES = "releases"
USERS = "users"
USERS_BY_NAME = "users_by_name"
COLLECTIONS = "collections"
WANTLISTS = "wantlists"
COLLECTION_CHANGES = "collection_changes"
USER_GENRE_PROFILES = "user_genre_profiles"
USER_LIVE_PROFILES = "user_live_profiles"
GENRE_LEADERBOARDS = "genre_leaderboards"
RECOMMENDATIONS = "recommendations"
BATCH_RUNS = "batch_runs"
PUBLISHED_RUNS = "published_runs"
DEAD_LETTERS = "dead_letters"
STREAM_PROGRESS = "stream_progress"

ALL_TABLES: tuple[str, ...] = (
    RELEASES,
    USERS,
    USERS_BY_NAME,
    COLLECTIONS,
    WANTLISTS,
    COLLECTION_CHANGES,
    USER_GENRE_PROFILES,
    USER_LIVE_PROFILES,
    GENRE_LEADERBOARDS,
    RECOMMENDATIONS,
    BATCH_RUNS,
    PUBLISHED_RUNS,
    DEAD_LETTERS,
    STREAM_PROGRESS,
)

LEADERBOARD_BUCKET_SIZE = 10_000
"""Ranks per leaderboard partition: rank r of a genre lives in bucket (r - 1) // 10_000, so a
genre with 10M users is 1,000 partitions of 10K rows, never one huge partition."""


def leaderboard_bucket(rank: int) -> int:
    """The leaderboard partition bucket that holds 1-based ``rank``."""
    if rank < 1:
        raise ValueError(f"ranks start at 1, got {rank}")
    return (rank - 1) // LEADERBOARD_BUCKET_SIZE


def name_prefix(name: str) -> str:
    """The ``users_by_name`` partition of a name: its first two lower-cased characters."""
    return name.strip().lower()[:2]


# The columns each batch run writes, in the order the writers and fixtures give them.
PROFILE_COLUMNS = (
    "user_id",
    "run_id",
    "collection_size",
    "scores",
    "shares",
    "ranks",
    "percentiles",
    "top_styles",
)
LEADERBOARD_COLUMNS = (
    "genre",
    "run_id",
    "bucket",
    "rank",
    "user_id",
    "user_name",
    "score",
    "percentile",
)
RECOMMENDATION_COLUMNS = (
    "user_id",
    "run_id",
    "friend_id",
    "friend_match",
    "friend_reason",
    "shared_genres",
    "other_friend_ids",
    "other_friend_matches",
    "release_ids",
    "release_scores",
    "release_reasons",
    "generated_at",
)

STREAM_QUERY = "discorecs-stream"
"""The speed layer's query name: its checkpoint folder and its key in ``stream_progress``."""
