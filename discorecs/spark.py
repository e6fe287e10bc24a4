"""Build the Spark session every job and the stream uses.

Built at the edge of each entry point (a CLI command, a ``spark-submit``ted job, a test
fixture) and passed on; nothing keeps a global session. Under ``spark-submit`` the master and
memory given on the command line win over the settings.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping

from pyspark.sql import SparkSession

from discorecs.services.maven import S3A, SPARK_KAFKA, ensure_bundle
from discorecs.settings import Settings


def build_spark_session(
    settings: Settings, app_name: str, conf: Mapping[str, str] | None = None
) -> SparkSession:
    """A Spark session configured from ``settings`` (plus ``conf`` overrides)."""
    if settings.spark_master.startswith("local"):
        # Keep the driver, its block manager and the Python workers on loopback.
        os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    options = {
        "spark.sql.shuffle.partitions": str(settings.spark_shuffle_partitions),
        "spark.sql.adaptive.enabled": "true",
        "spark.sql.session.timeZone": "UTC",
        # Memory must be set before the JVM starts, i.e. in the builder, not afterwards.
        "spark.driver.memory": settings.spark_driver_memory,
        "spark.ui.showConsoleProgress": "false",
        "spark.sql.sources.partitionOverwriteMode": "dynamic",
        # The files of a shuffle are deleted once the driver's garbage collector finds it
        # unreferenced, and by default the driver collects only every 30 minutes: at 10M users
        # the finished steps' shuffles (~20 GB each) filled the disk before then.
        "spark.cleaner.periodicGC.interval": "2min",
        # The batch's checkpoints (materialize) that do not fit in memory go to local disk;
        # compressed (LZ4), the tastes of 1M users took 1.3 GB there instead of 2.2 GB, for
        # about a second more; at 10M users they take 16.9 GB compressed (~1.7 KB a user).
        "spark.rdd.compress": "true",
    }
    # Python workers must run the interpreter that has discorecs and its dependencies (the
    # virtualenv's). SparkContext takes it from PYSPARK_PYTHON (default: `python3` on PATH,
    # which may be another Python); on a cluster set PYSPARK_PYTHON to the nodes' interpreter.
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    if settings.spark_cores_max:
        options["spark.cores.max"] = str(settings.spark_cores_max)
    if settings.spark_executor_memory:
        options["spark.executor.memory"] = settings.spark_executor_memory
    options.update(s3a_options(settings))
    options.update(conf or {})
    builder = SparkSession.builder.appName(app_name)
    # spark-submit starts the Python driver with a gateway already configured (master, memory
    # and jars from its command line, e.g. `--packages`); only a
    # plain `python` run takes the master from settings and the connector's jars from here.
    if "PYSPARK_GATEWAY_PORT" not in os.environ:
        builder = builder.master(settings.spark_master)
        options["spark.jars"] = ",".join(
            filter(None, [options.get("spark.jars"), *spark_jars(settings)])
        )
    for key, value in options.items():
        builder = builder.config(key, value)
    return builder.getOrCreate()


def spark_jars(settings: Settings) -> list[str]:
    """The jars every session gets: Spark's Kafka connector and what it needs beyond Spark,
    and with an ``s3a://`` data root Hadoop's ``s3a`` filesystem and the AWS SDK (installed
    from Maven Central into the cache on first use, checked against their locks), so
    ``readStream.format("kafka")`` and ``s3a://`` paths work offline and on a standalone
    cluster, whose executors fetch ``spark.jars`` from the driver."""
    bundles = [SPARK_KAFKA, *([S3A] if settings.data_root.startswith("s3a://") else [])]
    return sorted(
        str(jar)
        for bundle in bundles
        for jar in ensure_bundle(
            bundle, settings.cache_dir, repository=settings.maven_repository
        ).glob("*.jar")
    )


def s3a_options(settings: Settings) -> dict[str, str]:
    """Hadoop's ``s3a`` settings for an ``s3a://`` data root: the region, and for an S3 server
    other than AWS's its endpoint, addressed path-style (as :mod:`discorecs.storage` does).
    Credentials come from the AWS default chain (environment, profile, instance role)."""
    if not settings.data_root.startswith("s3a://"):
        return {}
    options = {"spark.hadoop.fs.s3a.endpoint.region": settings.s3_region}
    if settings.s3_endpoint:
        options |= {
            "spark.hadoop.fs.s3a.endpoint": settings.s3_endpoint,
            "spark.hadoop.fs.s3a.path.style.access": "true",
            "spark.hadoop.fs.s3a.connection.ssl.enabled": str(
                settings.s3_endpoint.startswith("https://")
            ).lower(),
        }
    return options


def check_spark(settings: Settings) -> str:
    """Start a session, run one tiny job, stop it; returns the Spark version."""
    spark = build_spark_session(settings, "discorecs-check", {"spark.ui.enabled": "false"})
    try:
        if spark.range(100).selectExpr("sum(id) AS total").first()["total"] != 4950:
            raise RuntimeError("Spark returned a wrong sum of 0..99")
        return spark.version
    finally:
        spark.stop()
