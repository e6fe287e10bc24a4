"""The stream's pure core: raw Kafka rows in, valid events and dead letters out.

Validation is the event contract's own validator (``discorecs.events.parse_event``) applied
in an Arrow UDF, so the producers, the stream and the tests agree by construction; ids the
master dataset does not know are dead-lettered too.
"""

from __future__ import annotations

from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql.types import LongType, StringType, StructField, StructType

from discorecs.events import InvalidEvent, parse_event

CHECKED = StructType(
    [
        StructField("event_id", StringType()),
        StructField("user_id", LongType()),
        StructField("release_id", LongType()),
        StructField("kind", StringType()),
        StructField("event_time", StringType()),  # ISO 8601 UTC; cast to timestamp in Spark
        StructField("reason", StringType()),
    ]
)


def _check(payload: bytes | None) -> tuple:
    try:
        event = parse_event(payload)
    except InvalidEvent as error:
        return (None, None, None, None, None, str(error))
    return (
        event.event_id,
        event.user_id,
        event.release_id,
        event.kind.value,
        event.event_time.isoformat(),
        None,
    )


check_event = F.udf(_check, CHECKED, useArrow=True)


def mark(raw: DataFrame, users: DataFrame, releases: DataFrame) -> DataFrame:
    """Every raw Kafka row, parsed, with ``reason`` null for a valid event.

    ``raw``: topic, kafka_partition, kafka_offset, key, value, timestamp (the Kafka source).
    ``users``: user_id; ``releases``: release_id (the known ids).
    Returns topic, kafka_partition, kafka_offset, payload, reason, event_id, user_id,
    release_id, kind, event_time (timestamp) and ingested_at (the Kafka record timestamp:
    fixed for a record, so a replay yields the same rows).
    """
    checked = raw.withColumn("c", check_event("value")).select(
        "topic",
        "kafka_partition",
        "kafka_offset",
        F.col("timestamp").alias("ingested_at"),
        F.col("value").cast("string").alias("payload"),
        "c.*",
    )
    known_user = users.select("user_id", F.lit(True).alias("user_known"))
    known_release = releases.select("release_id", F.lit(True).alias("release_known"))
    joined = checked.join(F.broadcast(known_user), "user_id", "left").join(
        F.broadcast(known_release), "release_id", "left"
    )
    reason = (
        F.when(F.col("reason").isNotNull(), F.col("reason"))
        .when(F.col("user_known").isNull(), F.format_string("unknown user %d", "user_id"))
        .when(F.col("release_known").isNull(), F.format_string("unknown release %d", "release_id"))
    )
    return joined.select(
        "topic",
        "kafka_partition",
        "kafka_offset",
        "payload",
        reason.alias("reason"),
        "event_id",
        "user_id",
        "release_id",
        "kind",
        F.to_timestamp("event_time").alias("event_time"),
        "ingested_at",
    )


def valid_events(marked: DataFrame) -> DataFrame:
    """event_id, user_id, release_id, kind, event_time, ingested_at of the valid rows."""
    return marked.filter(F.col("reason").isNull()).select(
        "event_id", "user_id", "release_id", "kind", "event_time", "ingested_at"
    )


def dead_letters(marked: DataFrame) -> DataFrame:
    """topic, kafka_partition, kafka_offset, payload, reason of the invalid rows."""
    return marked.filter(F.col("reason").isNotNull()).select(
        "topic", "kafka_partition", "kafka_offset", "payload", "reason"
    )


def validate(raw: DataFrame, users: DataFrame, releases: DataFrame) -> tuple[DataFrame, DataFrame]:
    """(valid events, dead letters): see :func:`mark`."""
    marked = mark(raw, users, releases)
    return valid_events(marked), dead_letters(marked)
