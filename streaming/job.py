"""The speed layer: ``discorecs stream`` locally, ``spark-submit streaming/job.py`` on a cluster.

    Kafka (collection_events, activity_events) -> validate (streaming.transform)
      -> dead letters (Cassandra), event log (master dataset), collections / wantlists
         (upsert or delete), latest changes, progress (Cassandra)

Every write of a micro-batch is idempotent, so the batch Spark replays after a crash changes
nothing: dead letters are keyed by (topic, partition, offset), the event log folder of a batch
is overwritten as a whole, and collections / wantlists are set to the batch's last event per
(user, release).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from discorecs import paths, tables, topics
from discorecs.events import EventKind
from discorecs.progress import say_to_stderr
from discorecs.settings import Settings, load_settings
from discorecs.spark_schemas import EVENT_LOG_BATCH, EVENT_LOG_PARTITION
from streaming.kafka_source import NAME, KafkaSource
from streaming.transform import latest_changes, validate

QUERY_NAME = "discorecs-stream"

HOLDINGS = (
    (tables.COLLECTIONS, EventKind.COLLECTION_ADD.value, EventKind.COLLECTION_REMOVE.value),
    (tables.WANTLISTS, EventKind.WANTLIST_ADD.value, EventKind.WANTLIST_REMOVE.value),
)


def _write_rows(
    settings: Settings, frame: DataFrame, cql: str, columns: tuple[str, ...], what: str
) -> None:
    """Run ``cql`` for every row of ``frame`` from the executors (bounded concurrency)."""

    def write_partition(rows: Any) -> None:
        from discorecs.cassandra import connect, execute_many

        batch = [tuple(row) for row in rows]
        if batch:
            with connect(settings, keyspace=settings.cassandra_keyspace) as connection:
                execute_many(connection, cql, batch, what=what, concurrency=64)

    frame.select(*columns).foreachPartition(write_partition)


def process_batch(
    spark: SparkSession,
    settings: Settings,
    users: DataFrame,
    releases: DataFrame,
    raw: DataFrame,
    batch_id: int,
    say: Callable[[str], None],
) -> dict[str, int]:
    started = time.monotonic()
    raw = raw.localCheckpoint(eager=True)
    valid, dead = validate(raw, users, releases)
    valid, dead = valid.localCheckpoint(eager=True), dead.localCheckpoint(eager=True)
    counts = {
        "input_rows": raw.count(),
        "valid_rows": valid.count(),
        "dead_lettered": dead.count(),
        "upserts": 0,
    }

    day = datetime.now(UTC).strftime("%Y-%m-%d")
    _write_rows(
        settings,
        dead.withColumn("day", F.lit(day)).withColumn("received_at", F.current_timestamp()),
        f"INSERT INTO {tables.DEAD_LETTERS} (day, topic, kafka_partition, kafka_offset, payload, "
        "reason, received_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
        ("day", "topic", "kafka_partition", "kafka_offset", "payload", "reason", "received_at"),
        tables.DEAD_LETTERS,
    )

    # The master dataset: one folder per (ingest date, batch), overwritten on replay.
    log = paths.event_log(settings.data_root)
    dated = valid.withColumn(EVENT_LOG_PARTITION, F.date_format("ingested_at", "yyyy-MM-dd"))
    for (date,) in dated.select(EVENT_LOG_PARTITION).distinct().collect():
        dated.filter(F.col(EVENT_LOG_PARTITION) == date).select(
            "event_id", "user_id", "release_id", "kind", "event_time", "ingested_at"
        ).write.mode("overwrite").parquet(
            paths.join(log, f"{EVENT_LOG_PARTITION}={date}", f"{EVENT_LOG_BATCH}={batch_id}")
        )

    for table, add, remove in HOLDINGS:
        changes = latest_changes(valid, add, remove).localCheckpoint(eager=True)
        _write_rows(
            settings,
            changes.filter(F.col("kind") == add),
            f"INSERT INTO {table} (user_id, release_id, added_at) VALUES (?, ?, ?)",
            ("user_id", "release_id", "event_time"),
            table,
        )
        _write_rows(
            settings,
            changes.filter(F.col("kind") == remove),
            f"DELETE FROM {table} WHERE user_id = ? AND release_id = ?",
            ("user_id", "release_id"),
            table,
        )
        counts["upserts"] += changes.count()
    _write_rows(
        settings,
        valid.filter(F.col("kind") != EventKind.PLAY.value),
        f"INSERT INTO {tables.COLLECTION_CHANGES} (user_id, event_time, event_id, "
        "release_id, kind) VALUES (?, ?, ?, ?, ?)",
        ("user_id", "event_time", "event_id", "release_id", "kind"),
        tables.COLLECTION_CHANGES,
    )

    duration_ms = int((time.monotonic() - started) * 1000)
    from discorecs.cassandra import connect

    with connect(settings, keyspace=settings.cassandra_keyspace) as connection:
        connection.session.execute(
            connection.prepare(
                f"INSERT INTO {tables.STREAM_PROGRESS} (query_name, batch_id, processed_at, "
                "input_rows, valid_rows, dead_lettered, upserts, duration_ms, lag) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
            ),
            (
                QUERY_NAME,
                batch_id,
                datetime.now(UTC),
                counts["input_rows"],
                counts["valid_rows"],
                counts["dead_lettered"],
                counts["upserts"],
                duration_ms,
                None,
            ),
        )
    say(
        f"stream batch {batch_id}: {counts['input_rows']:,} in, {counts['valid_rows']:,} valid, "
        f"{counts['dead_lettered']:,} dead-lettered, {counts['upserts']:,} upserts, "
        f"{duration_ms:,} ms"
    )
    return counts


def start_stream(
    spark: SparkSession,
    settings: Settings,
    *,
    available_now: bool = False,
    max_events: int = 50_000,
    trigger_seconds: float = 2.0,
    say: Callable[[str], None] = say_to_stderr,
) -> Any:
    """Start the query; returns the StreamingQuery (``awaitTermination`` to wait for it)."""
    spark.dataSource.register(KafkaSource)
    root = settings.data_root
    users = spark.read.parquet(paths.join(root, paths.USER_PROFILES)).select("user_id").cache()
    releases = spark.read.parquet(paths.catalog_releases(root)).select("release_id").cache()
    raw = (
        spark.readStream.format(NAME)
        .option("bootstrap", ",".join(settings.kafka_bootstrap_servers))
        .option("topics", ",".join(topics.ALL_TOPICS))
        .option("maxEventsPerTrigger", str(max_events))
        .load()
    )
    writer = (
        raw.writeStream.queryName(QUERY_NAME)
        .foreachBatch(
            lambda frame, batch_id: process_batch(
                spark, settings, users, releases, frame, batch_id, say
            )
        )
        .option("checkpointLocation", paths.join(paths.checkpoints(root), QUERY_NAME))
    )
    writer = (
        writer.trigger(availableNow=True)
        if available_now
        else writer.trigger(processingTime=f"{trigger_seconds} seconds")
    )
    return writer.start()


def main(argv: list[str] | None = None) -> int:
    """Entry point for ``spark-submit streaming/job.py`` (settings from the environment)."""
    from discorecs.spark import build_spark_session

    settings = load_settings()
    spark = build_spark_session(settings, QUERY_NAME)
    query = start_stream(spark, settings, available_now="--available-now" in (argv or []))
    query.awaitTermination()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
