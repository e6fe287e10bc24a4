"""The speed layer: Kafka -> Spark Structured Streaming -> Cassandra and the event log.

``job`` runs the query (source, micro-batches, restarts), ``apply`` is what each task does with
its users' events, ``store`` holds every statement sent to Cassandra, ``transform`` marks raw
records (parse, validate), ``live`` and ``live_cache`` keep the users' live profiles.
"""

from discorecs.errors import DiscorecsError


class StreamError(DiscorecsError):
    """The stream cannot start or keep running; the message says why and what to do."""
