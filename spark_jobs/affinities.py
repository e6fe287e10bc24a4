"""What collectors complete: the artists and the label-eras of their own records.

Genres and styles are one way a collection hangs together; collectors also complete an
artist's records and a label's catalog of an era. Each release belongs to the affinity
groups

- ``a:<artist>``: its first credited artist (never "Various" and the like), and
- ``l:<label> (<decade>s)``: each of its labels in the decade of its year (none without one),

and a user's affinity to a group is the share of their collection in it, like a style's
share. Only groups holding ``MIN_RECORDS`` or more of a user's records count (one record
by an artist is not yet a pattern), at most ``TOP_AFFINITIES`` of each kind per user.
:func:`spark_jobs.transforms.recommend_releases` treats them as taste groups: a candidate
is a popular release of the group, weighted by the user's share.
"""

from __future__ import annotations

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

from discorecs.users.scenes import UNKNOWN_ARTISTS

ARTIST, LABEL_ERA = "a:", "l:"
MIN_RECORDS = 2
TOP_AFFINITIES = 2
AFFINITY_COLUMNS = ("release_id", "artists", "labels", "year")
"""What :func:`release_affinities` reads of the catalog."""


def release_affinities(releases: DataFrame) -> DataFrame:
    """release_id, group: each release's artist and label-era groups."""
    first = F.element_at(F.col("artists"), 1)
    known = first.isNotNull() & ~F.lower(first).isin(*sorted(UNKNOWN_ARTISTS))
    by_artist = releases.filter(known).select(
        "release_id", F.concat(F.lit(ARTIST), first).alias("group")
    )
    decade = (F.col("year") / 10).cast("int") * 10
    by_label = (
        releases.filter(F.col("year") > 0)
        .select("release_id", decade.alias("decade"), F.explode("labels").alias("label"))
        .select(
            "release_id",
            F.format_string("%s%s (%ds)", F.lit(LABEL_ERA), "label", "decade").alias("group"),
        )
    )
    return by_artist.unionByName(by_label).distinct()


def user_affinities(collections: DataFrame, affinities: DataFrame) -> DataFrame:
    """user_id, affinity: list of (group, share), the user's strongest artist groups then
    label-era groups (share descending, ties by name)."""
    sizes = collections.groupBy("user_id").agg(F.count("*").alias("size"))
    counts = (
        collections.select("user_id", "release_id")
        .join(affinities, "release_id")
        .groupBy("user_id", "group")
        .agg(F.count("*").alias("records"))
        .filter(F.col("records") >= MIN_RECORDS)
        .join(sizes, "user_id")
        .withColumn("share", F.col("records") / F.col("size"))
        .withColumn("kind", F.substring("group", 1, 2))
    )
    order = Window.partitionBy("user_id", "kind").orderBy(F.desc("share"), "group")
    strongest = counts.withColumn("r", F.row_number().over(order)).filter(
        F.col("r") <= TOP_AFFINITIES
    )
    return strongest.groupBy("user_id").agg(
        F.transform(
            F.sort_array(F.collect_list(F.struct(F.col("kind"), F.col("r"), "group", "share"))),
            lambda entry: F.struct(entry["group"].alias("group"), entry["share"].alias("share")),
        ).alias("affinity")
    )


def popular_in_groups(
    collections: DataFrame, affinities: DataFrame, groups: DataFrame, depth: int
) -> DataFrame:
    """group, release_id, popularity: the ``depth`` most owned releases of each of ``groups``
    (a frame with a ``group`` column) and their share of the group's ownership."""
    owners = collections.groupBy("release_id").agg(F.count("*").alias("owners"))
    wanted = affinities.join(F.broadcast(groups.select("group").distinct()), "group")
    rows = wanted.join(owners, "release_id")
    order = Window.partitionBy("group").orderBy(F.desc("owners"), "release_id")
    total = F.sum("owners").over(Window.partitionBy("group"))
    return (
        rows.withColumn("r", F.row_number().over(order))
        .withColumn("popularity", F.col("owners") / total)
        .filter(F.col("r") <= depth)
        .select("group", "release_id", "popularity", "r")
    )


def explain(source: Column) -> Column:
    """Why an affinity group's release is recommended (null for a genre or style group)."""
    name = F.substring(source, 3, 1_000_000)
    return F.when(
        source.startswith(ARTIST), F.format_string("more by %s, whose records you keep", name)
    ).when(
        source.startswith(LABEL_ERA), F.format_string("from %s, a label and era you collect", name)
    )
