"""The serving tables a nightly run writes, shaped for the queries the site makes
(cassandra_schema/schema.cql): every user's genre profile and recommendations as one row of
documents, and the leaderboards; and the load of those rows into Cassandra from the
executors."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any

import pyarrow as pa
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from discorecs import tables
from discorecs.settings import Settings
from discorecs.tables import LEADERBOARD_BUCKET_SIZE, PROFILE_FIELDS
from spark_jobs.answers import RUN_ROW_SCHEMA, render_answers

LEADERBOARD_DEPTH = 10_000

Render = Callable[[Iterator[pa.RecordBatch]], Iterator[pa.RecordBatch]]
"""How a partition's Arrow batches become others (a run's rows from what they are made of)."""


def write_to_cassandra(
    settings: Settings,
    frame: DataFrame,
    table: str,
    columns: tuple[str, ...],
    rendered_by: Render | None = None,
) -> None:
    """Upsert ``frame`` into ``table`` from the executors, one connection per partition, in
    unlogged batches of rows that share their replicas (:func:`discorecs.statements.
    upsert_batched`). The rows reach Python as Arrow batches, not pickled one by one: for
    documents of kilobytes the pickling cost as much CPU as the writes. (Map columns would
    arrive as lists of pairs: the serving tables the batch writes have none.)

    With ``rendered_by``, ``frame`` holds what the rows are made of and each partition's
    batches become the rows (``columns``) in the Python worker that writes them: rendered
    by one Python step and written by the next, a million documents of kilobytes would
    cross into Spark and back out (handing them back alone took 33 s of putting the rows
    together at 1M users, measured without Cassandra)."""

    def write_partition(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        from discorecs.cassandra import connect
        from discorecs.statements import upsert_batched

        def rows() -> Iterator[tuple[Any, ...]]:
            for batch in rendered_by(batches) if rendered_by else batches:
                yield from zip(*(batch.column(name).to_pylist() for name in columns), strict=True)

        with connect(settings, keyspace=settings.cassandra_keyspace) as connection:
            written = upsert_batched(
                connection, table, columns, rows(), batch_rows=settings.cassandra_batch_rows
            )
        yield pa.record_batch({"written": pa.array([written], pa.int64())})

    rows = frame if rendered_by else frame.select(*columns)
    rows.mapInArrow(write_partition, "written long").agg(F.sum("written")).collect()


def _document(run_id: str, name: str, fields: tuple[str, ...]) -> list[Column]:
    """user_id, run_id and the JSON document ``name`` made of the columns ``fields``."""
    return [
        F.col("user_id"),
        F.lit(run_id).alias("run_id"),
        F.to_json(F.struct(*fields)).alias(name),
    ]


def profile_tastes(tastes: DataFrame) -> DataFrame:
    """What a profile shows of the tastes (:func:`spark_jobs.transforms.user_tastes`) of
    every user with a score: user_id, collection_size, genres, genre_scores, genre_shares,
    top_styles (three). No shuffle: it keeps the tastes' partitioning."""
    return tastes.filter(F.size("genres") > 0).select(
        "user_id",
        "collection_size",
        "genres",
        "genre_scores",
        "genre_shares",
        F.slice("styles", 1, 3).alias("top_styles"),
    )


def profile_rows(shown: DataFrame, ranks: DataFrame, run_id: str) -> DataFrame:
    """user_id, run_id, genre_profile (JSON, :data:`PROFILE_FIELDS`) for every user with a
    score, from what :func:`profile_tastes` keeps of the tastes (``shown``)."""
    # One list per user, made into both maps after the join: two aggregated lists cost the
    # grouping of every rank twice.
    standings = ranks.groupBy("user_id").agg(
        F.collect_list(F.struct("genre", "rank", "percentile")).alias("standings")
    )
    return (
        shown.join(standings, "user_id")
        .select(
            "user_id",
            "collection_size",
            F.map_from_arrays("genres", "genre_scores").alias("scores"),
            F.map_from_arrays("genres", "genre_shares").alias("shares"),
            F.map_from_arrays("standings.genre", "standings.rank").alias("ranks"),
            F.map_from_arrays("standings.genre", "standings.percentile").alias("percentiles"),
            "top_styles",
        )
        .select(*_document(run_id, "genre_profile", PROFILE_FIELDS))
    )


def leaderboard_rows(
    ranks: DataFrame, users: DataFrame, run_id: str, depth: int = LEADERBOARD_DEPTH
) -> DataFrame:
    return (
        ranks.filter(F.col("rank") <= depth)
        .join(users, "user_id", "left")
        .select(
            "genre",
            F.lit(run_id).alias("run_id"),
            ((F.col("rank") - 1) / LEADERBOARD_BUCKET_SIZE).cast("int").alias("bucket"),
            "rank",
            "user_id",
            F.col("name").alias("user_name"),
            "score",
            "percentile",
        )
    )


def _as_text_time(column: str) -> Column:
    return F.date_format(column, tables.DOCUMENT_TIME_PATTERN).alias(column)


def _no_list(column: str) -> Column:
    """``column`` (a list of text), empty where null: the site's models hold lists."""
    return F.coalesce(F.col(column), F.array().cast("array<string>")).alias(column)


def _json(value: Column) -> Column:
    """``value`` (a scalar or a struct) as JSON text, nulls included, as ``to_json`` writes it."""
    listed = F.to_json(F.array(value), {"ignoreNullFields": "false"})
    return listed.substr(F.lit(2), F.length(listed) - 2)


def run_rows(parts: DataFrame, render: Render) -> DataFrame:
    """``tables.RECOMMENDATION_COLUMNS`` from :func:`run_row_parts`: every user's row of the
    run (the nightly run renders them where it writes them: :func:`write_to_cassandra`)."""
    return parts.mapInArrow(render, RUN_ROW_SCHEMA)


def run_row_parts(
    friends: DataFrame,
    picks: DataFrame,
    users: DataFrame,
    releases: DataFrame,
    run_id: str,
    generated_at: datetime,
    profiles: DataFrame | None = None,
) -> tuple[DataFrame, Render]:
    """What every user's row of the run is made of, and how batches of it become the rows:
    ``tables.RECOMMENDATION_COLUMNS`` for every user with a friend: the API's answer
    (:data:`tables.RECOMMENDATION_FIELDS`) rendered whole, the friends' names (``users``:
    user_id, name, location, joined_at) and the releases' details (``releases``: the
    catalog's RELEASE_FIELDS) joined in, so that serving it is one read.
    ``picks``: :func:`spark_jobs.releases.pick_lists` (each user's picks, in rank order).
    A friend missing from ``users`` is "collector #<id>"; a release missing from the catalog
    has only its id. Only the best friend carries a reason and shared genres. The picks
    after the first ``tables.RELEASES_SHOWN`` are kept apart (``spare_picks``), with every
    pick's id in rank order (``pick_ids``): what the site needs to replace a pick taken
    since the run. With ``profiles`` (:func:`profile_rows`) every user with a profile has a
    row, with it in ``genre_profile`` (a user with a profile and no friend has no
    recommendation), so that a run writes the node one row a user; without, the profile is
    null. The profiles are joined on the user id before the documents are put together:
    both sides are grouped by it, so nothing is shuffled.

    Spark renders the friends (names joined in) and each picked release's details once, as
    JSON, and gathers every user's friends in rank order (the picks come gathered);
    :func:`spark_jobs.answers.render_answers` puts each user's documents together from them
    (the details of the releases picked for anyone are collected to the driver and handed to
    every task: the picks come from a bounded pool of candidates, a few thousand releases
    for a million users)."""
    people = users.select(
        F.col("user_id").alias("friend_id"),
        F.struct("user_id", "name", "location", _as_text_time("joined_at")).alias("known"),
    )
    unknown = F.struct(
        F.col("friend_id").alias("user_id"),
        F.concat(F.lit("collector #"), F.col("friend_id").cast("string")).alias("name"),
        F.lit(None).cast("string").alias("location"),
        F.lit(None).cast("string").alias("joined_at"),
    )
    best = F.col("rank") == 1
    friend_picks = friends.join(people, "friend_id", "left").select(
        "user_id",
        F.struct(
            "rank",
            _json(
                F.struct(
                    F.coalesce("known", unknown).alias("user"),
                    F.col("similarity").alias("match"),
                    F.when(best, _no_list("shared_genres"))
                    .otherwise(F.array().cast("array<string>"))
                    .alias("shared_genres"),
                    F.when(best, F.coalesce("reason", F.lit("")))
                    .otherwise(F.lit(""))
                    .alias("reason"),
                )
            ).alias("json"),
        ).alias("ranked"),
    )
    picked = releases.join(
        picks.select(F.explode("picks.release_id").alias("release_id")).distinct(),
        "release_id",
        "left_semi",
    )
    details = picked.select(
        "release_id",
        _json(
            F.struct(
                "release_id",
                "title",
                _no_list("artists"),
                "year",
                _no_list("genres"),
                _no_list("styles"),
                "country",
                _no_list("formats"),
            )
        ).alias("json"),
    )
    known = {row.release_id: row.json for row in details.collect()}
    friend_lists = friend_picks.groupBy("user_id").agg(
        F.sort_array(F.collect_list("ranked")).alias("ranked")
    )
    answers = (
        friend_lists.filter(F.element_at("ranked", 1)["rank"] == 1)
        .join(picks.select("user_id", "picks"), "user_id", "left")
        .select("user_id", F.col("ranked.json").alias("friends"), "picks")
    )
    if profiles is not None:
        answers = profiles.select("user_id", "genre_profile").join(answers, "user_id", "full")
    generated = tables.document_time(generated_at)
    return answers, lambda batches: render_answers(batches, run_id, generated, known)
