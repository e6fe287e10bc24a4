"""The friend step of the nightly batch: for every user, the collector whose taste is most
like theirs, and the next best.

The taste vector (:func:`spark_jobs.transforms.user_tastes`): the user's genre shares, style
shares and the shares of their strongest artists and label-eras as features, scaled to unit
length together, so two collectors match on their genres, their styles *and* what they
complete (records by the same artists, from the same label-eras), and cosine similarity is a
dot product (the formula: :func:`spark_jobs.neighbours.window_similarities`). All pairs are
never compared: users meet in blocks (:func:`candidate_friends`).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from discorecs.flatlists import flat_lists, ranks_in_runs, run_starts
from spark_jobs import neighbours

FRIEND_WINDOW = 8  # neighbours compared on each side in every block (sorted neighbourhood)
FRIENDS_KEPT = 5
FRIEND_CHUNK_ROWS = 4096  # users of a block compared in one numpy pass
SHARED_GENRE_SHARE = 0.15
TASTE_VECTOR = ("features", "weights", "affinities", "affinity_weights")
"""The taste vector's columns: its dense part (feature indices, weights) and its named part
(the strongest affinities, weights)."""


def _blocks(tastes: DataFrame) -> DataFrame:
    """block, user_id, signature and the taste vector (:data:`TASTE_VECTOR`): each user is
    in the blocks of their top genre, their top two styles, their strongest affinity
    (collectors of the same artist or label-era meet there whatever their genres) and one
    global block; the signature (a random projection of the taste vector) orders each block
    so that similar tastes sit close together."""
    named = tastes.filter(F.size("features") > 0)
    block = F.concat(
        F.transform(F.slice("genres", 1, 1), lambda g: F.concat(F.lit("g:"), g)),
        F.transform(F.slice("styles", 1, 2), lambda s: F.concat(F.lit("s:"), s)),
        F.slice(F.coalesce("affinities", F.array().cast("array<string>")), 1, 1),
        F.array(F.lit("*")),
    )
    return named.select(F.explode(block).alias("block"), "user_id", "signature", *TASTE_VECTOR)


def candidate_friends(
    tastes: DataFrame,
    window: int = FRIEND_WINDOW,
    kept: int = FRIENDS_KEPT,
    chunk_rows: int = FRIEND_CHUNK_ROWS,
) -> DataFrame:
    """user_id, friend_id, similarity: candidate pairs (both directions), found without
    comparing all pairs. Within each block (:func:`_blocks`), sorted by signature (ties: user
    id), each user is compared with the ``window`` users that follow; of those comparisons
    each user keeps at least their ``kept`` best, which is all :func:`best_friends` needs.

    One shuffle: every block's members, taste vectors included, go to one partition, sorted.
    There the comparisons run in numpy (:func:`spark_jobs.neighbours.chunk_neighbours`) on
    chunks of ``chunk_rows`` consecutive users of a block, each chunk with the first
    ``window`` users of the next, so every pair of neighbours is compared in exactly one
    chunk and a chunk's matrices stay small however large its block.
    """
    dims = (tastes.select(F.max(F.array_max("features"))).first()[0] or 0) + 1

    def compare(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        batches = list(batches)
        if not batches:
            return
        # Every block of this partition, in (block, signature, user) order: one Python call
        # for all of them (a grouped UDF would pay its per-group cost for each small block).
        table = pa.Table.from_batches(batches)
        block = table.column("block").combine_chunks().dictionary_encode().indices.to_numpy()
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
        for start, end in _chunks(block, chunk_rows, window):
            first, last = named_offsets[start], named_offsets[end]
            user, friend, similarity = neighbours.chunk_neighbours(
                users[start:end],
                offsets[start : end + 1] - offsets[start],
                values[offsets[start] : offsets[end]],
                weights[offsets[start] : offsets[end]],
                dims,
                min(chunk_rows, end - start),
                window,
                kept,
                named=(
                    named_offsets[start : end + 1] - first,
                    codes[first:last],
                    named_weights[first:last],
                ),
            )
            yield pa.record_batch({"user_id": user, "friend_id": friend, "similarity": similarity})

    # A pair met in several blocks appears once per block (best_friends counts it once).
    return (
        _blocks(tastes)
        .repartition("block")
        .sortWithinPartitions("block", "signature", "user_id")
        .mapInArrow(compare, "user_id long, friend_id long, similarity double")
    )


def _chunks(block: np.ndarray, chunk_rows: int, window: int) -> Iterator[tuple[int, int]]:
    """(start, end) row ranges of the chunks of each run of equal ``block`` codes: ``chunk_rows``
    rows of the block each, plus up to ``window`` rows that follow them in it (the head of
    the next chunk: compared with, never compared from)."""
    starts = np.flatnonzero(run_starts(block))
    for block_start, block_end in zip(starts, [*starts[1:], len(block)], strict=True):
        for start in range(int(block_start), int(block_end), chunk_rows):
            yield start, min(start + chunk_rows + window, int(block_end))


def best_friends(candidates: DataFrame, tastes: DataFrame, kept: int = FRIENDS_KEPT) -> DataFrame:
    """user_id, friend_id, similarity, rank (1 = the recommended friend, ties: lower id),
    shared_genres and reason (the recommended friend's; null for the runners-up): the
    candidates ranked (:func:`ranked_friends`), the best one explained
    (:func:`explained_friends`). Never the user themselves; a pair met in several blocks
    counts once."""
    return explained_friends(ranked_friends(candidates, kept), tastes)


def ranked_friends(candidates: DataFrame, kept: int = FRIENDS_KEPT) -> DataFrame:
    """user_id, friend_id, similarity, rank: each user's ``kept`` best candidates.

    One numpy pass per partition of users (:func:`neighbours.best_per_user`), not a
    deduplicating aggregation followed by a window: one shuffle instead of two. The nightly
    run computes this once before :func:`explained_friends` reads it twice (the recommended
    friends, the runners-up)."""

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

    return (
        candidates.select("user_id", "friend_id", "similarity")
        .repartition("user_id")
        .mapInArrow(rank, "user_id long, friend_id long, similarity double, rank int")
    )


def explained_friends(ranked: DataFrame, tastes: DataFrame) -> DataFrame:
    """``ranked`` (:func:`ranked_friends`) with shared_genres and reason for each user's
    recommended friend (rank 1; null for the runners-up): the genres both collect, or the
    artist or label-era both keep the most records of."""
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
