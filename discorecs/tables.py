"""Cassandra table names, one constant per table in ``cassandra_schema/schema.cql``.

Code refers to tables only through these names; a test checks that each one is created by the
schema file and that the schema creates nothing unnamed here.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

RELEASES = "releases"
USERS = "users"
USERS_BY_NAME = "users_by_name"
COLLECTIONS = "collections"
WANTLISTS = "wantlists"
GENRE_LEADERBOARDS = "genre_leaderboards"
RECOMMENDATIONS = "recommendations_by_user"
"""A user's partition: a row per run of the batch's genre profile and recommendations, and
the stream's live state of the user as static columns (LIVE_COLUMNS), so that the site reads
both views at once."""
BATCH_RUNS = "batch_runs"
PUBLISHED_RUNS = "published_runs"
BATCH_SCOPE = "nightly"
"""The scope of the nightly batch's rows in BATCH_RUNS and PUBLISHED_RUNS (the partition key
leaves room for other jobs that publish runs)."""
DEAD_LETTERS = "dead_letters"
STREAM_PROGRESS = "stream_progress"

ALL_TABLES: tuple[str, ...] = (
    RELEASES,
    USERS,
    USERS_BY_NAME,
    COLLECTIONS,
    WANTLISTS,
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


# A user's row of a batch run (RECOMMENDATION_COLUMNS, in the order the writers and fixtures
# give them) holds a genre profile and a recommendation, each one JSON document; *_FIELDS are
# their keys (the batch builds them with these names, the site reads them).
PROFILE_FIELDS = (
    "collection_size",
    "scores",
    "shares",
    "ranks",
    "percentiles",
    "top_styles",
)
# A recommendation document is the API's answer itself (GET /api/users/<id>/recommendations,
# webapp.models.Recommendations as JSON) when nothing was added or wanted since the run: the
# batch renders it whole, with the friends' names and the releases' details in it, so the
# site answers with one single-partition read and sends the text as stored. Its keys are
# RECOMMENDATION_FIELDS; a friend pick is {"user": USER_FIELDS, "match", "shared_genres",
# "reason"}, a release pick {"release": RELEASE_FIELDS, "score", "reason"}; times are
# document_time() text; "left_out" is empty as stored.
RECOMMENDATION_FIELDS = (
    "run_id",
    "generated_at",
    "friend",
    "other_friends",
    "releases",
    "left_out",
)
# The document's "releases" are the first RELEASES_SHOWN picks; the row also keeps the next
# RELEASE_SPARES (spare_picks: a JSON array of release picks) and every pick's release id in
# rank order (pick_ids: packed_release_ids()). The site shows the first RELEASES_SHOWN picks
# the user neither holds nor wants as the stream last applied it (webapp.models.merge_views):
# a record added since the run gives its place to the next pick, and only then are the
# spares read and the answer rebuilt.
RELEASES_SHOWN = 10
RELEASE_SPARES = 5
USER_FIELDS = ("user_id", "name", "location", "joined_at")
RELEASE_FIELDS = (
    "release_id",
    "title",
    "artists",
    "year",
    "genres",
    "styles",
    "country",
    "formats",
)
RECOMMENDATION_COLUMNS = (
    "user_id",
    "run_id",
    "genre_profile",
    "recommendation",
    "spare_picks",
    "pick_ids",
)
# The stream's live profile of a user (one JSON document per user, like the batch's): the
# collection size, the genre units (the site derives scores and shares from them with
# genres.scores_and_shares; the next micro-batch starts from them) and the latest changes,
# newest first, each a list of LIVE_CHANGE_FIELDS (lists, not objects: the stream rewrites
# every touched user's document every micro-batch).
LIVE_PROFILE_FIELDS = ("collection_size", "genre_units", "latest_changes")
LIVE_COLUMNS = ("profile", "holdings", "stream_id", "batch_id", "updated_at")
"""The static columns of a user's RECOMMENDATIONS partition that the stream writes."""
LIVE_CHANGE_FIELDS = ("event_time", "event_id", "kind", "release_id")
LATEST_CHANGES = 10
"""How many of a user's latest collection and wantlist changes the live row keeps (what the
user page lists): fewer listed means every change the stream applied is listed."""


def release_ids(packed: bytes | None) -> tuple[int, ...]:
    """Release ids packed 8 bytes big-endian each, in their order (a live row's
    ``holdings``, sorted; a recommendation row's ``pick_ids``, in rank order): one cell that
    Cassandra stores and reads far more cheaply than a list of as many cells."""
    data = packed or b""
    return struct.unpack(f">{len(data) // 8}q", data)


def packed_release_ids(ids: Iterable[int]) -> bytes:
    """``ids`` as :func:`release_ids` reads them."""
    listed = list(ids)
    return struct.pack(f">{len(listed)}q", *listed)


def held_releases(holdings: bytes | None) -> frozenset[int]:
    """The release ids of a live row's ``holdings``: the user's collection as the stream
    last applied it."""
    return frozenset(release_ids(holdings))


def live_change(listed: list | dict) -> dict[str, Any]:
    """One of a live document's ``latest_changes`` as a dict of LIVE_CHANGE_FIELDS (rows
    written before changes were lists hold dicts already)."""
    if isinstance(listed, dict):
        return dict(listed)
    return dict(zip(LIVE_CHANGE_FIELDS, listed, strict=True))


DOCUMENT_TIME_PATTERN = "yyyy-MM-dd'T'HH:mm:ss.SSSSSSxxx"
"""Spark's ``date_format`` pattern of :func:`document_time` (in a UTC session)."""


def document_json(value: Any) -> str:
    """``value`` as serving documents write JSON: compact, non-ASCII text kept as it is (as
    Spark's ``to_json`` writes it)."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def document_time(moment: datetime) -> str:
    """A time as serving documents and the API write it: ISO 8601 in UTC, always with
    microseconds and the offset (``2026-11-25T03:00:00.000000+00:00``); a naive time (as the
    Cassandra driver returns them) is UTC."""
    aware = moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    return aware.astimezone(UTC).isoformat(timespec="microseconds")


def encode_document(fields: tuple[str, ...], values: dict[str, Any]) -> str:
    """A serving document as the batch writes it (JSON; datetimes as :func:`document_time`).
    For code outside Spark (fixtures, benchmarks); the batch builds the same with
    ``to_json``."""
    if set(values) != set(fields):
        raise ValueError(f"a document has exactly the fields {fields}, got {sorted(values)}")

    def encode(value: Any) -> str:
        if isinstance(value, datetime):
            return document_time(value)
        raise TypeError(f"cannot store {value!r} in a serving document")

    return json.dumps({field: values[field] for field in fields}, default=encode)


def decode_document(fields: tuple[str, ...], text: str | None) -> dict[str, Any]:
    """A serving document's fields (a field it lacks reads as None)."""
    values = json.loads(text) if text else {}
    return {field: values.get(field) for field in fields}


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

STREAM_QUERY = "discorecs-stream"
"""The speed layer's query name: its checkpoint folder and its key in ``stream_progress``."""
