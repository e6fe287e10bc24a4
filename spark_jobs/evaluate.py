"""Offline evaluation: hide part of each collection, recommend from the rest, count hits.

``discorecs evaluate --holdout 0.1 --seed S`` hides a random ``holdout`` share of each
collection (at least one record, never a user's last), runs the batch transforms on what is
left, and scores the top-10 lists against the hidden records, next to baselines computed on
the same split:

- ``top genre``: the most popular releases of the user's top genre that they do not hold;
- ``friend's most owned``: the original heuristic, the recommended friend's most collected
  releases that the user does not hold;
- ``ALS``: Spark MLlib's implicit-feedback ALS (on a sample of users when there are many).

Metrics: hit rate at 1 and 10 (share of users with a hidden record in their top 1 / 10),
recall at 10 (hidden records found in the top 10 / hidden records, averaged over users),
catalog coverage (distinct releases recommended / catalog size), the share of distinct first
recommendations (distinct first picks / users with a pick: how personal the lists are) and
users covered (share of users with at least one recommendation).
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from discorecs import paths
from discorecs.affinities import CREDIT_COLUMNS
from discorecs.catalog.index import catalog_index
from discorecs.catalog.ingest import current_catalog
from discorecs.progress import say_to_stderr
from discorecs.settings import Settings
from discorecs.users import TASTE_MODELS
from discorecs.users.population import write_population
from spark_jobs import transforms as t
from spark_jobs.cocollection import sampled_holdings, similar_releases
from spark_jobs.inputs import read_inputs
from spark_jobs.nightly import friends_step, materialize
from spark_jobs.picks import SimilarReleases
from spark_jobs.releases import flat_picks, pick_lists, popularity

K = 10


def split_holdout(collections: DataFrame, share: float, seed: int) -> tuple[DataFrame, DataFrame]:
    """(train, hidden): per user with two or more records, ``round(share * n)`` records (at
    least one, at most n - 1) chosen by a seeded hash of (user, release) are hidden."""
    if not 0 < share < 1:
        raise ValueError(f"--holdout must be between 0 and 1, got {share}")
    ordered = collections.withColumn("h", F.xxhash64(F.lit(seed), "user_id", "release_id"))
    numbered = ordered.withColumn(
        "i", F.row_number().over(Window.partitionBy("user_id").orderBy("h", "release_id"))
    ).withColumn("n", F.count("*").over(Window.partitionBy("user_id")))
    hide = F.least(F.greatest(F.round(F.col("n") * share), F.lit(1)), F.col("n") - 1)
    hidden_flag = (F.col("n") >= 2) & (F.col("i") <= hide)
    columns = collections.columns
    return (
        numbered.filter(~hidden_flag).select(*columns),
        numbered.filter(hidden_flag).select("user_id", "release_id"),
    )


def score_lists(
    recommended: DataFrame, hidden: DataFrame, catalog_size: int, evaluated_users: int
) -> dict[str, float]:
    """Metrics of top-K lists (user_id, rank, release_id) against the hidden records."""
    hits = recommended.filter(F.col("rank") <= K).join(hidden, ["user_id", "release_id"])
    per_user = hits.groupBy("user_id").agg(
        F.min("rank").alias("first_hit"), F.count("*").alias("found")
    )
    hidden_counts = hidden.groupBy("user_id").agg(F.count("*").alias("hidden"))
    recall = (
        hidden_counts.join(per_user, "user_id", "left")
        .select((F.coalesce("found", F.lit(0)) / F.col("hidden")).alias("r"))
        .agg(F.avg("r"))
        .first()[0]
    )
    first = per_user.agg(
        F.sum(F.when(F.col("first_hit") == 1, 1).otherwise(0)).alias("h1"),
        F.count("*").alias("h10"),
    ).first()
    tops = recommended.filter("rank = 1")
    users_with = recommended.select("user_id").distinct().count()
    return {
        "hit_rate_at_1": (first["h1"] or 0) / evaluated_users,
        "hit_rate_at_10": (first["h10"] or 0) / evaluated_users,
        "recall_at_10": float(recall or 0.0),
        "catalog_coverage": recommended.filter(F.col("rank") <= K)
        .select("release_id")
        .distinct()
        .count()
        / catalog_size,
        "distinct_first_share": tops.select("release_id").distinct().count() / max(tops.count(), 1),
        "users_covered": users_with / evaluated_users,
    }


def _top_k_excluding(candidates: DataFrame, held: DataFrame, order: list[Any]) -> DataFrame:
    return (
        candidates.join(held, ["user_id", "release_id"], "left_anti")
        .withColumn("rank", F.row_number().over(Window.partitionBy("user_id").orderBy(*order)))
        .filter(F.col("rank") <= K)
        .select("user_id", "rank", "release_id")
    )


def baseline_top_genre(
    train: DataFrame, held: DataFrame, releases: DataFrame, scores: DataFrame
) -> DataFrame:
    top = scores.withColumn(
        "r", F.row_number().over(Window.partitionBy("user_id").orderBy(F.desc("score"), "genre"))
    ).filter("r = 1")
    popular = popularity(train, releases, "genre", per_group=200)
    candidates = top.select("user_id", "genre").join(popular, "genre")
    return _top_k_excluding(candidates, held, [F.desc("popularity"), "release_id"])


def baseline_friends_most_owned(train: DataFrame, held: DataFrame, friends: DataFrame) -> DataFrame:
    owners = train.groupBy("release_id").agg(F.count("*").alias("owners"))
    friend = friends.filter("rank = 1").select("user_id", "friend_id")
    candidates = friend.join(
        train.select(F.col("user_id").alias("friend_id"), "release_id"), "friend_id"
    ).join(owners, "release_id")
    return _top_k_excluding(candidates, held, [F.desc("owners"), "release_id"])


def baseline_item_to_item(train: DataFrame, held: DataFrame, similar: SimilarReleases) -> DataFrame:
    """Releases most similar to the user's own (summed similarity over what they own)."""
    neighbours = train.sparkSession.createDataFrame(similar.as_table())
    candidates = (
        train.select("user_id", F.col("release_id").alias("owned"))
        .join(neighbours.withColumnRenamed("release_id", "owned"), "owned")
        .groupBy("user_id", F.col("similar_id").alias("release_id"))
        .agg(F.sum("similarity").alias("score"))
    )
    return _top_k_excluding(candidates, held, [F.desc("score"), "release_id"])


ALS_GRID: tuple[dict[str, float], ...] = (
    {"rank": 32, "regParam": 0.1, "alpha": 10.0, "maxIter": 10},
    {"rank": 64, "regParam": 0.1, "alpha": 10.0, "maxIter": 10},
    {"rank": 64, "regParam": 0.01, "alpha": 10.0, "maxIter": 10},
    {"rank": 64, "regParam": 0.1, "alpha": 40.0, "maxIter": 10},
    {"rank": 64, "regParam": 0.1, "alpha": 10.0, "maxIter": 20},
    {"rank": 128, "regParam": 0.1, "alpha": 10.0, "maxIter": 10},
    {"rank": 256, "regParam": 0.1, "alpha": 10.0, "maxIter": 10},
)
"""The settings ALS is fitted with; the best (by hit rate at 10, then recall) is reported."""


def baseline_als(
    train: DataFrame, held: DataFrame, users: DataFrame, seed: int, params: dict[str, float]
) -> DataFrame:
    from pyspark.ml.recommendation import ALS

    ratings = train.select(
        F.col("user_id").cast("int").alias("user"),
        F.col("release_id").cast("int").alias("item"),
        F.lit(1.0).alias("rating"),
    )
    model = ALS(
        implicitPrefs=True,
        rank=int(params["rank"]),
        maxIter=int(params["maxIter"]),
        regParam=params["regParam"],
        alpha=params["alpha"],
        seed=seed,
        userCol="user",
        itemCol="item",
        ratingCol="rating",
        coldStartStrategy="drop",
    ).fit(ratings)
    wanted = users.select(F.col("user_id").cast("int").alias("user"))
    recs = (
        model.recommendForUserSubset(wanted, K * 8)
        .select(
            F.col("user").cast("long").alias("user_id"), F.explode("recommendations").alias("r")
        )
        .select(
            "user_id",
            F.col("r.item").cast("long").alias("release_id"),
            F.col("r.rating").alias("score"),
        )
    )
    return _top_k_excluding(recs, held, [F.desc("score"), "release_id"])


@dataclass(frozen=True)
class Evaluation:
    """How every population is evaluated: the share of each collection hidden, the seed of
    the split (and of generated populations), and how ALS is fitted."""

    holdout: float = 0.1
    seed: int = 0
    als_users: int = 20_000  # ALS is fitted for a sample of this many users at most
    als_grid: tuple[dict[str, float], ...] = ALS_GRID


def evaluate_population(
    releases: DataFrame,
    collections: DataFrame,
    wantlists: DataFrame,
    how: Evaluation,
    say: Callable[[str], None] = say_to_stderr,
) -> dict[str, Any]:
    """Hide ``how.holdout`` of each collection, recommend from the rest with discorecs and
    with every baseline, and score each top-10 list against the hidden records."""
    started = time.monotonic()
    holdout, seed, als_users, als_grid = how.holdout, how.seed, how.als_users, how.als_grid
    train, hidden = split_holdout(collections, holdout, seed)
    train, hidden = materialize(train), materialize(hidden)
    evaluated = hidden.select("user_id").distinct()
    evaluated_users = evaluated.count()
    catalog_size = releases.count()
    held = train.select("user_id", "release_id").unionByName(
        wantlists.select("user_id", "release_id")
    )
    say(f"evaluate: {evaluated_users:,} users with {hidden.count():,} hidden records")

    def scored(recommended: DataFrame) -> dict[str, float]:
        return score_lists(
            recommended.join(evaluated, "user_id"), hidden, catalog_size, evaluated_users
        )

    catalog = catalog_index(releases)
    tastes = materialize(t.user_tastes(train, wantlists, releases, catalog=catalog))
    scores = t.genre_scores(tastes)
    friends = friends_step(tastes)
    similar = similar_releases(sampled_holdings(train))
    ours = flat_picks(
        materialize(pick_lists(train, releases, tastes, friends, similar=similar, catalog=catalog))
    )
    results = {}
    for name, recommended in (
        ("discorecs", ours),
        ("top genre", baseline_top_genre(train, held, releases, scores)),
        ("friend's most owned", baseline_friends_most_owned(train, held, friends)),
        ("item-to-item", baseline_item_to_item(train, held, similar)),
    ):
        results[name] = scored(recommended)
        say(f"evaluate: {name}: hit@10 {results[name]['hit_rate_at_10']:.3f}")
    sample = evaluated
    if evaluated_users > als_users:
        sample = evaluated.orderBy(F.xxhash64(F.lit(seed), "user_id")).limit(als_users)
    sample = materialize(sample)
    sample_size = sample.count()
    sample_hidden = hidden.join(sample, "user_id")
    grid = []
    for params in als_grid:
        als = baseline_als(train, held, sample, seed, params)
        metrics = score_lists(als.join(sample, "user_id"), sample_hidden, catalog_size, sample_size)
        grid.append({"params": params, **metrics})
        say(f"evaluate: ALS {params}: hit@10 {metrics['hit_rate_at_10']:.3f}")
    best = max(grid, key=lambda row: (row["hit_rate_at_10"], row["recall_at_10"]))
    results["ALS (implicit, tuned)"] = {k: v for k, v in best.items() if k != "params"}
    if sample_size < evaluated_users:
        # The same sample for discorecs, so the ALS row has a like-for-like neighbour.
        results["discorecs (ALS sample)"] = score_lists(
            ours.join(sample, "user_id"), sample_hidden, catalog_size, sample_size
        )
    return {
        "evaluated_users": evaluated_users,
        "catalog_size": catalog_size,
        "als_users": sample_size,
        "als_best": best["params"],
        "als_grid": grid,
        "seconds": round(time.monotonic() - started, 1),
        "results": results,
    }


def evaluate(
    spark: SparkSession,
    settings: Settings,
    how: Evaluation = Evaluation(),
    *,
    users: int = 5_000,
    taste_models: tuple[str, ...] = TASTE_MODELS,
    say: Callable[[str], None] = say_to_stderr,
) -> dict[str, Any]:
    """Every taste model's population of ``users`` collectors, generated from the published
    catalog with ``how.seed`` into a scratch folder, evaluated side by side: the same
    catalog, the same split rule, the same baselines."""
    _checkpoints_in(spark, settings)
    catalog = current_catalog(settings)
    releases = materialize(
        spark.read.parquet(catalog.uri).select(
            "release_id", "title", "genres", "styles", *CREDIT_COLUMNS
        )
    )
    scratch = settings.run_dir / "evaluate"
    populations = {}
    for model in taste_models:
        folder = scratch / model
        shutil.rmtree(folder, ignore_errors=True)
        write_population(
            catalog, folder, users, seed=how.seed, taste_model=model, say=lambda message: None
        )
        collections, wantlists = (
            spark.read.parquet(str(folder / dataset)).select("user_id", "release_id")
            for dataset in (paths.INITIAL_COLLECTIONS, paths.INITIAL_WANTLISTS)
        )
        say(f"evaluate: the {model!r} population")
        populations[model] = evaluate_population(releases, collections, wantlists, how, say)
        shutil.rmtree(folder, ignore_errors=True)
    return _evaluation(how, populations)


def evaluate_published(
    spark: SparkSession,
    settings: Settings,
    how: Evaluation = Evaluation(),
    say: Callable[[str], None] = say_to_stderr,
) -> dict[str, Any]:
    """The published population as the nightly run sees it (its collections and wantlists
    with the events logged since), evaluated like a generated one."""
    _checkpoints_in(spark, settings)
    inputs = read_inputs(spark, settings)
    population = evaluate_population(
        materialize(inputs.releases),
        materialize(t.current_collections(inputs.collections, inputs.events)),
        materialize(t.current_wantlists(inputs.wantlists, inputs.events)),
        how,
        say,
    )
    return _evaluation(how, {"published": population})


def _checkpoints_in(spark: SparkSession, settings: Settings) -> None:
    """Give ALS a checkpoint folder: it cuts its factors' lineage every 10 iterations there;
    without one, a 20-iteration fit's lineage can overflow the stack of the task that
    deserializes it."""
    if spark.sparkContext.getCheckpointDir() is None:
        folder = settings.run_dir / "evaluate" / "checkpoints"
        folder.mkdir(parents=True, exist_ok=True)
        spark.sparkContext.setCheckpointDir(str(folder))


def _evaluation(how: Evaluation, populations: dict[str, Any]) -> dict[str, Any]:
    return {
        "holdout": how.holdout,
        "seed": how.seed,
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "populations": populations,
    }


def format_table(evaluation: dict[str, Any]) -> str:
    columns = (
        "hit_rate_at_1",
        "hit_rate_at_10",
        "recall_at_10",
        "catalog_coverage",
        "distinct_first_share",
        "users_covered",
    )
    header = f"{'recommender':24s}" + "".join(f"{c:>22s}" for c in columns)
    lines = []
    for name, population in evaluation["populations"].items():
        lines += [f"population: {name}", header, "-" * len(header)]
        for recommender, metrics in population["results"].items():
            lines.append(f"{recommender:24s}" + "".join(f"{metrics[c]:>22.4f}" for c in columns))
        lines.append(
            f"({population['evaluated_users']:,} users, holdout {evaluation['holdout']}, "
            f"seed {evaluation['seed']}, ALS on {population['als_users']:,} users, best of "
            f"{len(population['als_grid'])}: {population['als_best']}, "
            f"{population['seconds']:.0f} s)"
        )
        lines.append("")
    return "\n".join(lines).rstrip()


def write_evaluation(evaluation: dict[str, Any], out: Path) -> Path:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(evaluation, indent=2) + "\n")
    return out
