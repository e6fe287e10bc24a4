"""Create the event topics (idempotent): partitions from the caller, replication and the
copies a write needs (``min.insync.replicas``) from the settings unless the caller says."""

from __future__ import annotations

from collections import Counter

from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition
from kafka.admin import NewTopic
from kafka.errors import KafkaError, TopicAlreadyExistsError

from discorecs import topics
from discorecs.settings import Settings
from kafka_cluster_scripts.producer import ProducerError


def create_topics(
    settings: Settings, partitions: int = 6, replication: int | None = None
) -> dict[str, str]:
    """Create every event topic that does not exist; returns topic -> "created" / "exists".
    A topic is replicated ``replication`` times (default: ``kafka_replication_factor``) and
    refuses a producer's ``acks=all`` write that fewer than ``kafka_min_insync_replicas``
    copies hold, so an acknowledged event survives the loss of the others."""
    replication = replication or settings.kafka_replication_factor
    min_insync = min(settings.kafka_min_insync_replicas, replication)
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
                admin.create_topics(
                    [
                        NewTopic(
                            name,
                            partitions,
                            replication,
                            topic_configs={"min.insync.replicas": str(min_insync)},
                        )
                    ]
                )
                outcome[name] = "created"
            except TopicAlreadyExistsError:
                outcome[name] = "exists"
            except KafkaError as error:
                raise ProducerError(f"cannot create topic {name}: {error}") from None
    finally:
        admin.close()
    return outcome


def partition_leaders(settings: Settings) -> Counter[int]:
    """How many partitions of the event topics each broker (by node id) leads right now."""
    admin = KafkaAdminClient(bootstrap_servers=list(settings.kafka_bootstrap_servers))
    try:
        described = admin.describe_topics(list(topics.ALL_TOPICS))
    finally:
        admin.close()
    return Counter(p["leader_id"] for topic in described for p in topic["partitions"])


def records_in_topics(settings: Settings) -> int:
    """How many records the event topics hold (idempotent producers write no copies, so with
    nothing expired yet it is the number of events sent)."""
    consumer = KafkaConsumer(bootstrap_servers=list(settings.kafka_bootstrap_servers))
    try:
        partitions = [
            TopicPartition(topic, partition)
            for topic in topics.ALL_TOPICS
            for partition in consumer.partitions_for_topic(topic) or ()
        ]
        ends, starts = consumer.end_offsets(partitions), consumer.beginning_offsets(partitions)
        return sum(ends[p] - starts[p] for p in partitions)
    finally:
        consumer.close()
