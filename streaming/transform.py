"""The stream's pure core: raw Kafka rows in, valid events and dead letters out.

Validation is the event contract's own validator (``discorecs.events.parse_event``) applied
in an Arrow UDF, so the producers, the stream and the tests agree by construction; ids the
master dataset does not know are dead-lettered too.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql.functions import arrow_udf
from pyspark.sql.types import LongType, StringType, StructField, StructType

from discorecs.events import InvalidEvent, parse_event
from spark_jobs.picks import contains

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


def known_ids(known: Any, ids_of: Callable[[Any], np.ndarray] = lambda value: value) -> Any:
    """An Arrow UDF: whether each id of a column is among ``ids_of(known.value)``, a sorted
    int64 array in a broadcast (the user ids, or the catalog index's release ids). A binary
    search per micro-batch instead of a broadcast join, whose hash table Spark would rebuild
    from a million catalog rows for every batch (measured alone: marking 60,000 events took
    1.7 s with the joins, 0.6 s for the parse alone)."""

    @arrow_udf("boolean")
    def contains_id(ids: pa.Array) -> pa.Array:
        values = pc.fill_null(ids, -1).to_numpy(zero_copy_only=False).astype(np.int64)
        found = contains(ids_of(known.value), values)
        return pa.array(found & pc.is_valid(ids).to_numpy(zero_copy_only=False))

    return contains_id


def mark(raw: DataFrame, users: Any, catalog: Any) -> DataFrame:
    """Every raw Kafka row, parsed, with ``reason`` null for a valid event.

    ``raw``: topic, kafka_partition, kafka_offset, key, value, timestamp (the Kafka source).
    ``users``: a broadcast of the known user ids (sorted int64 array); ``catalog``: a
    broadcast of the catalog's ``CatalogIndex`` (the known releases).
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
    user_known = known_ids(users)
    release_known = known_ids(catalog, lambda index: index.release_ids)
    reason = (
        F.when(F.col("reason").isNotNull(), F.col("reason"))
        .when(~user_known("user_id"), F.format_string("unknown user %d", "user_id"))
        .when(~release_known("release_id"), F.format_string("unknown release %d", "release_id"))
    )
    return checked.select(
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


def validate(raw: DataFrame, users: Any, catalog: Any) -> tuple[DataFrame, DataFrame]:
    """(valid events, dead letters): see :func:`mark`."""
    marked = mark(raw, users, catalog)
    return valid_events(marked), dead_letters(marked)
