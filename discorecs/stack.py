"""The versions of the software discorecs runs on, in one place.

The local installer (``discorecs up``), the Spark sessions the project builds and the cluster
deployment all read these, so the laptop runs what a cluster runs. Each JVM bundle's exact
files and checksums are locked in ``discorecs/services/locks/<bundle>.lock`` (regenerate with
``python -m discorecs.services.maven lock <bundle>`` after changing a version here).
"""

from __future__ import annotations

SPARK = "4.2.0"
"""PySpark's version (the ``pyspark`` pin in requirements.txt, checked by a test). Spark's
Kafka connector must match it exactly; Maven Central serves the connector up to 4.2.0."""

SCALA = "2.13"
"""The Scala line of Spark's and Kafka's jars."""

KAFKA = "4.1.1"
"""Apache Kafka, run in KRaft mode (no ZooKeeper)."""

CASSANDRA = "5.0.6"
"""Apache Cassandra."""

JAVA = 17
"""The Java release every JVM service runs on: Cassandra 5.0 supports 11 and 17, Spark 4 and
Kafka 4 need 17 or newer."""

CASSANDRA_NEWEST_JAVA = 17
"""Cassandra 5.0 does not run on a Java newer than this."""

SPARK_KAFKA_CONNECTOR = f"org.apache.spark:spark-sql-kafka-0-10_{SCALA}:{SPARK}"
"""Spark's Kafka source (``readStream.format("kafka")``), as ``--packages`` names it."""

HADOOP = "3.5.0"
"""Hadoop's client, as PySpark ships it (``hadoop-client-api`` in its jars folder, checked by
a test). ``hadoop-aws``, Spark's ``s3a://`` filesystem, must be the same release."""

HADOOP_AWS = f"org.apache.hadoop:hadoop-aws:{HADOOP}"
"""The ``s3a://`` filesystem and what it needs (the AWS SDK's bundle), for a data root on S3."""


def shell_assignments() -> str:
    """The versions as shell assignments, for scripts that cannot import Python (the cluster
    deployment sources ``python3 discorecs/stack.py``'s output)."""
    return "\n".join(
        [
            f"SPARK_VERSION={SPARK}",
            f"SCALA_VERSION={SCALA}",
            f"KAFKA_VERSION={KAFKA}",
            f"CASSANDRA_VERSION={CASSANDRA}",
            f"JAVA_VERSION={JAVA}",
            f"HADOOP_VERSION={HADOOP}",
        ]
    )


if __name__ == "__main__":
    print(shell_assignments())
