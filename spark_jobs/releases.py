"""The release step of the nightly batch: every user's top releases, never one they own or
want, each with its reason.

A pick's score blends taste (popular among the collectors of the user's taste groups:
styles, genres, artists and label-eras, weighted by the user's shares) with co-collection
(releases kept by the collectors of what the user owns), with a bonus for what the
recommended friend owns; the per-user arithmetic is :mod:`spark_jobs.picks`.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F

from discorecs import tables
from discorecs.affinities import ARTIST, LABEL_ERA
from discorecs.catalog.index import CatalogIndex, catalog_index
from discorecs.flatlists import concatenated, flat_lists, run_starts
from spark_jobs import picks
from spark_jobs import transforms as t

POPULAR_PER_GROUP = 40
RELEASES_KEPT = tables.RELEASES_SHOWN + tables.RELEASE_SPARES  # spares: see tables
FALLBACK_CANDIDATES = 200
CO_WEIGHT = 0.1
"""How much of a pick's score comes from co-collection (releases kept by the collectors of
what the user owns) rather than taste (popular in the user's taste groups: styles, genres,
artists and label-eras)."""


def popularity(
    collections: DataFrame, releases: DataFrame, group: str, per_group: int = POPULAR_PER_GROUP
) -> DataFrame:
    """``group`` ("genre" or "style"), release_id, popularity: the release's share of its
    group's ownership, for the ``per_group`` most owned releases of each group. (The nightly
    run ranks every group at once in numpy: :func:`spark_jobs.picks.most_owned`.)"""
    column = t.known_genres() if group == "genre" else F.coalesce(F.col("styles"), F.array())
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


PICKS = "array<struct<rank:int,release_id:bigint,score:double,reason:string>>"
"""A user's picks as :func:`pick_lists` gives them, in rank order (Spark's DDL)."""


def flat_picks(lists: DataFrame) -> DataFrame:
    """user_id, rank, release_id, score, reason from :func:`pick_lists` (no shuffle)."""
    return lists.select("user_id", F.inline("picks"))


def pick_lists(
    collections: DataFrame,
    releases: DataFrame,
    tastes: DataFrame,
    friends: DataFrame,
    kept: int = RELEASES_KEPT,
    similar: picks.SimilarReleases | None = None,
    co_weight: float = CO_WEIGHT,
    catalog: CatalogIndex | None = None,
) -> DataFrame:
    """user_id, picks (:data:`PICKS`): the releases each user neither owns nor wants, best
    first, one row per user with a pick. The pick pass leaves each user's picks together
    and in rank order, so the serving rows need no grouping of 15 rows a user.

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
    # The friend's records first, then the user's own: the user's holdings (owned and wanted)
    # are the larger lists, and this order shuffles them once, not twice.
    theirs = (
        friends.filter("rank = 1")
        .select("user_id", "friend_id")
        .join(
            tastes.select(F.col("user_id").alias("friend_id"), F.col("owned").alias("theirs")),
            "friend_id",
            "left",
        )
        .drop("friend_id")
    )
    users = tastes.select("user_id", "owned", "wanted", "taste_groups", "taste_shares").join(
        theirs, "user_id", "left"
    )
    # A co-collection pick names the owned release behind it: the titles of the releases
    # that have similar ones travel with the lists (no join of every pick with the catalog).
    because_ids = similar.release_ids if similar is not None else np.zeros(0, np.int64)
    reasons = Reasons.of(popular.names, because_ids, titles_of(releases, because_ids))
    shared = collections.sparkSession.sparkContext.broadcast(
        (popular, fallback_releases, fallback_owners, similar, reasons)
    )

    def pick(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        popular, fallback_releases, fallback_owners, similar, reasons = shared.value
        for batch in batches:
            taste_offsets, groups = flat_lists(batch.column("taste_groups"))
            shares = pc.list_flatten(batch.column("taste_shares"))
            theirs = flat_lists(batch.column("theirs"))
            owned = flat_lists(batch.column("owned"))
            owned_releases = owned[1].to_numpy(zero_copy_only=False)
            wanted = flat_lists(batch.column("wanted"))
            held = concatenated(
                owned[0], owned_releases, wanted[0], wanted[1].to_numpy(zero_copy_only=False)
            )
            found = picks.pick_releases(
                batch.num_rows,
                taste_offsets,
                groups.to_numpy(zero_copy_only=False).astype(np.int64),
                shares.to_numpy(zero_copy_only=False),
                *held,
                theirs[0],
                theirs[1].to_numpy(zero_copy_only=False),
                pc.list_value_length(batch.column("owned")).fill_null(0).to_numpy() > 0,
                popular,
                fallback_releases,
                fallback_owners,
                kept,
                similar=similar,
                owned_offsets=owned[0],
                owned_releases=owned_releases,
                co_weight=co_weight,
            )
            # Picks come by user, then rank: each user's are one run.
            first = np.flatnonzero(run_starts(found.user))
            ranked = pa.StructArray.from_arrays(
                [
                    pa.array(found.rank, pa.int32()),
                    pa.array(found.release, pa.int64()),
                    pa.array(found.score, pa.float64()),
                    reasons.of_picks(found),
                ],
                names=["rank", "release_id", "score", "reason"],
            )
            yield pa.record_batch(
                {
                    "user_id": batch.column("user_id").take(pa.array(found.user[first])),
                    "picks": pa.ListArray.from_arrays(
                        pa.array(np.append(first, len(found.user)), pa.int32()), ranked
                    ),
                }
            )

    return users.mapInArrow(pick, f"user_id long, picks {PICKS}")


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


@dataclass(frozen=True)
class Reasons:
    """Every reason a run can give for a pick, each text rendered once on the driver: a pick
    takes its own by index (:meth:`of_picks`), so the 15 picks of each of a million users
    format no text. ``texts``: the fallback's; each taste group's (popular there); each
    taste group's when the friend owns the pick too; then one per release whose collectors'
    picks it explains (``because_ids``, sorted)."""

    texts: pa.Array  # string
    groups: int
    because_ids: np.ndarray

    FALLBACK = "one of the most collected records on discorecs"

    @classmethod
    def of(
        cls, group_names: pa.Array, because_ids: np.ndarray, because_titles: pa.Array
    ) -> Reasons:
        """From the taste groups' names (:attr:`CatalogIndex.group_names`: "g:", "s:", "a:"
        or "l:" before the name) and the titles of ``because_ids`` (null: untitled)."""
        name = pc.utf8_slice_codeunits(group_names, len(ARTIST))

        def phrase(before: str, after: str, of: pa.Array = name) -> pa.Array:
            return pc.binary_join_element_wise(before, of, after, "")

        artist = pc.starts_with(group_names, ARTIST)
        label_era = pc.starts_with(group_names, LABEL_ERA)
        # An artist's or a label-era's reason does not change with the friend.
        affinity = pc.if_else(
            artist,
            phrase("more by ", ", whose records you keep"),
            phrase("from ", ", a label and era you collect"),
        )
        affinities = pc.or_(artist, label_era)
        popular = pc.if_else(affinities, affinity, phrase("popular among ", " collectors like you"))
        friend_owns = pc.if_else(
            affinities,
            affinity,
            phrase("owned by your closest taste match and popular in ", ""),
        )
        untitled = pc.binary_join_element_wise(
            "release ", pc.cast(pa.array(because_ids, pa.int64()), pa.string()), ""
        )
        because = phrase("collectors of ", " also keep it", pc.coalesce(because_titles, untitled))
        return cls(
            pa.concat_arrays([pa.array([cls.FALLBACK]), popular, friend_owns, because]),
            len(group_names),
            np.asarray(because_ids, np.int64),
        )

    def of_picks(self, found: picks.Picks) -> pa.Array:
        """Each pick's reason: the owned release behind a co-collection pick; none (the
        fallback: most collected overall); the artist or label-era it completes; or the
        genre or style it is popular in, and whether the friend owns it."""
        at = np.where(
            found.because != picks.NO_SOURCE,
            1 + 2 * self.groups + np.searchsorted(self.because_ids, found.because),
            np.where(
                found.source == picks.NO_SOURCE,
                0,
                1 + found.source + self.groups * found.friend_owns.astype(np.int64),
            ),
        )
        return self.texts.take(pa.array(at, pa.int64()))
