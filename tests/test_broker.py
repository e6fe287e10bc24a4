"""A Kafka round trip against the real local broker: topic, produce, group consume, commits."""

import time
import uuid

import pytest
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import NewTopic

pytestmark = pytest.mark.services


def consume(consumer: KafkaConsumer, expected: int, timeout: float = 40.0) -> list:
    received = []
    deadline = time.monotonic() + timeout
    while len(received) < expected and time.monotonic() < deadline:
        for records in consumer.poll(timeout_ms=500).values():
            received.extend(records)
    return received


def group_consumer(bootstrap: str, topic: str, group: str) -> KafkaConsumer:
    return KafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=group,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        # A short session timeout makes the group join take seconds, not ~25 s.
        session_timeout_ms=6000,
        heartbeat_interval_ms=1000,
    )


def test_produce_consume_in_a_group_and_resume_from_committed_offsets(services):
    bootstrap = services.kafka_bootstrap_servers[0]
    topic = f"roundtrip_{uuid.uuid4().hex[:8]}"
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    admin.create_topics([NewTopic(topic, num_partitions=3, replication_factor=1)])
    admin.close()

    producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
    for n in range(30):
        producer.send(topic, key=f"user-{n % 5}".encode(), value=f"event-{n}".encode())
    producer.flush()

    group = f"g-{uuid.uuid4().hex[:8]}"
    consumer = group_consumer(bootstrap, topic, group)
    first = consume(consumer, 30)
    assert sorted(r.value for r in first) == sorted(f"event-{n}".encode() for n in range(30))
    # Keyed records: each user's events sit in one partition, in the order they were sent.
    for user in range(5):
        mine = [r for r in first if r.key == f"user-{user}".encode()]
        assert len({r.partition for r in mine}) == 1
        assert [r.value for r in mine] == [f"event-{n}".encode() for n in range(user, 30, 5)]
    consumer.commit()
    partitions = [TopicPartition(topic, p) for p in range(3)]
    committed = {tp.partition: consumer.committed(tp) for tp in partitions}
    consumed_per_partition = {p: sum(1 for r in first if r.partition == p) for p in range(3)}
    assert committed == consumed_per_partition
    consumer.close()

    for n in range(30, 35):
        producer.send(topic, key=f"user-{n % 5}".encode(), value=f"event-{n}".encode())
    producer.flush()
    producer.close()

    resumed = group_consumer(bootstrap, topic, group)
    second = consume(resumed, 5)
    time.sleep(1)
    second += [r for records in resumed.poll(timeout_ms=1000).values() for r in records]
    resumed.close()
    assert sorted(r.value for r in second) == sorted(f"event-{n}".encode() for n in range(30, 35))
