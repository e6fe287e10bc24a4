"""Releases collected together: the item-to-item half of the recommender.

Two releases are similar when the same collectors keep both. Over the ownership matrix the
similarity of releases a and b is the cosine of their owner sets,

    similarity(a, b) = co_owners(a, b) / (owners(a) * owners(b)) ** OWNERS_EXPONENT

With an exponent of 0.5 this is the cosine of the two releases' owner sets; above it,
popular releases are pushed down further (two collectors sharing a rare record say more
about each other's taste than two sharing a hit, which everyone keeps anyway). Each release
keeps its ``kept`` most similar releases.

Bounded, because pairs grow with the square of a collection: a user contributes the pairs of
at most ``PAIRED_RECORDS`` of their records (chosen by a seeded hash, the same every run), so
a collector of 5,000 records adds no more pairs than one of 40; only users whose id hashes
into the ``sample_share`` take part at all (the similarity of two releases is a ratio of
counts, which a uniform sample of users estimates without bias); and a pair seen by fewer
than ``MIN_CO_OWNERS`` users is noise and is dropped. The cost is then linear in the users
sampled, whatever the catalog and however large the biggest collections.
"""

from __future__ import annotations

from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F

PAIRED_RECORDS = 40
MIN_CO_OWNERS = 2
NEIGHBOURS_KEPT = 30
OWNERS_EXPONENT = 0.8
PAIR_SEED = 17


def similar_releases(
    collections: DataFrame,
    *,
    kept: int = NEIGHBOURS_KEPT,
    paired_records: int = PAIRED_RECORDS,
    sample_share: float = 1.0,
) -> DataFrame:
    """release_id, similar_id, similarity, co_owners: each release's ``kept`` most similar
    releases (ties: lower id), from collections (user_id, release_id)."""
    owned = collections.select("user_id", "release_id")
    if sample_share < 1.0:
        bucket = F.abs(F.xxhash64(F.lit(PAIR_SEED), "user_id")) % 1_000_000
        owned = owned.filter(bucket < int(sample_share * 1_000_000))
    owners = owned.groupBy("release_id").agg(F.count("*").alias("owners"))
    order = Window.partitionBy("user_id").orderBy(
        F.xxhash64(F.lit(PAIR_SEED), "user_id", "release_id"), "release_id"
    )
    paired = owned.withColumn("n", F.row_number().over(order)).filter(F.col("n") <= paired_records)
    a = paired.select("user_id", F.col("release_id").alias("a"))
    b = paired.select("user_id", F.col("release_id").alias("b"))
    pairs = (
        a.join(b, "user_id")
        .filter(F.col("a") != F.col("b"))
        .groupBy("a", "b")
        .agg(F.count("*").alias("co_owners"))
        .filter(F.col("co_owners") >= MIN_CO_OWNERS)
    )
    scored = (
        pairs.join(
            owners.withColumnRenamed("release_id", "a").withColumnRenamed("owners", "na"), "a"
        )
        .join(owners.withColumnRenamed("release_id", "b").withColumnRenamed("owners", "nb"), "b")
        .withColumn(
            "similarity",
            F.round(
                F.col("co_owners") / F.pow(F.col("na") * F.col("nb"), F.lit(OWNERS_EXPONENT)),
                9,
            ),
        )
    )
    best = Window.partitionBy("a").orderBy(F.desc("similarity"), "b")
    return (
        scored.withColumn("r", F.row_number().over(best))
        .filter(F.col("r") <= kept)
        .select(
            F.col("a").alias("release_id"),
            F.col("b").alias("similar_id"),
            "similarity",
            "co_owners",
        )
    )
