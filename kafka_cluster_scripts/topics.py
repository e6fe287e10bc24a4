"""Create the event topics (idempotent): partitions and replication from the caller."""

from __future__ import annotations

from kafka import KafkaAdminClient
from kafka.admin import NewTopic
from kafka.errors import KafkaError, TopicAlreadyExistsError

from discorecs import topics
from discorecs.settings import Settings
from kafka_cluster_scripts.producer import ProducerError


def create_topics(settings: Settings, partitions: int = 6, replication: int = 1) -> dict[str, str]:
    """Create every event topic that does not exist; returns topic -> "created" / "exists"."""
    if partitions < 1 or replication < 1:
        raise ProducerError("partitions and replication must be at least 1")
    try:
        admin = KafkaAdminClient(
            bootstrap_servers=list(settings.kafka_bootstrap_servers),
            client_id="discorecs-topics",
            request_timeout_ms=10_000,
        )
    except KafkaError:  # kafka-python 3 raises a timeout when no broker answers
        raise ProducerError(
            f"cannot reach a Kafka broker at {','.join(settings.kafka_bootstrap_servers)}; "
            "start one with `discorecs up`"
        ) from None
    outcome = {}
    try:
        existing = set(admin.list_topics())
        for name in topics.ALL_TOPICS:
            if name in existing:
                outcome[name] = "exists"
                continue
            try:
                admin.create_topics([NewTopic(name, partitions, replication)])
                outcome[name] = "created"
            except TopicAlreadyExistsError:
                outcome[name] = "exists"
            except KafkaError as error:
                raise ProducerError(f"cannot create topic {name}: {error}") from None
    finally:
        admin.close()
    return outcome
