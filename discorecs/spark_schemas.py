"""Spark schemas of the master dataset, shared by the stream (writer) and the batch (reader).

The catalog and the generated users are written by Arrow with the schemas in
``discorecs.catalog.schema`` and ``discorecs.users.generate``; Spark reads those as written.
"""

from pyspark.sql.types import (
    LongType,
    StringType,
    StructField,
    StructType,
    TimestampType,
)

EVENT_LOG_SCHEMA = StructType(
    [
        StructField("event_id", StringType(), False),
        StructField("user_id", LongType(), False),
        StructField("release_id", LongType(), False),
        StructField("kind", StringType(), False),
        StructField("event_time", TimestampType(), False),
        # When the stream wrote the event: monotonic in the order the log grows, so "events since
        # the last snapshot" is exact even for events whose event_time is late.
        StructField("ingested_at", TimestampType(), False),
    ]
)
"""The stream's event log under ``<data_root>/events/``, partitioned by ``ingest_date``."""

EVENT_LOG_PARTITION = "ingest_date"
EVENT_LOG_BATCH = "batch"
"""Each micro-batch writes ``ingest_date=D/batch=N/``: a replayed batch overwrites its own
folder, so the log never holds an event twice."""
