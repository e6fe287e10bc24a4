"""Event factories (pure) and the producers against the real local broker."""

import itertools
import shutil
import threading
import time
from datetime import UTC, datetime

import numpy as np
import pytest
from kafka import KafkaConsumer, TopicPartition

from discorecs import topics
from discorecs.events import EventKind, parse_event
from discorecs.users.population import write_population
from discorecs.users.sampling_catalog import read_sampling_catalog
from kafka_cluster_scripts.event_factory import ActivityEvents, CollectionEvents
from kafka_cluster_scripts.producer import ProducerError, close_quietly, make_producer, produce
from kafka_cluster_scripts.run import load_user_sample, run_producer
from kafka_cluster_scripts.topics import create_topics
from tests.conftest import free_port

FIXED = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def data_root(small_catalog, tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    shutil.copytree(small_catalog, root / "catalog" / "releases")
    write_population(small_catalog, root / "users", 400, seed=3, say=lambda m: None)
    return root


@pytest.fixture(scope="module")
def index(data_root):
    return read_sampling_catalog(data_root / "catalog" / "releases")


def sample(data_root, index, count=200, seed=1):
    return load_user_sample(data_root / "users", index, count, seed)


def test_collection_events_never_remove_what_is_not_owned(data_root, index):
    users = sample(data_root, index)
    owned = {int(u): set(s) for u, s in zip(users.user_ids, users.collections, strict=True)}
    events = list(
        itertools.islice(CollectionEvents(index, users, seed=5, clock=lambda: FIXED), 20_000)
    )
    kinds = {kind: 0 for kind in EventKind}
    for event in events:
        kinds[event.kind] += 1
        mine = owned[event.user_id]
        if event.kind is EventKind.COLLECTION_ADD:
            assert event.release_id not in mine
            mine.add(event.release_id)
        else:
            assert event.kind is EventKind.COLLECTION_REMOVE
            assert event.release_id in mine
            mine.remove(event.release_id)
    # 70 % are drawn as adds; an add of a release already owned is skipped (~60 % remain).
    assert kinds[EventKind.COLLECTION_ADD] > kinds[EventKind.COLLECTION_REMOVE] > 0
    assert len({event.event_id for event in events}) == len(events)


def test_activity_events_play_owned_and_keep_wantlists_consistent(data_root, index):
    users = sample(data_root, index)
    owned = {int(u): set(s) for u, s in zip(users.user_ids, users.collections, strict=True)}
    wanted = {int(u): set(s) for u, s in zip(users.user_ids, users.wantlists, strict=True)}
    events = list(
        itertools.islice(ActivityEvents(index, users, seed=6, clock=lambda: FIXED), 20_000)
    )
    for event in events:
        if event.kind is EventKind.PLAY:
            assert event.release_id in owned[event.user_id]
        elif event.kind is EventKind.WANTLIST_ADD:
            assert event.release_id not in wanted[event.user_id] | owned[event.user_id]
            wanted[event.user_id].add(event.release_id)
        else:
            assert event.kind is EventKind.WANTLIST_REMOVE
            wanted[event.user_id].remove(event.release_id)
    assert {event.kind for event in events} == {
        EventKind.PLAY,
        EventKind.WANTLIST_ADD,
        EventKind.WANTLIST_REMOVE,
    }


def test_events_follow_the_users_taste(data_root, index):
    """Most added releases share a genre with the user's drawn preferences."""
    import pyarrow.dataset as ds

    users = sample(data_root, index)
    preferences = ds.dataset(data_root / "users" / "preferences").to_table().to_pydict()
    liked = dict(zip(preferences["user_id"], map(set, preferences["genres"]), strict=True))
    releases = (
        ds.dataset(data_root / "catalog" / "releases")
        .to_table(columns=["release_id", "genres"])
        .to_pydict()
    )
    genres_of = dict(zip(releases["release_id"], map(set, releases["genres"]), strict=True))
    adds = [
        e
        for e in itertools.islice(CollectionEvents(index, users, seed=2), 5000)
        if e.kind is EventKind.COLLECTION_ADD
    ]
    in_taste = sum(bool(genres_of[e.release_id] & liked[e.user_id]) for e in adds)
    assert in_taste / len(adds) > 0.85


def test_same_seed_same_events_and_schema_round_trip(data_root, index):
    first = list(
        itertools.islice(
            CollectionEvents(index, sample(data_root, index), 9, clock=lambda: FIXED), 500
        )
    )
    again = list(
        itertools.islice(
            CollectionEvents(index, sample(data_root, index), 9, clock=lambda: FIXED), 500
        )
    )
    assert first == again
    assert [parse_event(event.to_json()) for event in first] == first


def test_releases_missing_from_the_catalog_stop_the_producer(data_root, tmp_path):
    from discorecs.catalog.generate import write_dump
    from discorecs.catalog.ingest import build_catalog

    other = tmp_path / "other_catalog"
    build_catalog(
        write_dump(tmp_path / "other.xml", 50, seed=99).path, other, workers=1, say=lambda m: None
    )
    small = read_sampling_catalog(other)
    with pytest.raises(ProducerError, match=r"not in the catalog .* generate-users"):
        load_user_sample(data_root / "users", small, 100, 1)


def test_bad_arguments_are_refused(services, data_root):
    settings = services.replace(data_root=str(data_root))
    with pytest.raises(ProducerError, match="--rate must be positive"):
        run_producer("collection", settings, rate=-5, count=10)
    with pytest.raises(ProducerError, match="--active-users must be positive"):
        run_producer("collection", settings, rate=10, count=10, active_users=0)
    with pytest.raises(ProducerError, match="unknown producer 'sales'"):
        run_producer("sales", settings, rate=10, count=10)


def test_no_broker_is_a_clear_error(test_settings, data_root):
    nowhere = test_settings.replace(
        kafka_bootstrap_servers=(f"127.0.0.1:{free_port()}",), data_root=str(data_root)
    )
    with pytest.raises(ProducerError, match=r"cannot reach a Kafka broker at 127\.0\.0\.1"):
        run_producer("collection", nowhere, rate=100, count=10, connect_timeout=1.5)


def all_records(bootstrap: str, topic: str) -> list:
    consumer = KafkaConsumer(bootstrap_servers=bootstrap)
    try:
        partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic)]
        consumer.assign(partitions)
        consumer.seek_to_beginning()
        records = []
        started = time.monotonic()
        while time.monotonic() - started < 30:
            batch = consumer.poll(timeout_ms=1000)
            if not batch and (records or time.monotonic() - started > 3):
                break
            for chunk in batch.values():
                records.extend(chunk)
        return records
    finally:
        consumer.close()


@pytest.mark.services
def test_bounded_runs_send_exactly_the_count_asked(services, data_root):
    settings = services.replace(data_root=str(data_root))
    assert set(create_topics(settings, partitions=3)) == set(topics.ALL_TOPICS)
    assert set(create_topics(settings, partitions=3).values()) == {"exists"}
    bootstrap = settings.kafka_bootstrap_servers[0]
    before = {topic: len(all_records(bootstrap, topic)) for topic in topics.ALL_TOPICS}
    collection = run_producer(
        "collection", settings, rate=3000, count=700, seed=11, active_users=300, say=lambda m: None
    )
    activity = run_producer(
        "activity", settings, rate=3000, count=400, seed=12, active_users=300, say=lambda m: None
    )
    assert (collection.sent, collection.failed) == (700, 0)
    assert (activity.sent, activity.failed) == (400, 0)
    assert collection.latency_ms["p99"] >= collection.latency_ms["p50"] > 0
    for topic, expected, kinds in (
        (topics.COLLECTION_EVENTS, 700, {"collection_add", "collection_remove"}),
        (topics.ACTIVITY_EVENTS, 400, {"play", "wantlist_add", "wantlist_remove"}),
    ):
        records = all_records(bootstrap, topic)[before[topic] :]
        assert len(records) == expected
        events = [parse_event(record.value) for record in records]
        assert {event.kind.value for event in events} <= kinds
        assert all(
            record.key == str(event.user_id).encode()
            for record, event in zip(records, events, strict=True)
        )
        assert len({event.event_id for event in events}) == expected
        # Kafka's Java client puts a key in (murmur2(key) & 0x7fffffff) % partitions: so do
        # the producers, so every client of the topics agrees on a user's partition.
        assert all(
            record.partition == (java_murmur2(record.key) & 0x7FFFFFFF) % 3 for record in records
        )


def java_murmur2(key: bytes) -> int:
    """Kafka's murmur2 (kafka-python's implementation), checked against test vectors of
    Kafka's own Java tests (org.apache.kafka.common.utils.UtilsTest)."""
    import ctypes

    from kafka.partitioner.default import murmur2

    for text, expected in (("21", -973932308), ("foobar", -790332482), ("abc", 479470107)):
        assert ctypes.c_int32(murmur2(text.encode())).value == expected
    return murmur2(key)


@pytest.mark.services
def test_broker_going_away_mid_run_is_reported_not_hidden(services, data_root, tmp_path):
    """A broker that dies mid-run: failures are counted, nothing unacknowledged counts as sent,
    and the producer returns with its summary instead of hanging."""
    import os
    import signal

    from discorecs.services import process
    from discorecs.services.broker import KafkaBroker
    from discorecs.settings import load_settings

    own = load_settings(
        {
            "DISCORECS_HOME": str(tmp_path / "home"),
            "DISCORECS_KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{free_port()}",
            "DISCORECS_KAFKA_CONTROLLER_PORT": str(free_port()),
            "DISCORECS_DATA_ROOT": str(data_root),
        }
    )
    broker = KafkaBroker(own)
    broker.start()
    try:
        create_topics(own, partitions=1)
        index = read_sampling_catalog(data_root / "catalog" / "releases")
        factory = CollectionEvents(index, sample(data_root, index, 100), seed=4)
        messages = []
        producer = make_producer(
            own,
            say=messages.append,
            retries=1,
            request_timeout_ms=1500,
            message_timeout_ms=3000,
            reconnect_backoff_max_ms=300,
        )
        crashed = process.PidRecord.read(broker.pid_file)
        threading.Timer(1.5, os.kill, (crashed.pid, signal.SIGKILL)).start()
        started = time.monotonic()
        summary = produce(
            "collection producer",
            factory,
            producer,
            rate=400,
            duration=5,
            say=messages.append,
            flush_timeout=5,
        )
        close_quietly(producer, timeout=2)
    finally:
        broker.stop()
    assert time.monotonic() - started < 60
    assert 0 < summary.sent < 400 * 5
    assert summary.failed > 0 and summary.last_error
    assert summary.sent + summary.failed <= 400 * 5 + 1
    assert "failed" in messages[-1] and f"sent {summary.sent:,}" in messages[-1]
    assert np.isfinite(summary.latency_ms["p99"])


@pytest.mark.services
def test_ctrl_c_stops_cleanly_with_everything_sent_flushed(services, data_root, tmp_path):
    """SIGINT mid-run: the producer flushes, prints its summary, and every event it reports as
    sent is in the topic, no more and no fewer."""
    import json as json_module
    import os
    import signal
    import subprocess
    import sys

    from discorecs.services.broker import KafkaBroker
    from discorecs.settings import load_settings

    port = free_port()
    own = load_settings(
        {
            "DISCORECS_HOME": str(tmp_path / "home"),
            "DISCORECS_KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{port}",
            "DISCORECS_KAFKA_CONTROLLER_PORT": str(free_port()),
            "DISCORECS_DATA_ROOT": str(data_root),
        }
    )
    broker = KafkaBroker(own)
    broker.start()
    try:
        create_topics(own, partitions=2)
        env = {
            **os.environ,
            "DISCORECS_HOME": str(tmp_path / "home"),
            "DISCORECS_KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{port}",
            "DISCORECS_KAFKA_CONTROLLER_PORT": str(free_port()),
            "DISCORECS_DATA_ROOT": str(data_root),
        }
        producer = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "commands.cli",
                "produce",
                "collection",
                "--rate",
                "2000",
                "--duration",
                "120",
                "--seed",
                "3",
                "--active-users",
                "200",
                "--json",
            ],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        # Interrupt after a progress line ("sent N, R events/s", every 5 s), i.e. mid-run with
        # events acknowledged; the start line ("producing at R events/s") comes before any.
        deadline = time.monotonic() + 60
        while ": sent " not in (line := producer.stderr.readline()):
            assert line or producer.poll() is None, producer.stderr.read()
            assert time.monotonic() < deadline
        producer.send_signal(signal.SIGINT)
        out, err = producer.communicate(timeout=60)
        assert producer.returncode == 0, err
        summary = json_module.loads(out)
        assert summary["interrupted"] is True and summary["failed"] == 0
        assert summary["sent"] > 0
        assert len(all_records(f"127.0.0.1:{port}", topics.COLLECTION_EVENTS)) == summary["sent"]
    finally:
        broker.stop()


def test_a_users_events_never_share_an_event_time(data_root, index):
    users = sample(data_root, index, count=20)
    events = list(
        itertools.islice(CollectionEvents(index, users, seed=3, clock=lambda: FIXED), 3000)
    )
    seen: dict[int, set] = {}
    for event in events:
        assert event.event_time.microsecond % 1000 == 0  # what the JSON carries
        assert event.event_time not in seen.setdefault(event.user_id, set())
        seen[event.user_id].add(event.event_time)
    assert max(len(times) for times in seen.values()) > 1
