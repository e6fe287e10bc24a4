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
from spark_jobs.transforms import known_genres

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


GENRE_UNITS = 360_360
"""lcm(1..15): a release with n of the 15 genres adds GENRE_UNITS // n to each, an exact
integer, so a live profile updated by thousands of micro-batches never drifts by rounding and
equals one computed in a single pass."""


def genre_units(holdings: DataFrame, releases: DataFrame) -> DataFrame:
    """user_id, genre, units of whole collections (``holdings``: user_id, release_id)."""
    owned = holdings.join(
        releases.select("release_id", known_genres().alias("genres")), "release_id"
    )
    return (
        owned.filter(F.size("genres") > 0)
        .select(
            "user_id",
            F.explode("genres").alias("genre"),
            (F.lit(GENRE_UNITS) / F.size("genres")).cast("long").alias("units"),
        )
        .groupBy("user_id", "genre")
        .agg(F.sum("units").alias("units"))
    )


def effective_changes(net: DataFrame, present: DataFrame, add: str, remove: str) -> DataFrame:
    """user_id, release_id, sign: +1 for an add of a release the user did not hold, -1 for a
    remove of one they held; other changes (a repeated add, a remove of something not held)
    change nothing and are dropped.

    ``net``: user_id, release_id, kind (the batch's last event per key); ``present``:
    user_id, release_id held before the batch (among ``net``'s keys)."""
    held = present.select("user_id", "release_id", F.lit(True).alias("held"))
    sign = F.when((F.col("kind") == add) & F.col("held").isNull(), F.lit(1)).when(
        (F.col("kind") == remove) & F.col("held").isNotNull(), F.lit(-1)
    )
    return (
        net.join(held, ["user_id", "release_id"], "left")
        .select("user_id", "release_id", sign.alias("sign"))
        .filter(F.col("sign").isNotNull())
    )


def next_live_profiles(
    start_sizes: DataFrame, start_units: DataFrame, changes: DataFrame, releases: DataFrame
) -> DataFrame:
    """The live profile of every user in ``start_sizes`` after ``changes``.

    ``start_sizes``: user_id, collection_size before the batch (one row per user to update);
    ``start_units``: user_id, genre, units before the batch; ``changes``: user_id, release_id,
    sign (:func:`effective_changes`); ``releases``: release_id, genres.
    Returns user_id, collection_size, genre_units (map), scores (units / GENRE_UNITS: a
    record with n genres counts 1/n to each) and shares (of the user's total), maps empty for
    an empty collection.
    """
    size_delta = changes.groupBy("user_id").agg(F.sum("sign").alias("delta"))
    sizes = start_sizes.join(size_delta, "user_id", "left").select(
        "user_id",
        (F.col("collection_size") + F.coalesce("delta", F.lit(0))).cast("int").alias("size"),
    )
    signed = (
        changes.join(releases.select("release_id", known_genres().alias("genres")), "release_id")
        .filter(F.size("genres") > 0)
        .select(
            "user_id",
            F.explode("genres").alias("genre"),
            ((F.lit(GENRE_UNITS) / F.size("genres")).cast("long") * F.col("sign")).alias("units"),
        )
    )
    totals = (
        start_units.select("user_id", "genre", "units")
        .unionByName(signed)
        .groupBy("user_id", "genre")
        .agg(F.sum("units").alias("units"))
        .filter(F.col("units") > 0)
    )
    maps = totals.groupBy("user_id").agg(
        F.map_from_entries(F.collect_list(F.struct("genre", "units"))).alias("genre_units"),
        F.sum("units").alias("total"),
    )
    empty_units = F.create_map().cast("map<string,bigint>")
    empty = F.create_map().cast("map<string,double>")
    units = F.coalesce("genre_units", empty_units)
    return sizes.join(maps, "user_id", "left").select(
        "user_id",
        F.col("size").alias("collection_size"),
        units.alias("genre_units"),
        F.coalesce(
            F.transform_values(units, lambda _, v: v / F.lit(float(GENRE_UNITS))), empty
        ).alias("scores"),
        F.coalesce(F.transform_values(units, lambda _, v: v / F.col("total")), empty).alias(
            "shares"
        ),
    )
