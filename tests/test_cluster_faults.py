"""Faults on local three-node clusters: what replication is for, against real processes.

`discorecs up --nodes 3` (here through the service manager, in a home of its own on free
ports) runs three Kafka brokers and three Cassandra 5.0 nodes on 127.0.0.1-3: topics with
three replicas needing two per write, a keyspace with three replicas, reads and writes at
LOCAL_QUORUM. Each test kills one real process with SIGKILL in the middle of its work and
compares the state the pipeline ends with against an uninterrupted run of the same events
(streamed afterwards into a keyspace and data root of its own): nothing lost, nothing doubled.

The tests of the default suite: a Cassandra node killed while the stream applies events and
the site serves; the broker leading the event partitions killed while both producers send.
Behind the ``faults`` marker (``make test-faults``): the nightly batch with a node down, and
the stream's driver killed while a node is down.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import signal
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest

from commands.cli import main
from discorecs import topics
from discorecs.cassandra import connect
from discorecs.services.base import LocalService
from discorecs.services.jobs import StreamJob
from discorecs.services.manager import LocalServices
from discorecs.services.web import WebSite
from discorecs.settings import LOCAL_NODE_HOSTS, Settings, cluster_defaults, load_settings
from discorecs.users.population import write_population
from kafka_cluster_scripts.run import run_producer
from kafka_cluster_scripts.topics import create_topics, partition_leaders, records_in_topics
from spark_jobs.nightly import run_batch
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

USERS = 150
ACTIVE_USERS = 60


@pytest.fixture(scope="module")
def cluster(test_settings, small_catalog, tmp_path_factory):
    """Three brokers and three Cassandra nodes started by `discorecs up --nodes 3` (a home of
    its own, ports free on all three addresses), a catalog and users; the event topics."""
    base = tmp_path_factory.mktemp("cluster")
    root = base / "data"
    shutil.copytree(small_catalog, root / "catalog" / "releases")
    write_population(small_catalog, root / "users", USERS, seed=43, say=QUIET)
    # The test session's settings, less what three nodes imply (so that `up --nodes 3` does).
    implied = cluster_defaults(test_settings.replace(local_nodes=3))
    environment = {
        name: value
        for name, value in test_settings.to_environment().items()
        if name.removeprefix("DISCORECS_").lower() not in _changed(test_settings, implied)
    }
    port = free_port(LOCAL_NODE_HOSTS)
    environment.update(
        {
            "DISCORECS_HOME": str(base / "home"),
            "DISCORECS_DATA_ROOT": str(root),
            "DISCORECS_KAFKA_BOOTSTRAP_SERVERS": ",".join(
                f"{host}:{port}" for host in LOCAL_NODE_HOSTS
            ),
            "DISCORECS_KAFKA_CONTROLLER_PORT": str(free_port(LOCAL_NODE_HOSTS)),
            "DISCORECS_KAFKA_MAX_HEAP": "384m",
            "DISCORECS_CASSANDRA_PORT": str(free_port(LOCAL_NODE_HOSTS)),
            "DISCORECS_CASSANDRA_STORAGE_PORT": str(free_port(LOCAL_NODE_HOSTS)),
            "DISCORECS_CASSANDRA_MAX_HEAP": "640m",
            "DISCORECS_CASSANDRA_KEYSPACE": "cluster",
        }
    )
    with pytest.MonkeyPatch.context() as patch:
        for name in [n for n in os.environ if n.startswith("DISCORECS_")]:
            patch.delenv(name)
        for name, value in environment.items():
            patch.setenv(name, value)
        assert main(["up", "--nodes", "3", "--skip-spark-check"]) == 0
        settings = load_settings()
        manager = LocalServices(settings, say=QUIET)
        try:
            assert settings.local_nodes == 3  # remembered by the home
            create_topics(settings, partitions=3)
            yield settings, manager
        finally:
            assert main(["down"]) == 0
            assert not any(service.record() for service in manager.services)


def _changed(settings: Settings, other: Settings) -> set[str]:
    return {
        f.name
        for f in dataclasses.fields(settings)
        if getattr(settings, f.name) != getattr(other, f.name)
    }


def test_up_nodes_3_runs_and_reports_every_node(cluster, capsys):
    settings, _ = cluster
    assert (settings.kafka_replication_factor, settings.kafka_min_insync_replicas) == (3, 2)
    assert settings.cassandra_replication.as_setting() == "NetworkTopologyStrategy:datacenter1=3"
    capsys.readouterr()
    assert main(["status", "--json"]) == 0
    statuses = {s["name"]: s for s in json.loads(capsys.readouterr().out)}
    for kind in ("kafka broker", "cassandra"):
        for node, host in enumerate(LOCAL_NODE_HOSTS, start=1):
            status = statuses[f"{kind} {node} ({host})"]
            assert status["state"] == "up", status
            assert status["version"].startswith(("Apache Kafka 4.", "Apache Cassandra 5.0"))
    with connect(settings, keyspace=settings.cassandra_keyspace) as connection:
        peers = connection.session.execute("SELECT peer FROM system.peers_v2").all()
        assert len(peers) == 2  # whichever node answered knows the two others
    # Every partition of the new topics gets a leader among the three (metadata spreads to
    # the brokers asynchronously after the topics are created).
    wait_for(
        lambda: sum(partition_leaders(settings).values()) == 3 * len(topics.ALL_TOPICS),
        60,
        "a leader for every partition",
    )
    assert partition_leaders(settings).keys() <= {1, 2, 3}


def produce(settings: Settings, counts: dict[str, int], seed: int, rate: float) -> dict:
    """Both producers at once, each sending its count at ``rate`` events/s; their summaries."""
    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = {
            kind: pool.submit(
                run_producer,
                kind,
                settings,
                rate=rate,
                count=count,
                seed=seed + n,
                active_users=ACTIVE_USERS,
                say=QUIET,
            )
            for n, (kind, count) in enumerate(counts.items())
        }
        return {kind: future.result() for kind, future in futures.items()}


def events_and_stream_target(
    settings: Settings, base, name: str, counts: dict[str, int], seed: int
) -> tuple[int, Settings]:
    """Send ``counts`` events first; the events the topics now hold, and a keyspace and data
    root of its own for a stream that takes them 200 at a time, every 0.2 s (many small
    micro-batches, so a fault lands in the middle of them)."""
    summaries = produce(settings, counts, seed=seed, rate=50_000)
    assert all(s.failed == 0 for s in summaries.values()), summaries
    faulty = target(
        settings, base, name, stream_trigger_seconds=0.2, stream_max_events_per_trigger=200
    )
    return records_in_topics(settings), faulty


def sigkill(service: LocalService) -> None:
    """Kill the service's whole process group at once, as a crashed machine would."""
    record = service.record()
    assert record is not None, f"{service.name} is not running"
    os.killpg(record.pid, signal.SIGKILL)
    wait_for(lambda: service.record() is None, 30, f"{service.name} to be gone")


def reference_state(spark, settings: Settings, base, name: str) -> dict:
    """What an uninterrupted run of everything in the topics leaves."""
    uninterrupted = target(settings, base, f"{name}_reference")
    run_stream(spark, uninterrupted, available_now=True, say=QUIET)
    return state(uninterrupted)


def at_all(settings: Settings) -> Settings:
    return settings.replace(cassandra_read_consistency="ALL")


def hints_delivered(manager: LocalServices) -> bool:
    """No node holds hints any more: what the others kept for a node that was down reached it."""
    return not any(
        any(node.dir.joinpath("hints").glob("*.hints")) for node in manager.cassandra_nodes
    )


class SiteWatch:
    """Requests users' pages from the site without pause until stopped; counts the answers."""

    def __init__(self, port: int, user_ids: list[int]) -> None:
        self.port, self.user_ids = port, user_ids
        self.answers: Counter = Counter()
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> SiteWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._stop.set()
        self._thread.join(30)

    def _run(self) -> None:
        n = 0
        while not self._stop.is_set():
            user_id = self.user_ids[n % len(self.user_ids)]
            n += 1
            url = f"http://127.0.0.1:{self.port}/api/users/{user_id}"
            try:
                with urllib.request.urlopen(url, timeout=30) as response:
                    self.answers[response.status] += 1
            except urllib.error.HTTPError as error:
                self.answers[error.code] += 1
                self.failures.append(f"{url}: {error.code} {error.read()[:200]!r}")
            except OSError as error:
                self.answers["no answer"] += 1
                self.failures.append(f"{url}: {error}")
            time.sleep(0.02)


def test_a_cassandra_node_killed_while_the_stream_applies_and_the_site_serves(
    spark, cluster, tmp_path_factory
):
    settings, manager = cluster
    base = tmp_path_factory.mktemp("node-killed")
    total, faulty = events_and_stream_target(
        settings, base, "node_killed", {"collection": 1500, "activity": 1000}, seed=11
    )
    faulty = faulty.replace(web_port=free_port())
    node = manager.cassandra_nodes[2]
    site, job = WebSite(faulty), StreamJob(faulty)
    site.start()
    job.start()
    try:
        with SiteWatch(faulty.web_port, list(range(1, USERS + 1))) as watch:
            wait_for(lambda: streamed_rows(faulty) >= 600, 240, "three micro-batches", job)
            sigkill(node)
            streamed_when_killed = streamed_rows(faulty)
            wait_for(lambda: streamed_rows(faulty) >= total, 300, "the stream to finish", job)
            assert streamed_when_killed < total, "the stream finished before the node was killed"
            node.start()  # the same data folder: it rejoins the ring
            wait_for(lambda: hints_delivered(manager), 120, "the hints to reach the node")
        assert watch.answers[200] > 50, watch.answers
        site_log = site.log_path.read_text(errors="replace").splitlines()
        causes = [line for line in site_log if "serving unavailable" in line]
        assert not watch.failures, (watch.failures[:5], causes[:5])
        log = job_log(job)
        assert "restarting from the checkpoint" not in log, log
    finally:
        job.stop()
        site.stop()
        if node.record() is None:
            node.start()
    assert streamed_rows(faulty) == total
    reference = reference_state(spark, settings, base, "node_killed")
    assert_same_state(state(at_all(faulty)), reference)


def test_the_leading_broker_killed_while_both_producers_send(spark, cluster, tmp_path_factory):
    settings, manager = cluster
    base = tmp_path_factory.mktemp("broker-killed")
    before = records_in_topics(settings)
    faulty = target(
        settings,
        base,
        "broker_killed",
        stream_trigger_seconds=0.2,
        stream_max_events_per_trigger=300,
    )
    job = StreamJob(faulty)
    job.start()
    leader_id, _ = partition_leaders(settings).most_common(1)[0]
    broker = manager.brokers[leader_id - 1]
    counts = {"collection": 2000, "activity": 1500}
    try:
        with ThreadPoolExecutor(max_workers=1) as pool:
            sending = pool.submit(produce, settings, counts, 21, 350.0)
            time.sleep(2.0)
            sigkill(broker)
            summaries = sending.result(timeout=300)
        for kind, summary in summaries.items():
            assert (summary.sent, summary.failed) == (counts[kind], 0), summary
        assert leader_id not in partition_leaders(settings)  # the others took over its partitions
        total = records_in_topics(settings)
        assert total == before + sum(counts.values())  # every send stored once
        wait_for(lambda: streamed_rows(faulty) >= total, 300, "the stream to catch up", job)
    finally:
        job.stop()
        if broker.record() is None:
            broker.start()
    assert streamed_rows(faulty) == total
    reference = reference_state(spark, settings, base, "broker_killed")
    assert_same_state(state(at_all(faulty)), reference)


@pytest.mark.faults
def test_the_nightly_batch_with_a_cassandra_node_down_publishes(spark, cluster, tmp_path_factory):
    settings, manager = cluster
    batch_settings = target(settings, tmp_path_factory.mktemp("batch"), "batch_node_down")
    node = manager.cassandra_nodes[1]
    sigkill(node)
    try:
        report = run_batch(spark, batch_settings, say=QUIET)
    finally:
        node.start()
    assert report.status == "succeeded"
    with_all = at_all(batch_settings)
    from webapp.repository import CassandraRepository

    repository = CassandraRepository(with_all)
    try:
        assert repository.published_run() == report.run_id
    finally:
        repository.close()


@pytest.mark.faults
def test_the_stream_killed_while_a_cassandra_node_is_down_recovers_exactly(
    spark, cluster, tmp_path_factory
):
    settings, manager = cluster
    base = tmp_path_factory.mktemp("driver-killed")
    total, faulty = events_and_stream_target(
        settings, base, "driver_killed", {"collection": 1200, "activity": 800}, seed=31
    )
    node = manager.cassandra_nodes[0]
    job = StreamJob(faulty)
    sigkill(node)
    try:
        job.start()
        wait_for(lambda: streamed_rows(faulty) >= 400, 240, "two micro-batches", job)
        sigkill(job)
        assert streamed_rows(faulty) < total, "the stream finished before it was killed"
        job.start()  # the same command: resumes from its checkpoint
        wait_for(lambda: streamed_rows(faulty) >= total, 300, "the stream to catch up", job)
    finally:
        job.stop()
        if node.record() is None:
            node.start()
    wait_for(lambda: hints_delivered(manager), 120, "the hints to reach the node")
    assert streamed_rows(faulty) == total
    reference = reference_state(spark, settings, base, "driver_killed")
    assert_same_state(state(at_all(faulty)), reference)
