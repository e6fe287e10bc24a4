"""How far the stream is behind the broker: events beyond a micro-batch's end offsets."""

from __future__ import annotations

import json

from kafka import KafkaConsumer, TopicPartition


def offset_positions(offset_json: str | None) -> dict[str, int]:
    """A Kafka source's end offset as Spark reports it (``{"topic": {"0": 5}}``), as
    ``{"topic:partition": next offset}``."""
    if not offset_json:
        return {}
    positions: dict[str, int] = {}
    for topic, partitions in json.loads(offset_json).items():
        positions.update({f"{topic}:{int(p)}": int(o) for p, o in partitions.items()})
    return positions


def end_offsets(bootstrap: list[str], topics: list[str]) -> dict[str, int]:
    """The next offset of every partition of ``topics`` (``topic:partition`` -> offset)."""
    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap, client_id="discorecs-stream-lag", request_timeout_ms=10_000
    )
    try:
        partitions = [
            TopicPartition(topic, partition)
            for topic in topics
            for partition in sorted(consumer.partitions_for_topic(topic) or ())
        ]
        ends = consumer.end_offsets(partitions) if partitions else {}
    finally:
        consumer.close()
    return {f"{tp.topic}:{tp.partition}": offset for tp, offset in ends.items()}


def lag_behind(bootstrap: list[str], topics: list[str], positions: dict[str, int]) -> int:
    """Events on the broker beyond ``positions`` (``topic:partition`` -> next offset)."""
    ends = end_offsets(bootstrap, topics)
    return sum(max(0, end - positions.get(key, 0)) for key, end in ends.items())
