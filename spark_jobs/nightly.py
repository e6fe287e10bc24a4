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
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from discorecs import paths, storage, tables
from discorecs.catalog.index import CatalogIndex, catalog_index
from discorecs.progress import say_to_stderr
from discorecs.schema import compaction_paused
from discorecs.settings import Settings, load_settings
from discorecs.tables import LEADERBOARD_COLUMNS, RECOMMENDATION_COLUMNS
from spark_jobs import transforms as t
from spark_jobs.cocollection import sampled_holdings, similar_releases
from spark_jobs.friends import candidate_friends, explained_friends, ranked_friends
from spark_jobs.inputs import Inputs, read_inputs
from spark_jobs.releases import flat_picks, pick_lists
from spark_jobs.run_records import BatchReport, record_run
from spark_jobs.serving import (
    leaderboard_rows,
    profile_rows,
    profile_tastes,
    run_row_parts,
    write_to_cassandra,
)

# Holdings (collection and wantlist rows) per partition of the per-user taste pass: each
# partition's rows are in one Python worker's memory at once (~100 bytes a row at peak).
HOLDINGS_PER_PARTITION = 2_000_000

# The snapshot is the master dataset's largest part (10M users: ~10 GB with Spark's default
# snappy) and a run keeps it on disk through its serving load: zstd makes it smaller.
SNAPSHOT_COMPRESSION = "zstd"


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


def release(frame: DataFrame) -> None:
    """Free the blocks of a frame :func:`materialize` made, now, once no later step reads it.

    Spark would free them only when the driver's garbage collector finds the frame
    unreferenced; meanwhile they hold memory and, once spilled, disk: at 10M users the
    tastes alone are ~18 GB of local disk, needed by no step after the profiles are built,
    while the serving load's shuffles and the node's SSTables want that disk. (A local
    checkpoint is the frame's RDD persisted: its plan is that RDD, unpersisted here.)"""
    frame._jdf.logicalPlan().rdd().unpersist(False)


def _run_steps(
    spark: SparkSession,
    settings: Settings,
    report: BatchReport,
    load_cassandra: bool,
    say: Callable[[str], None],
) -> None:
    """The run as a sequence of timed steps (``report.step_seconds``), each a function below;
    ``report.counts`` gathers what each step counts."""
    counts = report.counts

    def step(name: str, action: Callable[[], Any]) -> Any:
        started = time.monotonic()
        result = action()
        report.step_seconds[name] = round(time.monotonic() - started, 2)
        say(f"batch {report.run_id}: {name} done in {report.step_seconds[name]:.1f} s")
        return result

    inputs, events = step("read", lambda: read_step(spark, settings, counts))
    collections, wantlists, releases = step(
        "state", lambda: state_step(spark, settings, report.run_id, inputs, events, counts)
    )
    partitions = max(
        settings.spark_shuffle_partitions,
        (counts["collection_items"] + counts["wantlist_items"]) // HOLDINGS_PER_PARTITION,
    )
    catalog, tastes = step(
        "tastes", lambda: tastes_step(collections, wantlists, releases, partitions)
    )
    count_users(inputs.users, tastes, counts)
    ranks = step("rankings", lambda: materialize(t.rank_users(t.genre_scores(tastes))))
    counts["ranked_entries"] = ranks.count()
    friends = step("friends", lambda: friends_step(tastes))
    counts["users_with_friend"] = friends.filter("rank = 1").count()
    sample_share = min(1.0, settings.co_collection_users / max(counts["users_scored"], 1))
    similar = step(
        "co-collection", lambda: similar_releases(sampled_holdings(collections, sample_share))
    )
    picks = step(
        "releases",
        lambda: materialize(
            pick_lists(collections, releases, tastes, friends, similar=similar, catalog=catalog)
        ),
    )
    counts["users_with_release"] = picks.count()  # a row per user with a pick
    counts["distinct_top_releases"] = (
        picks.select(F.col("picks")[0]["release_id"]).distinct().count()
    )
    if load_cassandra:
        step(
            "serving load",
            lambda: serving_load_step(settings, report, inputs, tastes, ranks, friends, picks),
        )
    report.results = {  # the tastes are not among them: the serving load frees them
        "ranks": ranks,
        "friends": friends,
        "releases": flat_picks(picks),
    }


def read_step(
    spark: SparkSession, settings: Settings, counts: dict[str, int]
) -> tuple[Inputs, DataFrame]:
    """The inputs, and the events since the snapshot computed once (counted, with how many
    of them repeat an event id: the state counts each event once)."""
    inputs = read_inputs(spark, settings)
    events = materialize(inputs.events)
    counts["events_read"] = events.count()
    counts["duplicate_events"] = (
        counts["events_read"] - events.select("event_id").distinct().count()
    )
    return inputs, events


def state_step(
    spark: SparkSession,
    settings: Settings,
    run_id: str,
    inputs: Inputs,
    events: DataFrame,
    counts: dict[str, int],
) -> tuple[DataFrame, DataFrame, DataFrame]:
    """Every collection and wantlist after the events, written as the run's snapshot and read
    back from it (the rest of the run scans the compact snapshot files); the catalog."""
    if counts["events_read"]:
        collections = materialize(t.current_collections(inputs.collections, events))
        wantlists = materialize(t.current_wantlists(inputs.wantlists, events))
    else:  # nothing to apply: the state is the snapshot (no shuffle of every record)
        collections, wantlists = inputs.collections, inputs.wantlists
    watermark = events.agg(F.max("ingested_at")).first()[0] or inputs.watermark
    snapshot = write_snapshot(settings, run_id, collections, wantlists, watermark)
    collections = spark.read.parquet(snapshot.join(paths.SNAPSHOT_COLLECTIONS).uri)
    wantlists = spark.read.parquet(snapshot.join(paths.SNAPSHOT_WANTLISTS).uri)
    counts["collection_items"] = collections.count()
    counts["wantlist_items"] = wantlists.count()
    releases = materialize(inputs.releases)
    counts["releases_without_genre"] = releases.filter(F.size(t.known_genres()) == 0).count()
    return collections, wantlists, releases


def tastes_step(
    collections: DataFrame, wantlists: DataFrame, releases: DataFrame, partitions: int
) -> tuple[CatalogIndex, DataFrame]:
    """Every user's taste; the catalog index it was computed with numbers the taste groups
    the release picks weigh, so the picks get the same one."""
    catalog = catalog_index(releases)
    tastes = t.user_tastes(collections, wantlists, releases, partitions, catalog=catalog)
    return catalog, materialize(tastes)


def friends_step(tastes: DataFrame) -> DataFrame:
    """Every user's friends (:func:`spark_jobs.friends.best_friends`), the ranking computed
    once: the explanation reads it twice."""
    ranked = materialize(ranked_friends(candidate_friends(tastes)))
    explained = materialize(explained_friends(ranked, tastes))
    release(ranked)
    return explained


def count_users(users: DataFrame, tastes: DataFrame, counts: dict[str, int]) -> None:
    """How many users were scored, have no collection, and own releases the catalog lacks."""
    found = tastes.agg(
        F.sum("missing").alias("missing"), F.count_if(F.size("genres") > 0).alias("scored")
    ).first()
    counts["missing_releases"] = int(found.missing or 0)
    counts["users_scored"] = int(found.scored or 0)
    counts["users_with_empty_collection"] = users.join(
        tastes.filter("collection_size > 0").select("user_id"), "user_id", "left_anti"
    ).count()


def serving_load_step(
    settings: Settings,
    report: BatchReport,
    inputs: Inputs,
    tastes: DataFrame,
    ranks: DataFrame,
    friends: DataFrame,
    picks: DataFrame,
) -> None:
    """The leaderboards, then every user's row of the run (profile and recommendations).
    The profiles are the last use of the tastes: the little of them a profile shows is
    kept apart first, so that the tastes' blocks are freed (:func:`release`) before the
    rows' shuffles and the node's SSTables need the disk. (A projection, not the profiles'
    JSON: it keeps the tastes' partitioning, so the rows' join still shuffles no profile.)
    The node merges the rows once they are all written (:func:`discorecs.schema.
    compaction_paused`)."""
    write_to_cassandra(
        settings,
        leaderboard_rows(ranks, inputs.users, report.run_id),
        tables.GENRE_LEADERBOARDS,
        LEADERBOARD_COLUMNS,
    )
    shown = materialize(profile_tastes(tastes))
    release(tastes)
    parts, render = run_row_parts(
        friends,
        picks,
        inputs.users,
        inputs.release_details,
        report.run_id,
        report.started_at,
        profiles=profile_rows(shown, ranks, report.run_id),
    )
    with compaction_paused(settings, tables.RECOMMENDATIONS):
        write_to_cassandra(
            settings, parts, tables.RECOMMENDATIONS, RECOMMENDATION_COLUMNS, rendered_by=render
        )


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
    for state, name in (
        (collections, paths.SNAPSHOT_COLLECTIONS),
        (wantlists, paths.SNAPSHOT_WANTLISTS),
    ):
        state.write.option("compression", SNAPSHOT_COMPRESSION).parquet(
            version.location.join(name).uri
        )
    storage.publish(
        settings,
        version,
        {"run_id": run_id, "watermark": watermark.isoformat() if watermark else None},
    )
    return version.location


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
