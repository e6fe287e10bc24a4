"""Releases collected together: the item-to-item half of the recommender.

Two releases are similar when the same collectors keep both. Over the ownership matrix the
similarity of releases a and b is

    similarity(a, b) = co_owners(a, b) / (owners(a) * owners(b)) ** OWNERS_EXPONENT

With an exponent of 0.5 this is the cosine of the two releases' owner sets; above it,
popular releases are pushed down further (two collectors sharing a rare record say more
about each other's taste than two sharing a hit, which everyone keeps anyway). Each release
keeps its ``kept`` most similar releases.

Bounded, because pairs grow with the square of a collection and with the users:

- only users whose id hashes into the ``sample_share`` take part (the nightly run sets it so
  that at most ``co_collection_users`` users do, whatever the population): the similarity
  of two releases is a ratio of counts, which a uniform sample of users estimates without
  bias, and the popular pairs that recommendations are made of are the ones a sample sees;
- a user contributes the pairs of at most ``PAIRED_RECORDS`` of their records (chosen by a
  seeded hash, the same every run), so a collector of 5,000 records adds no more pairs than
  one of 40;
- a pair seen by fewer than ``MIN_CO_OWNERS`` users is noise and is dropped.

So the work is at most users x 780 pairs, counted on the driver in numpy
(:func:`similar_releases`) from the sampled holdings Spark selects
(:func:`sampled_holdings`): 50,000 users make 39M pairs, a few seconds of sorting.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from discorecs.flatlists import ranks_in_runs, run_starts
from spark_jobs.picks import RANKING_DIGITS, SimilarReleases

PAIRED_RECORDS = 40
MIN_CO_OWNERS = 2
NEIGHBOURS_KEPT = 30
OWNERS_EXPONENT = 0.8
PAIR_SEED = 17
SAMPLE_BUCKETS = 1_000_000


def sampled_holdings(collections: DataFrame, sample_share: float = 1.0) -> pa.Table:
    """user_id, release_id, draw: the records of the users whose id hashes into
    ``sample_share``, each with its seeded draw (a user's ``PAIRED_RECORDS`` lowest draws are
    the records they pair)."""
    owned = collections.select("user_id", "release_id")
    if sample_share < 1.0:
        bucket = F.abs(F.xxhash64(F.lit(PAIR_SEED), "user_id")) % SAMPLE_BUCKETS
        owned = owned.filter(bucket < int(sample_share * SAMPLE_BUCKETS))
    return owned.select(
        "user_id", "release_id", F.xxhash64(F.lit(PAIR_SEED), "user_id", "release_id").alias("draw")
    ).toArrow()


def similar_releases(
    holdings: pa.Table,
    *,
    kept: int = NEIGHBOURS_KEPT,
    paired_records: int = PAIRED_RECORDS,
    min_co_owners: int = MIN_CO_OWNERS,
) -> SimilarReleases:
    """Each release's ``kept`` most similar releases (ties: lower id) from ``holdings``
    (:func:`sampled_holdings`: user_id, release_id, draw; one row per record)."""
    user = holdings.column("user_id").to_numpy()
    release = holdings.column("release_id").to_numpy()
    draw = holdings.column("draw").to_numpy()
    ids, owners = np.unique(release, return_counts=True)

    # Each user's paired records, sorted by release so every pair comes as (lower, higher).
    order = np.lexsort((release, draw, user))
    user, release = user[order], release[order]
    chosen = ranks_in_runs(user) <= paired_records if len(user) else np.zeros(0, bool)
    user, release = user[chosen], release[chosen]
    order = np.lexsort((release, user))
    user, release = user[order], release[order]
    pair_keys, co_owners = _count_pairs(user, release)
    common = co_owners >= min_co_owners
    a, b = np.divmod(pair_keys[common], 1 << 32)
    co = co_owners[common].astype(np.float64)
    na, nb = owners[np.searchsorted(ids, a)], owners[np.searchsorted(ids, b)]
    similarity = np.round(co / (na.astype(np.float64) * nb) ** OWNERS_EXPONENT, RANKING_DIGITS)

    # Both directions; each release's best ``kept``.
    source, target = np.concatenate([a, b]), np.concatenate([b, a])
    similarity = np.concatenate([similarity, similarity])
    order = np.lexsort((target, -similarity, source))
    source, target, similarity = source[order], target[order], similarity[order]
    best = ranks_in_runs(source) <= kept if len(source) else np.zeros(0, bool)
    return SimilarReleases.build(source[best], target[best], similarity[best])


def _count_pairs(user: np.ndarray, release: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(pair key, users) of every pair of releases held by one user (rows sorted by user,
    then release): key = lower id << 32 | higher id."""
    starts = np.flatnonzero(run_starts(user)) if len(user) else np.zeros(0, np.int64)
    sizes = np.diff(np.r_[starts, len(user)])
    keys = []
    for size in np.unique(sizes[sizes >= 2]):
        lower, higher = np.triu_indices(size, 1)
        rows = release[starts[sizes == size][:, None] + np.arange(size)]
        keys.append(((rows[:, lower] << 32) | rows[:, higher]).ravel())
    if not keys:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    return np.unique(np.concatenate(keys), return_counts=True)
