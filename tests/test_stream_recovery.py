"""Exactly-once effect of the speed layer, against the real broker, Cassandra and Spark.

The same events (from the producers' own factories, plus bad payloads) are streamed three
ways, each into a keyspace and data root of its own:

- uninterrupted: one bounded run (the reference);
- killed: ``discorecs stream`` is SIGKILLed (process group: driver and JVM) in the middle of
  its micro-batches, then run again from its checkpoint until it has caught up;
- Cassandra restarted: the node the stream writes to is stopped and started again while the
  stream runs; the stream restarts itself from its checkpoint.

Every run must end with the same Cassandra state and the same master dataset: nothing lost,
nothing applied twice.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import time

import pytest
from kafka import KafkaProducer

from discorecs import topics
from discorecs.services.broker import KafkaBroker
from discorecs.services.cassandra_node import CassandraNode
from discorecs.services.jobs import StreamJob
from discorecs.users.population import write_population
from kafka_cluster_scripts.run import run_producer
from kafka_cluster_scripts.topics import create_topics
from streaming.job import run_stream
from tests.conftest import free_port
from tests.stream_checks import (
    QUIET,
    assert_same_state,
    job_log,
    state,
    streamed_rows,
    target,
    wait_for,
)

pytestmark = [pytest.mark.spark, pytest.mark.services]

BAD_PAYLOADS = [b"{broken", b'{"event_id": "x"}', b"[]"]


@pytest.fixture(scope="module")
def world(services, small_catalog, tmp_path_factory):
    """Catalog, users and a broker of its own holding a fixed set of events."""
    base = tmp_path_factory.mktemp("recovery")
    root = base / "data"
    shutil.copytree(small_catalog, root / "catalog" / "releases")
    write_population(small_catalog, root / "users", 150, seed=41, say=QUIET)
    settings = services.replace(
        data_root=str(root),
        kafka_bootstrap_servers=(f"127.0.0.1:{free_port()}",),
        kafka_controller_port=free_port(),
        home=base / "home",
    )
    broker = KafkaBroker(settings)
    broker.start()
    try:
        create_topics(settings, partitions=3)
        produced = 0
        for kind, count, seed in (("collection", 2400, 1), ("activity", 1600, 2)):
            summary = run_producer(
                kind, settings, rate=50_000, count=count, seed=seed, active_users=60, say=QUIET
            )
            assert summary.failed == 0
            produced += summary.sent
        producer = KafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers[0])
        for payload in BAD_PAYLOADS:
            producer.send(topics.COLLECTION_EVENTS, key=b"bad", value=payload)
        producer.flush()
        producer.close()
        yield settings, produced + len(BAD_PAYLOADS)
    finally:
        broker.stop()


@pytest.fixture(scope="module")
def reference(spark, world, tmp_path_factory):
    settings, produced = world
    uninterrupted = target(settings, tmp_path_factory.mktemp("reference"), "uninterrupted")
    run_stream(spark, uninterrupted, available_now=True, say=QUIET)
    found = state(uninterrupted)
    applied = len(found["event_log"]) + len(found["dead_letters"])
    assert applied == produced  # every event is either in the master dataset or a dead letter
    assert len({row[0] for row in found["event_log"]}) == len(found["event_log"])
    assert len(found["dead_letters"]) == len(BAD_PAYLOADS)
    assert found["live"]
    assert any(json.loads(profile)["latest_changes"] for _, profile, _ in found["live"])
    return found


def test_sigkill_mid_run_then_restart_equals_an_uninterrupted_run(
    world, reference, tmp_path_factory
):
    settings, produced = world
    killed = target(
        settings,
        tmp_path_factory.mktemp("killed"),
        "killed",
        stream_trigger_seconds=0.2,
        stream_max_events_per_trigger=300,
    )
    job = StreamJob(killed)
    job.start()
    try:
        wait_for(lambda: streamed_rows(killed) >= 900, 240, "three micro-batches", job)
        record = job.record()
        assert record is not None
        os.killpg(record.pid, signal.SIGKILL)  # no chance to finish the running micro-batch
        wait_for(lambda: job.record() is None, 30, "the killed stream to be gone")
        assert streamed_rows(killed) < produced, "the stream finished before it was killed"
        job.start()  # the same command: resumes from the checkpoint
        wait_for(lambda: streamed_rows(killed) >= produced, 300, "the stream to catch up", job)
    finally:
        job.stop()
    assert streamed_rows(killed) == produced
    assert_same_state(state(killed), reference)


def test_a_cassandra_restart_during_the_stream_loses_nothing(world, reference, tmp_path_factory):
    """A node of its own: stopping the session's would disturb other tests."""
    settings, produced = world
    base = tmp_path_factory.mktemp("restarted")
    node_settings = settings.replace(
        home=base / "node-home",
        cassandra_port=free_port(),
        cassandra_storage_port=free_port(),
        cassandra_max_heap="512m",
    )
    node = CassandraNode(node_settings)
    node.start()
    job = None
    try:
        restarted = target(
            node_settings,
            base,
            "restarted",
            stream_trigger_seconds=0.2,
            stream_max_events_per_trigger=300,
        )
        job = StreamJob(restarted)
        job.start()
        wait_for(lambda: streamed_rows(restarted) >= 600, 240, "two micro-batches", job)
        node.stop()
        time.sleep(5)  # the stream's writes fail meanwhile; it must restart itself
        node.start()
        wait_for(lambda: streamed_rows(restarted) >= produced, 300, "the stream to catch up", job)
        log = job.log_path.read_text(errors="replace")
        assert "restarting from the checkpoint" in log, job_log(job)
        assert streamed_rows(restarted) == produced
        assert_same_state(state(restarted), reference)
    finally:
        if job is not None:
            job.stop()
        node.stop()
