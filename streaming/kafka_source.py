"""A Kafka source for Structured Streaming on PySpark's Python Data Source API (kafka-python).

Spark's own Kafka connector needs Maven, which is not reachable everywhere; this source
needs only kafka-python. It keeps one offset per ``topic:partition`` in the checkpoint, so a
restarted query resumes exactly where the last committed micro-batch ended, and a replayed
micro-batch re-reads exactly the same offset range.

- end offsets come from **fetch high watermarks** (the broker's ListOffsets "latest" answer is
  not trusted: some Kafka-protocol brokers get it wrong when the last batch holds several
  records);
- **admission control**: at most ``maxEventsPerTrigger`` events per micro-batch, shared
  between partitions in proportion to their backlog;
- ``Trigger.AvailableNow`` is supported (reads what is there when the query starts, then
  stops), which the tests and bounded runs use.

- **co-partitioned read tasks**: a micro-batch's offset ranges go to at most ``readTasks``
  Spark tasks, partition p of every topic to task ``p % tasks`` (see
  :func:`co_partitioned_tasks`), so a user's events, keyed by user id, are all read by one
  task, the same batch after batch: the stream applies them where they are read, with no
  shuffle. Every task of a micro-batch also costs a Python worker round trip (and one
  master-dataset file), so a task per core, not one per Kafka partition.

Options: ``bootstrap`` (comma-separated host:port), ``topics`` (comma-separated),
``maxEventsPerTrigger`` (default 50,000), ``readTasks`` (default 0: one task per offset
range, not co-partitioned), ``readTimeoutSeconds`` (default 60).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
from pyspark.sql.datasource import DataSource, DataSourceStreamReader, InputPartition
from pyspark.sql.streaming.datasource import ReadAllAvailable, ReadLimit, ReadMaxRows

from discorecs.python_workers import task_started

try:  # 4.2+: Trigger.AvailableNow for Python sources
    from pyspark.sql.streaming.datasource import SupportsTriggerAvailableNow
except ImportError:  # pragma: no cover
    SupportsTriggerAvailableNow = object  # type: ignore[misc, assignment]

SCHEMA = (
    "topic string, kafka_partition int, kafka_offset long, key binary, value binary, "
    "timestamp timestamp"
)
NAME = "discorecs_kafka"


class KafkaSourceError(RuntimeError):
    """The source cannot read what the checkpoint says it must (e.g. the broker lost data)."""


@dataclass
class OffsetRange(InputPartition):
    topic: str
    partition: int
    start: int  # first offset to read
    end: int  # first offset not to read

    @property
    def events(self) -> int:
        return self.end - self.start


@dataclass
class ReadTask(InputPartition):
    """The offset ranges one Spark task reads (one Arrow batch each, in this order)."""

    ranges: list[OffsetRange]


def read_tasks(ranges: list[OffsetRange], tasks: int) -> list[ReadTask]:
    """``ranges`` as read tasks: partition p of every topic to task ``p % tasks``, always
    ``tasks`` of them (some may have nothing to read), so task i reads the same partitions
    batch after batch; 0: one task per range, in topic, partition order."""
    ordered = sorted(ranges, key=lambda r: (r.topic, r.partition))
    if tasks <= 0:
        return [ReadTask([r]) for r in ordered]
    return [ReadTask([r for r in ordered if r.partition % tasks == task]) for task in range(tasks)]


def co_partitioned_tasks(requested: int, *positions: dict[str, int]) -> int:
    """How many read tasks a micro-batch gets: the most, up to ``requested``, that divide the
    partition count of every topic in every one of ``positions`` (``topic:partition`` ->
    offset; a batch's start and end).

    Why: events are keyed by user id, and a keyed record goes to partition ``hash(key) % n``
    of a topic with n partitions (Kafka's partitioners), so with t tasks dividing n, task
    ``partition % t`` is ``hash(key) % t``: a user's events always reach the same task,
    however many partitions the topic has, as long as t divides each count (before and
    after partitions are added: the batch that spans the change reads both). The stream
    applies each task's users where they are read (see :mod:`streaming.job`)."""
    counts: list[int] = []
    for offsets in positions:
        partitions: dict[str, int] = {}
        for key in offsets:
            topic, partition = _split(key)
            partitions[topic] = max(partitions.get(topic, 0), partition + 1)
        counts += partitions.values()
    common = math.gcd(*counts) if counts else requested
    return max(t for t in range(1, max(1, requested) + 1) if common % t == 0)


def _key(topic: str, partition: int) -> str:
    return f"{topic}:{partition}"


def _split(key: str) -> tuple[str, int]:
    topic, _, partition = key.rpartition(":")
    return topic, int(partition)


def topic_partitions(consumer: Any, topics: list[str]) -> list[Any]:
    """Every partition of ``topics`` the broker knows (metadata refreshed once if needed)."""
    from kafka import TopicPartition

    found = []
    for topic in topics:
        partitions = consumer.partitions_for_topic(topic)
        if partitions is None:
            consumer.topics()  # refresh metadata once
            partitions = consumer.partitions_for_topic(topic) or set()
        found += [TopicPartition(topic, p) for p in sorted(partitions)]
    return found


def _consumer(bootstrap: list[str], client_id: str) -> Any:
    from kafka import KafkaConsumer

    return KafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        group_id=None,
        client_id=client_id,
        # Only ever used to learn high watermarks: a partition with nothing new should
        # answer at once, not after the broker's usual wait for data to arrive.
        fetch_max_wait_ms=10,
    )


RETRY_BACKOFF_MS = 10
"""kafka-python's ``retry_backoff_ms`` for a read task's consumer. A new consumer's first
poll finds its connection still opening and sleeps this long (default 100 ms: a tenth of a
second of every micro-batch's read stage). The planner's polls wait 10 ms at most anyway."""

MAX_POLL_RECORDS = 5000
"""Records a read task takes from its consumer per poll at most."""


def fetch_high_watermarks(
    bootstrap: list[str], topics: list[str], start: dict[str, int], client_id: str
) -> dict[str, int]:
    """End offsets (``topic:partition`` -> next offset) of every partition of ``topics``, from
    fetch responses: position each partition at its ``start`` and fetch.

    Always with a consumer of its own: a consumer that fetched before keeps the high
    watermarks of its earlier (and pipelined) fetch responses, and answers with those at once:
    the ends it reported lagged the broker's by tens of thousands of events under load, which
    held micro-batches to ~10,000 events whatever the backlog. A partition that does not
    answer within 5 s is taken to have nothing new."""
    consumer = _consumer(bootstrap, client_id)
    try:
        partitions = topic_partitions(consumer, topics)
        consumer.assign(partitions)
        for tp in partitions:
            consumer.seek(tp, start.get(_key(tp.topic, tp.partition), 0))
        marks: dict[str, int] = {}
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and len(marks) < len(partitions):
            # Short polls: a poll without records waits its whole timeout, and the answers
            # (records or not) carry the high watermarks. With 200 ms polls, planning a batch
            # for a caught-up stream took 205 ms; with these, ~20 ms.
            consumer.poll(timeout_ms=10, max_records=1, update_offsets=False)
            for tp in partitions:
                mark = consumer.highwater(tp)
                if mark is not None:
                    marks[_key(tp.topic, tp.partition)] = mark
    finally:
        consumer.close()
    for tp in partitions:
        key = _key(tp.topic, tp.partition)
        marks.setdefault(key, start.get(key, 0))
    return marks


def offset_positions(offset_json: str | None) -> dict[str, int]:
    """A source's end offset as Spark reports it, as ``{"topic:partition": next offset}``.

    Reads this source's offsets (``{"t:0": 5}``) and Spark's built-in Kafka source's
    (``{"t": {"0": 5}}``) alike."""
    if not offset_json:
        return {}
    parsed = json.loads(offset_json)
    positions: dict[str, int] = {}
    for key, value in parsed.items():
        if isinstance(value, dict):
            positions.update({_key(key, int(p)): int(o) for p, o in value.items()})
        else:
            positions[key] = int(value)
    return positions


def lag_behind(bootstrap: list[str], topics: list[str], positions: dict[str, int]) -> int:
    """Events on the broker beyond ``positions`` (``topic:partition`` -> next offset)."""
    marks = fetch_high_watermarks(bootstrap, topics, positions, "discorecs-stream-lag")
    return sum(max(0, mark - positions.get(key, 0)) for key, mark in marks.items())


class KafkaStreamReader(DataSourceStreamReader, SupportsTriggerAvailableNow):
    def __init__(self, options: dict[str, str]) -> None:
        # Spark hands options over with lower-cased keys: look them up case-insensitively.
        options = {key.lower(): value for key, value in options.items()}
        self.bootstrap = [s.strip() for s in options["bootstrap"].split(",") if s.strip()]
        self.topics = [t.strip() for t in options["topics"].split(",") if t.strip()]
        self.max_events = int(options.get("maxeventspertrigger", "50000"))
        self.tasks = int(options.get("readtasks", "0"))
        self.read_timeout = float(options.get("readtimeoutseconds", "60"))
        self._available_now: dict[str, int] | None = None

    def _high_watermarks(self, start: dict[str, int]) -> dict[str, int]:
        return fetch_high_watermarks(self.bootstrap, self.topics, start, "discorecs-stream-planner")

    def initialOffset(self) -> dict[str, int]:
        consumer = _consumer(self.bootstrap, "discorecs-stream-planner")
        try:
            partitions = topic_partitions(consumer, self.topics)
            earliest = consumer.beginning_offsets(partitions) if partitions else {}
        finally:
            consumer.close()
        return {_key(tp.topic, tp.partition): int(earliest[tp]) for tp in partitions}

    def getDefaultReadLimit(self) -> ReadLimit:
        return ReadMaxRows(self.max_events)

    def prepareForTriggerAvailableNow(self) -> None:
        self._available_now = self._high_watermarks(self.initialOffset())

    def latestOffset(self, start: dict[str, int], limit: ReadLimit) -> dict[str, int]:
        ends = self._high_watermarks(start)
        if self._available_now is not None:
            ends = {k: min(v, self._available_now.get(k, v)) for k, v in ends.items()}
        ends = {k: max(v, start.get(k, 0)) for k, v in ends.items()}
        if isinstance(limit, ReadAllAvailable) or not isinstance(limit, ReadMaxRows):
            return {**start, **ends}
        backlog = {k: ends[k] - start.get(k, 0) for k in ends}
        total = sum(backlog.values())
        if total <= limit.max_rows:
            return {**start, **ends}
        capped = {}
        for key, pending in backlog.items():
            share = pending * limit.max_rows // total
            capped[key] = start.get(key, 0) + share
        return {**start, **capped}

    def partitions(self, start: dict[str, int], end: dict[str, int]) -> list[ReadTask]:
        ranges = []
        for key, stop in sorted(end.items()):
            begin = start.get(key, 0)
            if stop > begin:
                topic, partition = _split(key)
                ranges.append(OffsetRange(topic, partition, begin, stop))
        if self.tasks <= 0:
            return read_tasks(ranges, 0)
        return read_tasks(ranges, co_partitioned_tasks(self.tasks, start, end))

    def read(self, partition: ReadTask) -> Iterator[pa.RecordBatch]:
        from kafka import KafkaConsumer

        task_started()
        consumer = KafkaConsumer(
            bootstrap_servers=self.bootstrap,
            enable_auto_commit=False,
            group_id=None,
            client_id="discorecs-stream-reader",
            max_poll_records=MAX_POLL_RECORDS,
            retry_backoff_ms=RETRY_BACKOFF_MS,
        )
        try:
            # A list, not a generator: the reader is pickled into a Python worker (see the
            # notes), and the consumer is closed before Spark takes the batches.
            return iter([self._read_range(consumer, r) for r in partition.ranges])
        finally:
            consumer.close()

    def _read_range(self, consumer: Any, partition: OffsetRange) -> pa.RecordBatch:
        """One range, its partition alone assigned. (Assigning a task's partitions together and
        pausing each once read stalls a partition: kafka-python keeps a paused partition's
        buffered fetch and does not fetch it again.)"""
        from kafka import TopicPartition

        tp = TopicPartition(partition.topic, partition.partition)
        consumer.assign([tp])
        consumer.seek(tp, partition.start)
        offsets: list[int] = []
        keys: list[bytes | None] = []
        values: list[bytes | None] = []
        timestamps: list[int] = []
        next_offset = partition.start
        last_progress = time.monotonic()
        while next_offset < partition.end:
            # No more records than the range still needs: kafka-python decodes (in Python) as
            # many as a poll may return, and a fetch brings up to 1 MB past the range's start,
            # often a whole batch's worth beyond its end: that cost ~50 ms a range.
            wanted = min(MAX_POLL_RECORDS, partition.end - next_offset)
            batch = consumer.poll(timeout_ms=500, max_records=wanted).get(tp, [])
            if not batch:
                if time.monotonic() - last_progress > self.read_timeout:
                    raise KafkaSourceError(
                        f"{partition.topic}[{partition.partition}]: offsets "
                        f"{next_offset}..{partition.end - 1} did not arrive within "
                        f"{self.read_timeout:.0f} s; the broker may have lost them (a "
                        "restarted in-memory broker): delete the checkpoint to start over"
                    )
                continue
            last_progress = time.monotonic()
            for record in batch:
                if record.offset >= partition.end:
                    break
                if record.offset >= partition.start:
                    offsets.append(record.offset)
                    keys.append(record.key)
                    values.append(record.value)
                    timestamps.append(record.timestamp)
                next_offset = record.offset + 1
        # One Arrow batch, not rows: Spark takes it as it is (no per-row conversion).
        return record_batch(partition, offsets, keys, values, timestamps)

    def commit(self, end: dict[str, int]) -> None:
        """Offsets live in Spark's checkpoint; nothing to commit to the broker."""


ARROW_SCHEMA = pa.schema(
    [
        ("topic", pa.string()),
        ("kafka_partition", pa.int32()),
        ("kafka_offset", pa.int64()),
        ("key", pa.binary()),
        ("value", pa.binary()),
        ("timestamp", pa.timestamp("us", tz="UTC")),
    ]
)
"""SCHEMA as Spark expects a Python data source's Arrow batches to be typed."""


def record_batch(
    partition: OffsetRange,
    offsets: list[int],
    keys: list[bytes | None],
    values: list[bytes | None],
    timestamps_ms: list[int],
) -> pa.RecordBatch:
    """The records read from one offset range as a batch of ``ARROW_SCHEMA``."""
    count = len(offsets)
    return pa.RecordBatch.from_arrays(
        [
            pa.array([partition.topic] * count, pa.string()),
            pa.array([partition.partition] * count, pa.int32()),
            pa.array(offsets, pa.int64()),
            pa.array(keys, pa.binary()),
            pa.array(values, pa.binary()),
            pa.array(timestamps_ms, pa.int64())
            .cast(pa.timestamp("ms", tz="UTC"))
            .cast(pa.timestamp("us", tz="UTC")),
        ],
        schema=ARROW_SCHEMA,
    )


class KafkaSource(DataSource):
    @classmethod
    def name(cls) -> str:
        return NAME

    def schema(self) -> str:
        return SCHEMA

    def streamReader(self, schema: Any) -> KafkaStreamReader:
        missing = [o for o in ("bootstrap", "topics") if not self.options.get(o)]
        if missing:
            raise ValueError(f"the {NAME} source needs option(s): {', '.join(missing)}")
        return KafkaStreamReader(dict(self.options))
