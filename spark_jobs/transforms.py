"""The pure cores of the nightly batch: DataFrame in, DataFrame out, no I/O.

Each function is one step of ``state -> scores -> rankings -> friends -> releases``; the jobs
in this package read their inputs, call these, and write the results.

Genre score formula: a user's score in genre g is the number of records they own in g, where
a release with n (known) genres counts 1/n towards each of them:

    score(u, g) = sum over releases r owned by u with g in genres(r) of 1 / |genres(r)|

so a user's scores add up to the number of their records that have a genre, and
``share(u, g) = score(u, g) / sum_g score(u, g)``.
"""

from __future__ import annotations

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

from discorecs.events import EventKind
from discorecs.genres import GENRES

# Scores and similarities are rounded before ranking: sums of floats depend on the order Spark
# adds them in (its partitioning), and the last bits must not decide a tie that the id breaks.
RANKING_DIGITS = 9
FRIEND_WINDOW = 8  # neighbours compared on each side in every block (sorted neighbourhood)
FRIENDS_KEPT = 5
SHARED_GENRE_SHARE = 0.15
TOP_STYLES = 3
TOP_GENRES = 2
POPULAR_PER_GROUP = 40
FRIEND_BONUS = 0.5
RELEASES_KEPT = 10


# -- current state -------------------------------------------------------------------------------


def latest_events(events: DataFrame, add: str, remove: str) -> DataFrame:
    """The event that decides each (user, release): user_id, release_id, kind, event_time.

    The latest by event time wins; at equal event times a remove beats an add (as a
    Cassandra tombstone beats a write of the same timestamp, which is how the stream applies
    events), then the larger event id. Duplicate events (same event id) count once. The stream
    and the batch both use this rule, so they agree however events are split into batches.
    """
    relevant = events.filter(F.col("kind").isin(add, remove)).dropDuplicates(["event_id"])
    order = Window.partitionBy("user_id", "release_id").orderBy(
        F.desc("event_time"), F.desc(F.col("kind") == remove), F.desc("event_id")
    )
    return (
        relevant.withColumn("rn", F.row_number().over(order))
        .filter("rn = 1")
        .select("user_id", "release_id", "kind", "event_time")
    )


def apply_events(snapshot: DataFrame, events: DataFrame, add: str, remove: str) -> DataFrame:
    """The holdings after ``events``: for each (user, release) the latest event wins (see
    :func:`latest_events`); keys without events keep their snapshot row; an event older than
    the snapshot row's ``changed_at`` is ignored.

    ``snapshot``: user_id, release_id, added_at, changed_at (may be null).
    ``events``: event_id, user_id, release_id, kind, event_time.
    Returns user_id, release_id, added_at, changed_at.
    """
    latest = latest_events(events, add, remove)
    joined = snapshot.alias("s").join(latest.alias("e"), ["user_id", "release_id"], "full_outer")
    applies = F.col("e.kind").isNotNull() & (
        F.col("s.changed_at").isNull() | (F.col("e.event_time") > F.col("s.changed_at"))
    )
    present = F.when(applies, F.col("e.kind") == add).otherwise(
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
    return apply_events(
        snapshot, events, EventKind.COLLECTION_ADD.value, EventKind.COLLECTION_REMOVE.value
    )


def current_wantlists(snapshot: DataFrame, events: DataFrame) -> DataFrame:
    return apply_events(
        snapshot, events, EventKind.WANTLIST_ADD.value, EventKind.WANTLIST_REMOVE.value
    )


# -- genre scores and rankings -------------------------------------------------------------------


def known_genres(column: str = "genres") -> Column:
    """``column`` without the strings that are not one of the 15 genres."""
    known = F.array(*[F.lit(genre) for genre in GENRES])
    return F.filter(F.coalesce(F.col(column), F.array()), lambda g: F.array_contains(known, g))


def genre_scores(collections: DataFrame, releases: DataFrame) -> DataFrame:
    """user_id, genre, score, share, collection_size (see the module docstring)."""
    sizes = collections.groupBy("user_id").agg(F.count("*").cast("int").alias("collection_size"))
    owned = collections.join(
        releases.select("release_id", known_genres().alias("genres")), "release_id"
    )
    weighted = (
        owned.filter(F.size("genres") > 0)
        .select(
            "user_id",
            F.explode("genres").alias("genre"),
            (F.lit(1.0) / F.size("genres")).alias("weight"),
        )
        .groupBy("user_id", "genre")
        .agg(F.round(F.sum("weight"), RANKING_DIGITS).alias("score"))
    )
    total = F.sum("score").over(Window.partitionBy("user_id"))
    return weighted.withColumn("share", F.col("score") / total).join(sizes, "user_id")


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


def style_shares(collections: DataFrame, releases: DataFrame) -> DataFrame:
    """user_id, style, share: a release with n styles counts 1/n to each."""
    owned = collections.join(releases.select("release_id", "styles"), "release_id")
    weighted = (
        owned.filter(F.size("styles") > 0)
        .select(
            "user_id",
            F.explode("styles").alias("style"),
            (F.lit(1.0) / F.size("styles")).alias("weight"),
        )
        .groupBy("user_id", "style")
        .agg(F.sum("weight").alias("weight"))
    )
    return weighted.withColumn(
        "share", F.col("weight") / F.sum("weight").over(Window.partitionBy("user_id"))
    ).drop("weight")


# -- friends -------------------------------------------------------------------------------------


def taste_vectors(scores: DataFrame, styles: DataFrame) -> DataFrame:
    """user_id, vector (map feature -> weight, unit length), genre_shares (map genre -> share).

    Features are the user's genre shares and style shares (``g:``/``s:`` prefixed), equally
    weighted, so two collectors match on their genres *and* their styles."""
    features = scores.select(
        "user_id", F.concat(F.lit("g:"), "genre").alias("feature"), F.col("share").alias("weight")
    ).unionByName(
        styles.select(
            "user_id",
            F.concat(F.lit("s:"), "style").alias("feature"),
            F.col("share").alias("weight"),
        )
    )
    norm = F.sqrt(F.sum(F.col("weight") * F.col("weight")).over(Window.partitionBy("user_id")))
    vectors = (
        features.withColumn("weight", F.col("weight") / norm)
        .groupBy("user_id")
        .agg(F.map_from_entries(F.collect_list(F.struct("feature", "weight"))).alias("vector"))
    )
    genre_maps = scores.groupBy("user_id").agg(
        F.map_from_entries(F.collect_list(F.struct("genre", "share"))).alias("genre_shares")
    )
    return vectors.join(genre_maps, "user_id")


def _blocks(scores: DataFrame, styles: DataFrame, vectors: DataFrame) -> DataFrame:
    """block, user_id, signature: each user is in the blocks of their top genre, their top two
    styles, and one global block; the signature (a random projection of the taste vector)
    orders each block so that similar tastes sit close together."""
    top_genre = (
        scores.withColumn(
            "r",
            F.row_number().over(Window.partitionBy("user_id").orderBy(F.desc("score"), "genre")),
        )
        .filter("r = 1")
        .select("user_id", F.concat(F.lit("g:"), "genre").alias("block"))
    )
    top_styles = (
        styles.withColumn(
            "r",
            F.row_number().over(Window.partitionBy("user_id").orderBy(F.desc("share"), "style")),
        )
        .filter("r <= 2")
        .select("user_id", F.concat(F.lit("s:"), "style").alias("block"))
    )
    everyone = vectors.select("user_id", F.lit("*").alias("block"))
    # hash(feature) mod 1000 / 1000 - 0.5: a fixed pseudo-random direction, same on every run.
    signature = F.aggregate(
        F.map_entries("vector"),
        F.lit(0.0),
        lambda acc, e: acc + e["value"] * ((F.abs(F.hash(e["key"])) % 1000) / 1000.0 - 0.5),
    )
    signed = vectors.select("user_id", signature.alias("signature"))
    return top_genre.unionByName(top_styles).unionByName(everyone).join(signed, "user_id")


def _cosine(left: str, right: str) -> Column:
    return F.aggregate(
        F.map_entries(F.col(left)),
        F.lit(0.0),
        lambda acc, e: (
            acc + e["value"] * F.coalesce(F.try_element_at(F.col(right), e["key"]), F.lit(0.0))
        ),
    )


def candidate_friends(
    scores: DataFrame, styles: DataFrame, vectors: DataFrame, window: int = FRIEND_WINDOW
) -> DataFrame:
    """user_id, friend_id, similarity for candidate pairs (both directions), found without
    comparing all pairs: within each block, each user is compared with the ``window`` users
    that follow them in signature order (an equi-join on block and position)."""
    blocks = _blocks(scores, styles, vectors).withColumn(
        "pos", F.row_number().over(Window.partitionBy("block").orderBy("signature", "user_id"))
    )
    ahead = blocks.select(
        "block",
        "user_id",
        F.explode(F.sequence(F.col("pos") + 1, F.col("pos") + window)).alias("pos"),
    )
    pairs = (
        ahead.alias("a")
        .join(blocks.alias("b"), ["block", "pos"])
        .select(
            F.least("a.user_id", "b.user_id").alias("u"),
            F.greatest("a.user_id", "b.user_id").alias("v"),
        )
        .filter("u != v")
        .distinct()
    )
    scored = (
        pairs.join(vectors.select(F.col("user_id").alias("u"), F.col("vector").alias("vu")), "u")
        .join(vectors.select(F.col("user_id").alias("v"), F.col("vector").alias("vv")), "v")
        .select("u", "v", F.round(_cosine("vu", "vv"), RANKING_DIGITS).alias("similarity"))
    )
    return scored.select(
        F.col("u").alias("user_id"), F.col("v").alias("friend_id"), "similarity"
    ).unionByName(
        scored.select(F.col("v").alias("user_id"), F.col("u").alias("friend_id"), "similarity")
    )


def best_friends(candidates: DataFrame, vectors: DataFrame, kept: int = FRIENDS_KEPT) -> DataFrame:
    """user_id, friend_id, similarity, rank (1 = the recommended friend), shared_genres, reason.
    Never the user themselves."""
    ranked = (
        candidates.filter("user_id != friend_id")
        .withColumn(
            "rank",
            F.row_number().over(
                Window.partitionBy("user_id").orderBy(F.desc("similarity"), "friend_id")
            ),
        )
        .filter(F.col("rank") <= kept)
    )
    genres = vectors.select("user_id", "genre_shares")
    joined = ranked.join(genres.alias("me"), "user_id").join(
        genres.select(F.col("user_id").alias("friend_id"), F.col("genre_shares").alias("theirs")),
        "friend_id",
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
    reason = (
        F.when(
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
    )


# -- releases ------------------------------------------------------------------------------------


def popularity(
    collections: DataFrame, releases: DataFrame, group: str, per_group: int = POPULAR_PER_GROUP
) -> DataFrame:
    """``group`` ("genre" or "style"), release_id, popularity: the release's share of its
    group's ownership, for the ``per_group`` most owned releases of each group."""
    column = known_genres() if group == "genre" else F.coalesce(F.col("styles"), F.array())
    counts = collections.groupBy("release_id").agg(F.count("*").alias("owners"))
    exploded = counts.join(
        releases.select("release_id", column.alias("groups")), "release_id"
    ).select("release_id", "owners", F.explode("groups").alias(group))
    ranked = exploded.withColumn(
        "r", F.row_number().over(Window.partitionBy(group).orderBy(F.desc("owners"), "release_id"))
    )
    total = F.sum("owners").over(Window.partitionBy(group))
    return (
        ranked.withColumn("popularity", F.col("owners") / total)
        .filter(F.col("r") <= per_group)
        .select(group, "release_id", "popularity")
    )


def recommend_releases(
    collections: DataFrame,
    wantlists: DataFrame,
    releases: DataFrame,
    scores: DataFrame,
    styles: DataFrame,
    friends: DataFrame,
    kept: int = RELEASES_KEPT,
) -> DataFrame:
    """user_id, rank, release_id, score, reason: releases the user neither owns nor wants.

    A candidate's score is how popular it is within the user's own top styles and genres,
    weighted by how much of the collection each takes (the taste the collection was built
    from), plus a bonus when the recommended friend owns it. Users with no candidate left
    get the most owned releases overall they do not hold."""
    top_styles = styles.withColumn(
        "r", F.row_number().over(Window.partitionBy("user_id").orderBy(F.desc("share"), "style"))
    ).filter(F.col("r") <= TOP_STYLES)
    top_genres = scores.withColumn(
        "r", F.row_number().over(Window.partitionBy("user_id").orderBy(F.desc("share"), "genre"))
    ).filter(F.col("r") <= TOP_GENRES)
    by_style = top_styles.join(popularity(collections, releases, "style"), "style").select(
        "user_id",
        "release_id",
        (F.col("share") * F.col("popularity")).alias("weight"),
        F.col("style").alias("source"),
    )
    by_genre = top_genres.join(popularity(collections, releases, "genre"), "genre").select(
        "user_id",
        "release_id",
        (F.col("share") * F.col("popularity")).alias("weight"),
        F.col("genre").alias("source"),
    )
    taste = (
        by_style.unionByName(by_genre)
        .groupBy("user_id", "release_id")
        .agg(F.sum("weight").alias("taste"), F.max_by("source", "weight").alias("source"))
    )
    friend = friends.filter("rank = 1").select("user_id", "friend_id", "similarity")
    friend_owns = friend.join(
        collections.select(F.col("user_id").alias("friend_id"), "release_id"), "friend_id"
    ).select("user_id", "release_id", F.lit(True).alias("friend_owns"))
    held = collections.select("user_id", "release_id").unionByName(
        wantlists.select("user_id", "release_id")
    )
    candidates = (
        taste.join(friend_owns, ["user_id", "release_id"], "left")
        .join(held, ["user_id", "release_id"], "left_anti")
        .withColumn(
            "score",
            F.round(
                F.col("taste")
                * (
                    F.lit(1.0)
                    + F.when(F.col("friend_owns"), F.lit(FRIEND_BONUS)).otherwise(F.lit(0.0))
                ),
                RANKING_DIGITS,
            ),
        )
        .withColumn(
            "reason",
            F.when(
                F.col("friend_owns"),
                F.format_string("owned by your closest taste match and popular in %s", "source"),
            ).otherwise(F.format_string("popular among %s collectors like you", "source")),
        )
        .select("user_id", "release_id", "score", "reason")
    )
    users = collections.select("user_id").distinct()
    missing = users.join(candidates.select("user_id").distinct(), "user_id", "left_anti")
    global_top = (
        collections.groupBy("release_id")
        .agg(F.count("*").alias("owners"))
        .orderBy(F.desc("owners"), "release_id")
        .limit(200)
    )
    fallback = (
        missing.crossJoin(F.broadcast(global_top))
        .join(held, ["user_id", "release_id"], "left_anti")
        .select(
            "user_id",
            "release_id",
            (F.col("owners") * 1e-9).alias("score"),
            F.lit("one of the most collected records on discorecs").alias("reason"),
        )
    )
    ranked = candidates.unionByName(fallback).withColumn(
        "rank",
        F.row_number().over(Window.partitionBy("user_id").orderBy(F.desc("score"), "release_id")),
    )
    return ranked.filter(F.col("rank") <= kept).select(
        "user_id", "rank", "release_id", "score", "reason"
    )
