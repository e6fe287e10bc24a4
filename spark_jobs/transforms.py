"""The pure cores of the nightly batch: DataFrame in, DataFrame out, no I/O.

Each function is one step of ``state -> tastes -> rankings -> friends -> releases``; the jobs
in this package read their inputs, call these, and write the results. Spark moves the data;
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

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pyspark.sql import Column, DataFrame, Window, WindowSpec
from pyspark.sql import functions as F

from discorecs import tables
from discorecs.affinities import ARTIST, LABEL_ERA
from discorecs.catalog.index import CatalogIndex, catalog_index
from discorecs.events import COLLECTION, WANTLIST, Holdings
from discorecs.flatlists import flat_lists, ranks_in_runs, run_starts
from discorecs.genres import GENRES
from spark_jobs import neighbours, picks
from spark_jobs import tastes as taste_pass

FRIEND_WINDOW = 8  # neighbours compared on each side in every block (sorted neighbourhood)
FRIENDS_KEPT = 5
FRIEND_CHUNK_ROWS = 4096  # users of a block compared in one numpy pass
SHARED_GENRE_SHARE = 0.15
AFFINITY_VECTOR = ("affinities", "affinity_weights")
"""The named part of the taste vector (the dense part: features, weights)."""
POPULAR_PER_GROUP = 40
RELEASES_KEPT = tables.RELEASES_SHOWN + tables.RELEASE_SPARES  # spares: see tables
FALLBACK_CANDIDATES = 200
CO_WEIGHT = 0.1
"""How much of a pick's score comes from co-collection (releases kept by the collectors of
what the user owns) rather than taste (popular in the user's taste groups: styles, genres,
artists and label-eras)."""


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
    "owned array<long>, held array<long>, taste_groups array<int>, taste_shares array<double>, "
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
    unit taste vector, its signature, the owned and held (owned or wanted) releases, and the
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


# -- friends -------------------------------------------------------------------------------------
#
# The taste vector (user_tastes): the user's genre shares, style shares and the shares of
# their strongest artists and label-eras as features, scaled to unit length together, so two
# collectors match on their genres, their styles *and* what they complete (records by the
# same artists, from the same label-eras), and cosine similarity is a dot product.


def _blocks(tastes: DataFrame) -> DataFrame:
    """block, user_id, signature: each user is in the blocks of their top genre, their top two
    styles, their strongest affinity (collectors of the same artist or label-era meet there
    whatever their genres) and one global block; the signature (a random projection of the
    taste vector) orders each block so that similar tastes sit close together."""
    named = tastes.filter(F.size("features") > 0)
    block = F.concat(
        F.transform(F.slice("genres", 1, 1), lambda g: F.concat(F.lit("g:"), g)),
        F.transform(F.slice("styles", 1, 2), lambda s: F.concat(F.lit("s:"), s)),
        F.slice(F.coalesce("affinities", F.array().cast("array<string>")), 1, 1),
        F.array(F.lit("*")),
    )
    return named.select(F.explode(block).alias("block"), "user_id", "signature")


def candidate_friends(
    tastes: DataFrame,
    window: int = FRIEND_WINDOW,
    kept: int = FRIENDS_KEPT,
    chunk_rows: int = FRIEND_CHUNK_ROWS,
) -> DataFrame:
    """user_id, friend_id, similarity: candidate pairs (both directions), found without
    comparing all pairs. Within each block (:func:`_blocks`), sorted by signature, each user
    is compared with the ``window`` users that follow; of those comparisons each user keeps
    at least their ``kept`` best, which is all :func:`best_friends` needs.

    The comparisons run in numpy (:func:`spark_jobs.neighbours.chunk_neighbours`) on chunks
    of ``chunk_rows`` consecutive users of a block, each chunk with the first ``window``
    users of the next, so every pair of neighbours is compared in exactly one chunk.
    """
    dims = (tastes.select(F.max(F.array_max("features"))).first()[0] or 0) + 1
    blocks = _blocks(tastes).withColumn(
        "pos", F.row_number().over(Window.partitionBy("block").orderBy("signature", "user_id"))
    )
    chunk = F.floor((F.col("pos") - 1) / chunk_rows)
    # A chunk's head rows are also the tail of the chunk before it.
    shared = ((F.col("pos") - 1) % chunk_rows < window) & (chunk > 0)
    members = blocks.select(
        "block",
        "user_id",
        "pos",
        F.explode(F.when(shared, F.array(chunk, chunk - 1)).otherwise(F.array(chunk))).alias(
            "chunk"
        ),
    ).join(tastes.select("user_id", "features", "weights", *AFFINITY_VECTOR), "user_id")

    def compare(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        batches = list(batches)
        if not batches:
            return
        # Every chunk of this partition, in (block, chunk, pos) order: one Python call for
        # all of them (a grouped UDF would pay its per-group cost for each small style block).
        table = pa.Table.from_batches(batches)
        block = table.column("block").combine_chunks().dictionary_encode().indices.to_numpy()
        chunk = table.column("chunk").to_numpy()
        pos = table.column("pos").to_numpy()
        users = table.column("user_id").to_numpy()
        offsets, values = flat_lists(table.column("features").combine_chunks())
        values = values.to_numpy(zero_copy_only=False)
        weights = pc.list_flatten(table.column("weights").combine_chunks()).to_numpy(
            zero_copy_only=False
        )
        named_offsets, names = flat_lists(table.column("affinities").combine_chunks())
        codes = names.dictionary_encode().indices.to_numpy(zero_copy_only=False)
        named_weights = pc.list_flatten(table.column("affinity_weights").combine_chunks()).to_numpy(
            zero_copy_only=False
        )
        starts = np.flatnonzero(run_starts(block, chunk))
        for start, end in zip(starts, [*starts[1:], len(users)], strict=True):
            first, last = named_offsets[start], named_offsets[end]
            chunk_end = (chunk[start] + 1) * chunk_rows
            user, friend, similarity = neighbours.chunk_neighbours(
                users[start:end],
                offsets[start : end + 1] - offsets[start],
                values[offsets[start] : offsets[end]],
                weights[offsets[start] : offsets[end]],
                dims,
                int(np.sum(pos[start:end] <= chunk_end)),
                window,
                kept,
                named=(
                    named_offsets[start : end + 1] - first,
                    codes[first:last],
                    named_weights[first:last],
                ),
            )
            yield pa.record_batch({"user_id": user, "friend_id": friend, "similarity": similarity})

    candidates = (
        members.repartition("block", "chunk")
        .sortWithinPartitions("block", "chunk", "pos")
        .mapInArrow(compare, "user_id long, friend_id long, similarity double")
    )
    # A pair met in several blocks appears once per block (best_friends counts it once).
    return candidates


def best_friends(candidates: DataFrame, tastes: DataFrame, kept: int = FRIENDS_KEPT) -> DataFrame:
    """user_id, friend_id, similarity, rank (1 = the recommended friend, ties: lower id),
    shared_genres and reason (the recommended friend's; null for the runners-up). Never the
    user themselves; a pair met in several blocks counts once.

    Ranking is one numpy pass per partition of users (:func:`neighbours.best_per_user`), not
    a deduplicating aggregation followed by a window: one shuffle instead of two."""

    def rank(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        batches = list(batches)
        if not batches:
            return
        table = pa.Table.from_batches(batches)
        user = table.column("user_id").to_numpy()
        friend = table.column("friend_id").to_numpy()
        similarity = table.column("similarity").to_numpy()
        other = user != friend
        user, friend, similarity = user[other], friend[other], similarity[other]
        best = neighbours.best_per_user(user, friend, similarity, kept)  # by user, then rank
        user, friend, similarity = user[best], friend[best], similarity[best]
        yield pa.record_batch(
            {
                "user_id": user,
                "friend_id": friend,
                "similarity": similarity,
                "rank": pa.array(ranks_in_runs(user), pa.int32()),
            }
        )

    ranked = (
        candidates.select("user_id", "friend_id", "similarity")
        .repartition("user_id")
        .mapInArrow(rank, "user_id long, friend_id long, similarity double, rank int")
    )
    genres = tastes.select(
        "user_id",
        F.map_from_arrays("genres", "genre_shares").alias("genre_shares"),
        F.map_from_arrays("affinities", "affinity_records").alias("kept"),
    )
    # Reasons only for the recommended friend (the site shows no other): two joins of one
    # row per user, not of every candidate.
    joined = (
        ranked.filter("rank = 1")
        .join(genres.alias("me"), "user_id")
        .join(
            genres.select(
                F.col("user_id").alias("friend_id"),
                F.col("genre_shares").alias("theirs"),
                F.col("kept").alias("they_keep"),
            ),
            "friend_id",
        )
    )
    both = F.filter(
        F.map_keys("me.genre_shares"),
        lambda g: (
            (F.col("me.genre_shares")[g] >= SHARED_GENRE_SHARE)
            & (F.coalesce(F.try_element_at(F.col("theirs"), g), F.lit(0.0)) >= SHARED_GENRE_SHARE)
        ),
    )
    by_weight = F.array_sort(
        F.transform(
            both,
            lambda g: F.struct(
                (-F.least(F.col("me.genre_shares")[g], F.col("theirs")[g])).alias("w"), g.alias("g")
            ),
        )
    )
    shared = F.slice(F.transform(by_weight, lambda s: s["g"]), 1, 2)
    match = F.round(F.col("similarity") * 100).cast("int")
    # The artist or label-era both keep the most records of (ties: by name).
    both_keep = F.array_sort(
        F.transform(
            F.filter(
                F.map_keys("me.kept"), lambda k: F.try_element_at(F.col("they_keep"), k).isNotNull()
            ),
            lambda k: F.struct(
                (-F.least(F.col("me.kept")[k], F.col("they_keep")[k])).alias("n"), k.alias("k")
            ),
        )
    )
    reason = (
        F.when(
            F.size(both_keep) > 0,
            F.format_string(
                "you both own at least %d %s records, %d%% taste match",
                -both_keep[0]["n"],
                F.substring(both_keep[0]["k"], 3, 1_000_000),
                match,
            ),
        )
        .when(
            F.size(shared) == 2,
            F.format_string(
                "you both collect %s and %s, %d%% taste match", shared[0], shared[1], match
            ),
        )
        .when(
            F.size(shared) == 1,
            F.format_string("you both collect %s, %d%% taste match", shared[0], match),
        )
        .otherwise(F.format_string("similar styles, %d%% taste match", match))
    )
    return joined.select(
        "user_id",
        "friend_id",
        "similarity",
        "rank",
        shared.alias("shared_genres"),
        reason.alias("reason"),
    ).unionByName(
        ranked.filter("rank > 1").select(
            "user_id",
            "friend_id",
            "similarity",
            "rank",
            F.lit(None).cast("array<string>").alias("shared_genres"),
            F.lit(None).cast("string").alias("reason"),
        )
    )


# -- releases ------------------------------------------------------------------------------------


def popularity(
    collections: DataFrame, releases: DataFrame, group: str, per_group: int = POPULAR_PER_GROUP
) -> DataFrame:
    """``group`` ("genre" or "style"), release_id, popularity: the release's share of its
    group's ownership, for the ``per_group`` most owned releases of each group. (The nightly
    run ranks every group at once in numpy: :func:`spark_jobs.picks.most_owned`.)"""
    column = known_genres() if group == "genre" else F.coalesce(F.col("styles"), F.array())
    counts = collections.groupBy("release_id").agg(F.count("*").alias("owners"))
    exploded = counts.join(
        releases.select("release_id", column.alias("groups")), "release_id"
    ).select("release_id", "owners", F.explode("groups").alias(group))
    order = Window.partitionBy(group).orderBy(F.desc("owners"), "release_id")
    ranked = exploded.withColumn("r", F.row_number().over(order))
    total = F.sum("owners").over(Window.partitionBy(group))
    return (
        ranked.withColumn("popularity", F.col("owners") / total)
        .filter(F.col("r") <= per_group)
        .select(group, "release_id", "popularity")
    )


def recommend_releases(
    collections: DataFrame,
    releases: DataFrame,
    tastes: DataFrame,
    friends: DataFrame,
    kept: int = RELEASES_KEPT,
    similar: picks.SimilarReleases | None = None,
    co_weight: float = CO_WEIGHT,
    catalog: CatalogIndex | None = None,
) -> DataFrame:
    """user_id, rank, release_id, score, reason: releases the user neither owns nor wants.

    A candidate's score is how popular it is within the user's taste groups (their top
    styles and genres, and the artists and label-eras they complete), weighted by how much
    of the collection each takes, plus a bonus when the recommended friend owns it. Users
    with no candidate left get the most owned releases overall they do not hold. The
    per-user arithmetic is :func:`spark_jobs.picks.pick_releases`, run on Arrow batches of
    users: each user's row of ``tastes`` (:func:`user_tastes`, whose group ids ``catalog``
    numbers) with their friend's collection joined to it.

    With ``similar`` (:func:`spark_jobs.cocollection.similar_releases`), releases kept by the
    collectors of what the user owns are candidates too, blended in with ``co_weight``.
    """
    catalog = catalog or catalog_index(releases)
    # Ownership counts are one aggregation; the ranking per group is numpy's.
    owned = collections.groupBy("release_id").agg(F.count("*").alias("owners")).toArrow()
    popular, fallback_releases, fallback_owners = picks.most_owned(
        catalog,
        owned.column("release_id").to_numpy(),
        owned.column("owners").to_numpy(),
        POPULAR_PER_GROUP,
        FALLBACK_CANDIDATES,
    )
    friend = friends.filter("rank = 1").select("user_id", "friend_id")
    users = (
        tastes.select("user_id", "held", "owned", "taste_groups", "taste_shares")
        .join(friend, "user_id", "left")
        .join(
            tastes.select(F.col("user_id").alias("friend_id"), F.col("owned").alias("theirs")),
            "friend_id",
            "left",
        )
        .drop("friend_id")
    )
    # A co-collection pick names the owned release behind it: the titles of the releases
    # that have similar ones travel with the lists (no join of every pick with the catalog).
    because_ids = similar.release_ids if similar is not None else np.zeros(0, np.int64)
    shared = collections.sparkSession.sparkContext.broadcast(
        (popular, fallback_releases, fallback_owners, similar, titles_of(releases, because_ids))
    )

    def pick(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        popular, fallback_releases, fallback_owners, similar, because_titles = shared.value
        for batch in batches:
            taste_offsets, groups = flat_lists(batch.column("taste_groups"))
            shares = pc.list_flatten(batch.column("taste_shares"))
            chosen = flat_lists(batch.column("held"))
            theirs = flat_lists(batch.column("theirs"))
            owned = flat_lists(batch.column("owned"))
            found = picks.pick_releases(
                batch.num_rows,
                taste_offsets,
                groups.to_numpy(zero_copy_only=False).astype(np.int64),
                shares.to_numpy(zero_copy_only=False),
                chosen[0],
                chosen[1].to_numpy(zero_copy_only=False),
                theirs[0],
                theirs[1].to_numpy(zero_copy_only=False),
                pc.list_value_length(batch.column("owned")).fill_null(0).to_numpy() > 0,
                popular,
                fallback_releases,
                fallback_owners,
                kept,
                similar=similar,
                owned_offsets=owned[0],
                owned_releases=owned[1].to_numpy(zero_copy_only=False),
                co_weight=co_weight,
            )
            yield pa.record_batch(
                {
                    "user_id": batch.column("user_id").take(pa.array(found.user)),
                    "rank": pa.array(found.rank, pa.int32()),
                    "release_id": pa.array(found.release, pa.int64()),
                    "score": pa.array(found.score, pa.float64()),
                    "source": popular.names.take(
                        pa.array(found.source, mask=found.source == picks.NO_SOURCE)
                    ),
                    "friend_owns": pa.array(found.friend_owns, pa.bool_()),
                    "because": pa.array(found.because, mask=found.because == picks.NO_SOURCE),
                    "because_title": because_titles.take(
                        pa.array(
                            np.searchsorted(because_ids, found.because),
                            mask=found.because == picks.NO_SOURCE,
                        )
                    ),
                }
            )

    ranked = users.mapInArrow(
        pick,
        "user_id long, rank int, release_id long, score double, source string, "
        "friend_owns boolean, because long, because_title string",
    )
    return ranked.select("user_id", "rank", "release_id", "score", pick_reason().alias("reason"))


def titles_of(releases: DataFrame, release_ids: np.ndarray) -> pa.Array:
    """The titles of ``release_ids`` (sorted), in their order; null for one not in
    ``releases`` or without a title."""
    if len(release_ids) == 0:
        return pa.array([], pa.string())
    catalog = releases.select("release_id", "title").toArrow().sort_by("release_id")
    known = catalog.column("release_id").to_numpy()
    at = np.minimum(np.searchsorted(known, release_ids), len(known) - 1)
    found = known[at] == release_ids if len(known) else np.zeros(len(release_ids), bool)
    return catalog.column("title").combine_chunks().take(pa.array(at, mask=~found))


def pick_reason() -> Column:
    """Why a pick (source, friend_owns, because, because_title) is recommended."""
    because_title = F.coalesce(
        F.col("because_title"), F.format_string("release %d", F.col("because"))
    )
    source = F.col("source")
    name = F.substring(source, 3, 1_000_000)  # the name after its "g:", "s:", "a:" or "l:"
    return (
        F.when(
            F.col("because").isNotNull(),
            F.format_string("collectors of %s also keep it", because_title),
        )
        .when(source.isNull(), F.lit("one of the most collected records on discorecs"))
        .when(
            source.startswith(ARTIST), F.format_string("more by %s, whose records you keep", name)
        )
        .when(
            source.startswith(LABEL_ERA),
            F.format_string("from %s, a label and era you collect", name),
        )
        .when(
            F.col("friend_owns"),
            F.format_string("owned by your closest taste match and popular in %s", name),
        )
        .otherwise(F.format_string("popular among %s collectors like you", name))
    )
