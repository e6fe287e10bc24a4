"""What a nightly run reads: the published catalog and users, the current snapshot of every
collection and wantlist (or the users' initial ones before the first run), and the events
logged since that snapshot (all from the master dataset)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import StructType

from discorecs import paths, storage, tables
from discorecs.affinities import CREDIT_COLUMNS
from discorecs.catalog.ingest import current_catalog
from discorecs.settings import Settings
from discorecs.spark_schemas import EVENT_LOG_BATCH, EVENT_LOG_PARTITION, EVENT_LOG_SCHEMA
from discorecs.users.population import current_users


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
