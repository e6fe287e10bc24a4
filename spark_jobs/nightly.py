"""The nightly batch: ``discorecs batch`` locally, ``spark-submit spark_jobs/nightly.py`` on a
cluster.

    read (catalog, users, last snapshot, event log since)      -- master dataset
      -> current state -> genre scores -> rankings -> friends -> releases   (spark_jobs.transforms)
      -> write: new snapshot (master dataset), serving tables (Cassandra, per run id)
      -> publish the run (published_runs) and record it (batch_runs)

The site reads only published runs. A run that fails or is interrupted is recorded as failed
and never published, so every user keeps the recommendations of the last good run.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import StructType

from discorecs import paths, storage, tables
from discorecs.affinities import CREDIT_COLUMNS
from discorecs.catalog.ingest import current_catalog
from discorecs.progress import say_to_stderr
from discorecs.settings import Settings, load_settings
from discorecs.spark_schemas import EVENT_LOG_BATCH, EVENT_LOG_PARTITION, EVENT_LOG_SCHEMA
from discorecs.tables import (
    LEADERBOARD_BUCKET_SIZE,
    LEADERBOARD_COLUMNS,
    PROFILE_FIELDS,
    RECOMMENDATION_COLUMNS,
)
from discorecs.users.population import current_users
from spark_jobs import transforms as t
from spark_jobs.answers import RUN_ROW_SCHEMA, render_answers
from spark_jobs.cocollection import sampled_holdings, similar_releases
from spark_jobs.tastes import CatalogIndex

SCOPE = "nightly"
LEADERBOARD_DEPTH = 10_000
# Holdings (collection and wantlist rows) per partition of the per-user taste pass: each
# partition's rows are in one Python worker's memory at once (~100 bytes a row at peak).
HOLDINGS_PER_PARTITION = 2_000_000


@dataclass
class BatchReport:
    run_id: str
    started_at: datetime
    status: str = "running"
    finished_at: datetime | None = None
    counts: dict[str, int] = field(default_factory=dict)
    step_seconds: dict[str, float] = field(default_factory=dict)
    message: str = ""
    # The step outputs, for callers in the same session (evaluation, tests); not persisted.
    results: dict[str, DataFrame] = field(default_factory=dict, repr=False)

    @property
    def seconds(self) -> float:
        end = self.finished_at or datetime.now(UTC)
        return (end - self.started_at).total_seconds()


# -- read ------------------------------------------------------------------------------------------


@dataclass
class Inputs:
    releases: DataFrame
    users: DataFrame  # user_id, name, location, joined_at
    collections: DataFrame
    wantlists: DataFrame
    events: DataFrame
    snapshot_id: str | None
    watermark: datetime | None
    release_details: DataFrame  # tables.RELEASE_FIELDS: what a recommendation shows


def read_inputs(spark: SparkSession, settings: Settings) -> Inputs:
    """The published catalog and users, the current snapshot (or the users' initial
    collections before the first run) and the events logged since it."""
    catalog = current_catalog(settings).uri
    people = current_users(settings)
    releases = spark.read.parquet(catalog).select(
        "release_id", "title", "genres", "styles", *CREDIT_COLUMNS
    )
    users = spark.read.parquet(people.join(paths.USER_PROFILES).uri).select(
        "user_id", "name", "location", "joined_at"
    )
    release_details = spark.read.parquet(catalog).select(*tables.RELEASE_FIELDS)
    snapshot = storage.current(settings, paths.SNAPSHOTS)
    watermark = None
    if snapshot is not None:
        collections = spark.read.parquet(snapshot.location.join(paths.SNAPSHOT_COLLECTIONS).uri)
        wantlists = spark.read.parquet(snapshot.location.join(paths.SNAPSHOT_WANTLISTS).uri)
        if snapshot.details.get("watermark"):
            watermark = datetime.fromisoformat(snapshot.details["watermark"])
    else:
        collections, wantlists = (
            spark.read.parquet(people.join(dataset).uri).select(
                "user_id",
                "release_id",
                "added_at",
                F.lit(None).cast("timestamp").alias("changed_at"),
            )
            for dataset in (paths.INITIAL_COLLECTIONS, paths.INITIAL_WANTLISTS)
        )
    events = read_events(spark, settings, watermark)
    return Inputs(
        releases,
        users,
        collections,
        wantlists,
        events,
        snapshot.id if snapshot else None,
        watermark,
        release_details,
    )


def read_events(spark: SparkSession, settings: Settings, since: datetime | None) -> DataFrame:
    """The event log rows ingested after ``since`` (all of them when None; none if no log)."""
    log = storage.data_root(settings).join(paths.EVENT_LOG)
    if not log.folders():
        return spark.createDataFrame([], EVENT_LOG_SCHEMA)
    # A new list: StructType.add appends in place, which would grow the shared schema.
    schema = (
        StructType(list(EVENT_LOG_SCHEMA.fields))
        .add(EVENT_LOG_PARTITION, "string")
        .add(EVENT_LOG_BATCH, "long")
    )
    events = spark.read.schema(schema).parquet(log.uri)
    if since is not None:
        events = events.filter(
            (F.col(EVENT_LOG_PARTITION) >= since.strftime("%Y-%m-%d"))
            & (F.col("ingested_at") > F.lit(since))
        )
    return events.drop(EVENT_LOG_PARTITION, EVENT_LOG_BATCH)


# -- write -----------------------------------------------------------------------------------------


def write_snapshot(
    settings: Settings,
    run_id: str,
    collections: DataFrame,
    wantlists: DataFrame,
    watermark: datetime | None,
) -> storage.Location:
    """Write the compacted state as the snapshots' version ``run_id`` and publish it (the
    pointer carries the watermark: the ingest time of the last event it includes)."""
    version = storage.begin(settings, paths.SNAPSHOTS, run_id)
    collections.write.parquet(version.location.join(paths.SNAPSHOT_COLLECTIONS).uri)
    wantlists.write.parquet(version.location.join(paths.SNAPSHOT_WANTLISTS).uri)
    storage.publish(
        settings,
        version,
        {"run_id": run_id, "watermark": watermark.isoformat() if watermark else None},
    )
    return version.location


def write_to_cassandra(
    settings: Settings, frame: DataFrame, table: str, columns: tuple[str, ...]
) -> None:
    """Upsert ``frame`` into ``table`` from the executors, one connection per partition, in
    unlogged batches of rows that share their replicas (:func:`discorecs.cassandra.
    upsert_batched`). The rows reach Python as Arrow batches, not pickled one by one: for
    documents of kilobytes the pickling cost as much CPU as the writes. (Map columns would
    arrive as lists of pairs: the serving tables the batch writes have none.)"""

    def write_partition(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        from discorecs.cassandra import connect, upsert_batched

        def rows() -> Iterator[tuple[Any, ...]]:
            for batch in batches:
                yield from zip(*(column.to_pylist() for column in batch.columns), strict=True)

        with connect(settings, keyspace=settings.cassandra_keyspace) as connection:
            written = upsert_batched(
                connection, table, columns, rows(), batch_rows=settings.cassandra_batch_rows
            )
        yield pa.record_batch({"written": pa.array([written], pa.int64())})

    frame.select(*columns).mapInArrow(write_partition, "written long").agg(
        F.sum("written")
    ).collect()


def _document(run_id: str, name: str, fields: tuple[str, ...]) -> list[Column]:
    """user_id, run_id and the JSON document ``name`` made of the columns ``fields``."""
    return [
        F.col("user_id"),
        F.lit(run_id).alias("run_id"),
        F.to_json(F.struct(*fields)).alias(name),
    ]


def profile_rows(tastes: DataFrame, ranks: DataFrame, run_id: str) -> DataFrame:
    """user_id, run_id, genre_profile (JSON, :data:`PROFILE_FIELDS`) for every user with a
    score."""
    standings = ranks.groupBy("user_id").agg(
        F.map_from_entries(F.collect_list(F.struct("genre", "rank"))).alias("ranks"),
        F.map_from_entries(F.collect_list(F.struct("genre", "percentile"))).alias("percentiles"),
    )
    return (
        tastes.filter(F.size("genres") > 0)
        .join(standings, "user_id")
        .select(
            "user_id",
            "collection_size",
            F.map_from_arrays("genres", "genre_scores").alias("scores"),
            F.map_from_arrays("genres", "genre_shares").alias("shares"),
            "ranks",
            "percentiles",
            F.slice("styles", 1, 3).alias("top_styles"),
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


def recommendation_rows(
    friends: DataFrame,
    picks: DataFrame,
    users: DataFrame,
    releases: DataFrame,
    run_id: str,
    generated_at: datetime,
    profiles: DataFrame | None = None,
) -> DataFrame:
    """``tables.RECOMMENDATION_COLUMNS`` for every user with a friend: the API's answer
    (:data:`tables.RECOMMENDATION_FIELDS`) rendered whole, the friends' names (``users``:
    user_id, name, location, joined_at) and the releases' details (``releases``: the
    catalog's RELEASE_FIELDS) joined in, so that serving it is one read.
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
    JSON, and gathers every user's friends and picks in rank order;
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
    picked = releases.join(picks.select("release_id").distinct(), "release_id", "left_semi")
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
    pick_lists = picks.groupBy("user_id").agg(
        F.sort_array(F.collect_list(F.struct("rank", "release_id", "score", "reason"))).alias(
            "picks"
        )
    )
    answers = (
        friend_lists.filter(F.element_at("ranked", 1)["rank"] == 1)
        .join(pick_lists, "user_id", "left")
        .select("user_id", F.col("ranked.json").alias("friends"), "picks")
    )
    if profiles is not None:
        answers = profiles.select("user_id", "genre_profile").join(answers, "user_id", "full")
    generated = tables.document_time(generated_at)
    return answers.mapInArrow(
        lambda batches: render_answers(batches, run_id, generated, known), RUN_ROW_SCHEMA
    )


def record_run(settings: Settings, report: BatchReport, publish: bool = False) -> None:
    """Write the run record (and, when ``publish``, point the site at this run)."""
    from discorecs.cassandra import connect

    with connect(settings, keyspace=settings.cassandra_keyspace) as connection:
        connection.session.execute(
            connection.prepare(
                f"INSERT INTO {tables.BATCH_RUNS} (scope, started_at, run_id, finished_at, status,"
                " step_counts, message) VALUES (?, ?, ?, ?, ?, ?, ?)"
            ),
            (
                SCOPE,
                report.started_at,
                report.run_id,
                report.finished_at,
                report.status,
                report.counts,
                report.message[:2000],
            ),
        )
        if publish:
            connection.session.execute(
                connection.prepare(
                    f"INSERT INTO {tables.PUBLISHED_RUNS} (scope, run_id, "
                    "published_at) VALUES (?, ?, ?)"
                ),
                (SCOPE, report.run_id, datetime.now(UTC)),
            )


# -- the run ---------------------------------------------------------------------------------------


def run_batch(
    spark: SparkSession,
    settings: Settings,
    *,
    run_id: str | None = None,
    load_cassandra: bool = True,
    say: Callable[[str], None] = say_to_stderr,
) -> BatchReport:
    report = BatchReport(run_id or storage.new_version_id(), datetime.now(UTC))
    if load_cassandra:
        record_run(settings, report)
    try:
        _run_steps(spark, settings, report, load_cassandra, say)
    except BaseException as error:
        report.status = "failed"
        report.finished_at = datetime.now(UTC)
        report.message = f"{type(error).__name__}: {error}".splitlines()[0]
        say(
            f"batch {report.run_id}: FAILED ({report.message}); the previous published run "
            "stays in place"
        )
        if load_cassandra:
            try:
                record_run(settings, report)
            except Exception as record_error:  # Cassandra may be the reason we failed
                say(f"batch {report.run_id}: could not record the failure: {record_error}")
        raise
    report.status = "succeeded"
    report.finished_at = datetime.now(UTC)
    if load_cassandra:
        record_run(settings, report, publish=True)
    say(f"batch {report.run_id}: succeeded in {report.seconds:.0f} s and published")
    return report


def materialize(frame: DataFrame) -> DataFrame:
    """Compute ``frame`` once and cut its lineage. ``cache()`` keeps the whole plan, and every
    later step's plan embeds it again, until describing one plan exhausts the driver's heap;
    a local checkpoint keeps each step's plan small."""
    return frame.localCheckpoint(eager=True)


def _run_steps(
    spark: SparkSession,
    settings: Settings,
    report: BatchReport,
    load_cassandra: bool,
    say: Callable[[str], None],
) -> None:
    counts = report.counts

    def step(name: str, action: Callable[[], Any]) -> Any:
        started = time.monotonic()
        result = action()
        report.step_seconds[name] = round(time.monotonic() - started, 2)
        say(f"batch {report.run_id}: {name} done in {report.step_seconds[name]:.1f} s")
        return result

    def read() -> tuple[Inputs, DataFrame]:
        inputs = read_inputs(spark, settings)
        events = materialize(inputs.events)
        counts["events_read"] = events.count()
        counts["duplicate_events"] = (
            counts["events_read"] - events.select("event_id").distinct().count()
        )
        return inputs, events

    inputs, events = step("read", read)

    def state() -> tuple[DataFrame, DataFrame, DataFrame]:
        if counts["events_read"]:
            collections = materialize(t.current_collections(inputs.collections, events))
            wantlists = materialize(t.current_wantlists(inputs.wantlists, events))
        else:  # nothing to apply: the state is the snapshot (no shuffle of every record)
            collections, wantlists = inputs.collections, inputs.wantlists
        watermark = events.agg(F.max("ingested_at")).first()[0] or inputs.watermark
        snapshot = write_snapshot(settings, report.run_id, collections, wantlists, watermark)
        # Read back what was written: the rest of the run scans the compact snapshot files.
        collections = spark.read.parquet(snapshot.join(paths.SNAPSHOT_COLLECTIONS).uri)
        wantlists = spark.read.parquet(snapshot.join(paths.SNAPSHOT_WANTLISTS).uri)
        counts["collection_items"] = collections.count()
        counts["wantlist_items"] = wantlists.count()
        releases = materialize(inputs.releases)
        counts["releases_without_genre"] = releases.filter(F.size(t.known_genres()) == 0).count()
        return collections, wantlists, releases

    collections, wantlists, releases = step("state", state)
    partitions = max(
        settings.spark_shuffle_partitions,
        (counts["collection_items"] + counts["wantlist_items"]) // HOLDINGS_PER_PARTITION,
    )

    def taste() -> tuple[CatalogIndex, DataFrame]:
        catalog = t.catalog_index(releases)  # numbers the taste groups for the picks too
        return catalog, materialize(
            t.user_tastes(collections, wantlists, releases, partitions, catalog=catalog)
        )

    catalog, tastes = step("tastes", taste)
    users = tastes.agg(
        F.sum("missing").alias("missing"), F.count_if(F.size("genres") > 0).alias("scored")
    ).first()
    counts["missing_releases"] = int(users.missing or 0)
    counts["users_scored"] = int(users.scored or 0)
    counts["users_with_empty_collection"] = inputs.users.join(
        tastes.filter("collection_size > 0").select("user_id"), "user_id", "left_anti"
    ).count()
    ranks = step("rankings", lambda: materialize(t.rank_users(t.genre_scores(tastes))))
    counts["ranked_entries"] = ranks.count()
    friends = step(
        "friends",
        lambda: materialize(t.best_friends(t.candidate_friends(tastes), tastes)),
    )
    counts["users_with_friend"] = friends.filter("rank = 1").count()
    sample_share = min(1.0, settings.co_collection_users / max(counts["users_scored"], 1))
    similar = step(
        "co-collection",
        lambda: similar_releases(sampled_holdings(collections, sample_share)),
    )
    picks = step(
        "releases",
        lambda: materialize(
            t.recommend_releases(
                collections, releases, tastes, friends, similar=similar, catalog=catalog
            )
        ),
    )
    counts["users_with_release"] = picks.filter("rank = 1").count()
    counts["distinct_top_releases"] = (
        picks.filter("rank = 1").select("release_id").distinct().count()
    )
    if load_cassandra:

        def serve() -> None:
            write_to_cassandra(
                settings,
                leaderboard_rows(ranks, inputs.users, report.run_id),
                tables.GENRE_LEADERBOARDS,
                LEADERBOARD_COLUMNS,
            )
            run_rows = recommendation_rows(
                friends,
                picks,
                inputs.users,
                inputs.release_details,
                report.run_id,
                report.started_at,
                profiles=profile_rows(tastes, ranks, report.run_id),
            )
            write_to_cassandra(settings, run_rows, tables.RECOMMENDATIONS, RECOMMENDATION_COLUMNS)

        step("serving load", serve)
    report.results = {"tastes": tastes, "ranks": ranks, "friends": friends, "releases": picks}


def main(argv: list[str] | None = None) -> int:
    """Entry point for ``spark-submit spark_jobs/nightly.py`` (settings from the environment)."""
    from discorecs.spark import build_spark_session

    settings = load_settings()
    spark = build_spark_session(settings, "discorecs-nightly")
    try:
        report = run_batch(spark, settings)
    finally:
        spark.stop()
    print(
        json.dumps(
            {
                "run_id": report.run_id,
                "status": report.status,
                "counts": report.counts,
                "step_seconds": report.step_seconds,
            },
            indent=2,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
