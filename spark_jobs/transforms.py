"""The pure cores of the nightly batch's first steps: DataFrame in, DataFrame out, no I/O.

``state -> tastes -> rankings`` here, then ``friends`` (:mod:`spark_jobs.friends`) and
``releases`` (:mod:`spark_jobs.releases`); the jobs in this package read their inputs, call
these, and write the results. Spark moves the data;
the per-user arithmetic runs in numpy on Arrow batches (``tastes``, ``neighbours``,
``picks`` in this package), the only place each rule is written.

Genre score formula: a user's score in genre g is the number of records they own in g, where
a release with n (known) genres counts 1/n towards each of them:

    score(u, g) = sum over releases r owned by u with g in genres(r) of 1 / |genres(r)|

so a user's scores add up to the number of their records that have a genre, and
``share(u, g) = score(u, g) / sum_g score(u, g)``.
"""

from __future__ import annotations

from collections.abc import Iterator

import pyarrow as pa
from pyspark.sql import Column, DataFrame, Window, WindowSpec
from pyspark.sql import functions as F

from discorecs.catalog.index import CatalogIndex, catalog_index
from discorecs.events import COLLECTION, WANTLIST, Holdings
from discorecs.genres import GENRES
from spark_jobs import tastes as taste_pass

# -- current state -------------------------------------------------------------------------------


def latest_events(events: DataFrame, add: str, remove: str) -> DataFrame:
    """The event that decides each (user, release): user_id, release_id, kind, event_time.

    The latest by event time wins; at equal event times a remove beats an add (as a
    Cassandra tombstone beats a write of the same timestamp, which is how the stream applies
    events), then the larger event id. Duplicate events (same event id) count once. The stream
    and the batch both use this rule, so they agree however events are split into batches.
    """
    relevant = events.filter(F.col("kind").isin(add, remove)).dropDuplicates(["event_id"])
    return (
        relevant.withColumn("rn", F.row_number().over(_latest_first(remove)))
        .filter("rn = 1")
        .select("user_id", "release_id", "kind", "event_time")
    )


def _latest_first(remove: str) -> WindowSpec:
    """Each (user, release)'s events, the deciding one first (the rule of latest_events;
    the stream applies it per user in :func:`streaming.live.deciding_events`)."""
    return Window.partitionBy("user_id", "release_id").orderBy(
        F.desc("event_time"), F.desc(F.col("kind") == remove), F.desc("event_id")
    )


def apply_events(snapshot: DataFrame, events: DataFrame, holdings: Holdings) -> DataFrame:
    """The ``holdings`` after ``events``: for each (user, release) the latest event wins (see
    :func:`latest_events`); keys without events keep their snapshot row; an event older than
    the snapshot row's ``changed_at`` is ignored.

    ``snapshot``: user_id, release_id, added_at, changed_at (may be null).
    ``events``: event_id, user_id, release_id, kind, event_time.
    Returns user_id, release_id, added_at, changed_at.
    """
    latest = latest_events(events, holdings.add.value, holdings.remove.value)
    joined = snapshot.alias("s").join(latest.alias("e"), ["user_id", "release_id"], "full_outer")
    applies = F.col("e.kind").isNotNull() & (
        F.col("s.changed_at").isNull() | (F.col("e.event_time") > F.col("s.changed_at"))
    )
    present = F.when(applies, F.col("e.kind") == holdings.add.value).otherwise(
        F.col("s.release_id").isNotNull() & F.col("s.added_at").isNotNull()
    )
    return joined.filter(present).select(
        "user_id",
        "release_id",
        F.when(applies & F.col("s.added_at").isNull(), F.col("e.event_time"))
        .otherwise(F.col("s.added_at"))
        .alias("added_at"),
        F.when(applies, F.col("e.event_time")).otherwise(F.col("s.changed_at")).alias("changed_at"),
    )


def current_collections(snapshot: DataFrame, events: DataFrame) -> DataFrame:
    return apply_events(snapshot, events, COLLECTION)


def current_wantlists(snapshot: DataFrame, events: DataFrame) -> DataFrame:
    return apply_events(snapshot, events, WANTLIST)


# -- genre scores and rankings -------------------------------------------------------------------


def known_genres(column: str = "genres") -> Column:
    """``column`` without the strings that are not one of the 15 genres."""
    known = F.array(*[F.lit(genre) for genre in GENRES])
    return F.filter(F.coalesce(F.col(column), F.array()), lambda g: F.array_contains(known, g))


TASTE_SCHEMA = (
    "user_id long, collection_size int, genres array<string>, genre_scores array<double>, "
    "genre_shares array<double>, styles array<string>, style_shares array<double>, "
    "features array<int>, weights array<double>, signature double, missing int, "
    "owned array<long>, wanted array<long>, taste_groups array<int>, taste_shares array<double>, "
    "affinities array<string>, affinity_records array<int>, affinity_weights array<double>"
)


def user_tastes(
    collections: DataFrame,
    wantlists: DataFrame,
    releases: DataFrame,
    partitions: int | None = None,
    catalog: CatalogIndex | None = None,
) -> DataFrame:
    """One row per user with a collection or a wantlist (:data:`TASTE_SCHEMA`): collection
    size, genres with score and share, styles with share (both by share, descending), the
    unit taste vector, its signature, the owned and wanted releases, and the
    taste groups the release picks weigh.

    Spark partitions the holdings by user; numpy computes every user of a partition in one
    pass (:func:`spark_jobs.tastes.user_tastes`) against the catalog's genres and styles,
    broadcast as arrays. ``partitions``: how many (default: the shuffle partitions); each
    holds its users' holdings in memory at once. ``catalog``: :func:`catalog_index` of
    ``releases``, when the caller has it already.
    """
    spark = collections.sparkSession
    shared = spark.sparkContext.broadcast(catalog or catalog_index(releases))
    holdings = collections.select("user_id", "release_id", F.lit(True).alias("owned")).unionByName(
        wantlists.select("user_id", "release_id", F.lit(False).alias("owned"))
    )
    partitions = partitions or int(spark.conf.get("spark.sql.shuffle.partitions"))

    def taste(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        batches = list(batches)
        if not batches:
            return
        table = pa.Table.from_batches(batches)
        if table.num_rows == 0:
            return
        found = taste_pass.user_tastes(
            table.column("user_id").to_numpy(),
            table.column("release_id").to_numpy(),
            table.column("owned").to_numpy(zero_copy_only=False),
            shared.value,
        )
        for start in range(0, found.num_rows, 10_000):
            yield found.slice(start, 10_000)

    return holdings.repartition(partitions, "user_id").mapInArrow(taste, TASTE_SCHEMA)


def genre_scores(tastes: DataFrame) -> DataFrame:
    """user_id, genre, score, share, collection_size: a row per genre a user has records in
    (see the module docstring for the formula)."""
    entry = F.explode(F.arrays_zip("genres", "genre_scores", "genre_shares")).alias("g")
    return tastes.select("user_id", "collection_size", entry).select(
        "user_id",
        F.col("g.genres").alias("genre"),
        F.col("g.genre_scores").alias("score"),
        F.col("g.genre_shares").alias("share"),
        "collection_size",
    )


def rank_users(scores: DataFrame) -> DataFrame:
    """genre, user_id, score, rank (1 = highest score; ties: lower user id first), and
    percentile (the share of the genre's ranked users below, in %)."""
    order = Window.partitionBy("genre").orderBy(F.desc("score"), F.asc("user_id"))
    ranked = scores.withColumn("rank", F.row_number().over(order).cast("long"))
    count = F.count("*").over(Window.partitionBy("genre"))
    return ranked.select(
        "genre",
        "user_id",
        "score",
        "rank",
        (F.lit(100.0) * (count - F.col("rank")) / count).alias("percentile"),
    )
