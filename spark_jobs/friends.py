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

import math
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
FRIEND_PARTITION_ROWS = 250_000  # block members compared in one task (range partitions)
BLOCKS_PER_USER = 5  # at most: a genre, two styles, an affinity, the global block
RANKED_COLUMNS = ("user_id", "friend_id", "similarity", "rank")
EXPLAINED_SCHEMA = (
    "user_id long, friend_id long, similarity double, rank int, "
    "shared_genres array<string>, reason string"
)
FRIEND_TRAITS = ("genres", "genre_shares", "affinities", "affinity_records")
"""What a friend's reason compares (:func:`neighbours.friend_reasons`)."""


def _blocks(tastes: DataFrame) -> DataFrame:
    """block, user_id, signature and the taste vector: its dense part (features: indices,
    weights) and its named part (affinity_keys, affinity_weights: the strongest affinities).
    Each user is in the blocks of their top genre, their top two styles, their strongest
    affinity (collectors of the same artist or label-era meet there whatever their genres)
    and one global block; the signature (a random projection of the taste vector) orders
    each block so that similar tastes sit close together.

    Blocks and affinities travel as 64-bit hashes of their names: the shuffle moves every
    user about five times, and a long sorts and compares faster than a name. Two names
    with one hash (odds of about 1e-8 among a million names) would only merge two blocks,
    or count two affinities as one in a similarity.
    """
    named = tastes.filter(F.size("features") > 0)
    block = F.concat(
        F.transform(F.slice("genres", 1, 1), lambda g: F.concat(F.lit("g:"), g)),
        F.transform(F.slice("styles", 1, 2), lambda s: F.concat(F.lit("s:"), s)),
        F.slice(F.coalesce("affinities", F.array().cast("array<string>")), 1, 1),
        F.array(F.lit("*")),
    )
    return named.select(
        F.explode(F.transform(block, lambda name: F.xxhash64(name))).alias("block"),
        "user_id",
        "signature",
        "features",
        "weights",
        F.transform("affinities", lambda name: F.xxhash64(name)).alias("affinity_keys"),
        "affinity_weights",
    )


def candidate_friends(
    tastes: DataFrame,
    window: int = FRIEND_WINDOW,
    kept: int = FRIENDS_KEPT,
    chunk_rows: int = FRIEND_CHUNK_ROWS,
    partition_rows: int = FRIEND_PARTITION_ROWS,
) -> DataFrame:
    """user_id, friend_id, similarity: candidate pairs (both directions), found without
    comparing all pairs. Within each block (:func:`_blocks`), sorted by signature (ties: user
    id), each user is compared with the ``window`` users that follow; of those comparisons
    each user keeps at least their ``kept`` best, which is all :func:`best_friends` needs.

    One shuffle: the blocks' members, taste vectors included, are range-partitioned by
    (block, signature) and sorted, so a partition holds consecutive stretches of blocks.
    There the comparisons run in numpy (:func:`spark_jobs.neighbours.chunk_neighbours`) on
    chunks of ``chunk_rows`` consecutive users of a block, each chunk with the first
    ``window`` users of the next, so every pair of neighbours is compared in exactly one
    chunk and a chunk's matrices stay small however large its block.

    Why by range, not one partition per block: blocks are skewed (the global block holds
    everyone, a popular artist's block a large share), and a partition per block gave one
    task a fifth of all rows, in one Python worker's memory. By range, every task gets about
    ``partition_rows`` (at most the shuffle partitions' count of tasks; one for a small run;
    counted as if every user were in ``BLOCKS_PER_USER`` blocks).
    The price: a block cut between two partitions is not compared across the cut, at most
    ``window`` pairs per cut, each user keeping the candidates of their other blocks.
    """
    dims = (tastes.select(F.max(F.array_max("features"))).first()[0] or 0) + 1

    def compare(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        batches = list(batches)
        if not batches:
            return
        # Every block of this partition, in (block, signature, user) order: one Python call
        # for all of them (a grouped UDF would pay its per-group cost for each small block).
        table = pa.Table.from_batches(batches)
        block = table.column("block").to_numpy()
        users = table.column("user_id").to_numpy()
        offsets, values = flat_lists(table.column("features").combine_chunks())
        values = values.to_numpy(zero_copy_only=False)
        weights = pc.list_flatten(table.column("weights").combine_chunks()).to_numpy(
            zero_copy_only=False
        )
        named_offsets, names = flat_lists(table.column("affinity_keys").combine_chunks())
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

    most = int(tastes.sparkSession.conf.get("spark.sql.shuffle.partitions"))
    # Counting the users, not the blocks' rows: a count of the exploded rows took 7 s at 1M.
    members = tastes.count() * BLOCKS_PER_USER
    partitions = min(most, max(1, math.ceil(members / partition_rows)))
    # A pair met in several blocks appears once per block (best_friends counts it once).
    return (
        _blocks(tastes)
        .repartitionByRange(partitions, "block", "signature", "user_id")
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
    artist or label-era both keep the most records of (:func:`neighbours.friend_reasons`)."""
    traits = tastes.select("user_id", *FRIEND_TRAITS)
    # Reasons only for the recommended friend (the site shows no other): two joins of one
    # row per user, not of every candidate.
    pairs = (
        ranked.filter("rank = 1")
        .join(traits, "user_id")
        .join(
            traits.select(
                F.col("user_id").alias("friend_id"),
                *[F.col(trait).alias(f"their_{trait}") for trait in FRIEND_TRAITS],
            ),
            "friend_id",
        )
    )

    def explain(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        for batch in batches:
            shared, reason = neighbours.friend_reasons(batch)
            columns = {name: batch.column(name) for name in RANKED_COLUMNS}
            yield pa.record_batch({**columns, "shared_genres": shared, "reason": reason})

    explained = pairs.mapInArrow(explain, EXPLAINED_SCHEMA)
    return explained.unionByName(
        ranked.filter("rank > 1").select(
            *RANKED_COLUMNS,
            F.lit(None).cast("array<string>").alias("shared_genres"),
            F.lit(None).cast("string").alias("reason"),
        )
    )
