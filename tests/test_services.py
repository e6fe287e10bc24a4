"""Local service management: starts, refuses, reports and stops only what it should."""

import functools
import hashlib
import http.server
import json
import os
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from discorecs import stack
from discorecs.services import install, maven, process
from discorecs.services.base import LocalService, ServiceError
from discorecs.services.manager import LocalServices
from discorecs.settings import load_settings
from tests.conftest import free_port


def isolated_settings(tmp_path: Path, **env: str):
    base = {
        "DISCORECS_HOME": str(tmp_path / "home"),
        "DISCORECS_KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{free_port()}",
        "DISCORECS_KAFKA_CONTROLLER_PORT": str(free_port()),
        "DISCORECS_CASSANDRA_PORT": str(free_port()),
        "DISCORECS_CASSANDRA_STORAGE_PORT": str(free_port()),
    }
    base.update(env)
    return load_settings(base)


class ExitsAtOnce(LocalService):
    """A service whose process dies during start, as a misconfigured server would."""

    name = "doomed"
    key = "doomed"
    start_timeout = 10

    def ports(self):
        return (self.port,)

    def install(self):
        self.port = getattr(self, "port", free_port())

    def command(self):
        self.dir.mkdir(parents=True, exist_ok=True)
        return ["sh", "-c", "echo 'FATAL: cannot open data directory'; exit 3"]

    def probe(self):
        raise ConnectionError("never answers")


def test_a_service_that_dies_during_start_reports_its_log(tmp_path):
    service = ExitsAtOnce(isolated_settings(tmp_path))
    service.port = free_port()
    with pytest.raises(ServiceError) as raised:
        service.start()
    message = str(raised.value)
    assert message.splitlines()[0].startswith("doomed exited during start")
    assert "FATAL: cannot open data directory" in message
    assert not service.pid_file.exists()


@pytest.mark.services
def test_port_taken_fails_cleanly_and_stops_what_it_started(tmp_path, services):
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]
    try:
        settings = isolated_settings(tmp_path, DISCORECS_CASSANDRA_PORT=str(port))
        manager = LocalServices(settings, say=lambda message: None)
        with pytest.raises(
            ServiceError,
            match=rf"cassandra: port {port} .* in use.*"
            "DISCORECS_CASSANDRA_PORT",
        ):
            manager.up()
        # The broker had started before Cassandra failed: it must be stopped again.
        broker_port = settings.broker_address[1]
        assert process.port_is_free(broker_port)
        assert {s.state for s in manager.status()} == {"down"}  # nothing left running
        # ... and the program holding the port was left alone.
        with socket.create_connection(("127.0.0.1", port), timeout=2):
            pass
    finally:
        taken.close()


def fake_program(folder: Path, name: str, script: str) -> Path:
    """An executable shell script standing in for a program at a boundary (mvn, java)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text("#!/bin/sh\n" + script)
    path.chmod(0o755)
    return path


def tiny_bundle(tmp_path: Path, content: bytes, locked: bytes) -> maven.Bundle:
    """A one-jar bundle whose lock pins ``locked``'s hash, and a jar holding ``content``."""
    locks = tmp_path / "locks"
    locks.mkdir()
    sha = hashlib.sha256(locked).hexdigest()
    (locks / "tiny.lock").write_text(f"# a test bundle\ncom.example:tiny:1.0 {sha}\n")
    (tmp_path / "tiny-1.0.jar").write_bytes(content)
    return maven.Bundle("tiny", "tiny service", ("com.example:tiny:1.0",))


def tiny_bundle_with_fake_maven(tmp_path, monkeypatch, mvn_script: str, content=b"x", locked=b"x"):
    """A tiny bundle whose lock is the one discorecs reads, and ``mvn`` replaced by a script
    (Maven at the boundary)."""
    bundle = tiny_bundle(tmp_path, content, locked)
    monkeypatch.setattr(maven, "LOCKS", tmp_path / "locks")
    fake_program(tmp_path / "bin", "mvn", mvn_script)
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}:{os.environ['PATH']}")
    return bundle


def test_a_jar_failing_its_checksum_is_reported_and_nothing_is_installed(tmp_path, monkeypatch):
    # Maven "downloads" the tampered jar into the output folder it is given.
    bundle = tiny_bundle_with_fake_maven(
        tmp_path,
        monkeypatch,
        f'for a in "$@"; do case "$a" in -DoutputDirectory=*) '
        f'cp {tmp_path / "tiny-1.0.jar"} "${{a#-DoutputDirectory=}}/";; esac; done\n',
        content=b"tampered",
        locked=b"the real jar",
    )
    cache = tmp_path / "cache"
    with pytest.raises(
        install.InstallError, match=r"tiny service: com\.example:tiny:1\.0 failed its checksum"
    ):
        maven.ensure_bundle(bundle, cache, say=lambda m: None)
    assert list((cache / "jvm").iterdir()) == []  # no folder, complete or not


def test_a_locked_jar_maven_did_not_deliver_is_reported(tmp_path, monkeypatch):
    bundle = tiny_bundle_with_fake_maven(tmp_path, monkeypatch, "exit 0\n")
    with pytest.raises(install.InstallError, match=r"tiny service: Maven did not deliver tiny-1.0"):
        maven.ensure_bundle(bundle, tmp_path / "cache", say=lambda m: None)


def test_maven_central_unreachable_names_the_service_and_the_fix(tmp_path, monkeypatch):
    bundle = tiny_bundle_with_fake_maven(
        tmp_path,
        monkeypatch,
        'echo "[ERROR] Failed to execute goal on project tiny: Could not transfer artifact '
        'com.example:tiny:jar:1.0 from/to central: Connection refused"\nexit 1\n',
    )
    with pytest.raises(install.InstallError) as raised:
        maven.ensure_bundle(bundle, tmp_path / "cache", say=lambda m: None)
    message = str(raised.value)
    assert message.startswith("tiny service: Maven could not fetch its jars from Maven Central")
    assert "Connection refused" in message and "run `discorecs up` again" in message


def serve_folder(folder: Path):
    """An HTTP server on 127.0.0.1 answering from ``folder`` (a repository with Maven's
    layout), run in a thread; its address, and a function that stops it."""
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{server.server_address[1]}", server.shutdown


def test_a_repository_address_installs_the_locked_jars_without_maven(tmp_path, monkeypatch):
    repository = tmp_path / "repository"
    bundle = tiny_bundle_with_fake_maven(tmp_path, monkeypatch, "exit 1\n")  # never used
    published = repository / "com" / "example" / "tiny" / "1.0"
    published.mkdir(parents=True)
    (published / "tiny-1.0.jar").write_bytes(b"x")
    address, stop = serve_folder(repository)
    try:
        folder = maven.ensure_bundle(bundle, tmp_path / "cache", lambda m: None, address)
        assert (folder / "tiny-1.0.jar").read_bytes() == b"x" and (folder / ".complete").exists()
        (published / "tiny-1.0.jar").write_bytes(b"tampered")
        with pytest.raises(
            install.InstallError, match=r"com\.example:tiny:1\.0 failed its checksum"
        ):
            maven.ensure_bundle(bundle, tmp_path / "other", lambda m: None, address)
        (published / "tiny-1.0.jar").unlink()
        with pytest.raises(
            install.InstallError, match=r"could not fetch .*/com/example/tiny/1\.0/"
        ):
            maven.ensure_bundle(bundle, tmp_path / "third", lambda m: None, address)
    finally:
        stop()


def test_the_locks_pin_the_stack_versions():
    """Each lock holds its roots at the versions discorecs.stack names, every line hashed."""
    for bundle in maven.BUNDLES.values():
        locked = {jar.coordinates: jar for jar in maven.read_lock(bundle)}
        for root in bundle.roots:
            assert root in locked, f"{bundle.lock_path} lacks {root}: regenerate it"
        assert all(len(jar.sha256) == 64 for jar in locked.values())
    assert f"org.apache.kafka:kafka_2.13:{stack.KAFKA}" in maven.KAFKA.roots
    assert f"org.apache.cassandra:cassandra-all:{stack.CASSANDRA}" in maven.CASSANDRA.roots
    requirements = (Path(__file__).parents[1] / "requirements.txt").read_text()
    assert f"pyspark=={stack.SPARK}\n" in requirements
    # hadoop-aws must be the Hadoop release PySpark's own jars are.
    import pyspark

    shipped = Path(pyspark.__file__).parent / "jars" / f"hadoop-client-api-{stack.HADOOP}.jar"
    assert shipped.exists(), f"PySpark ships another Hadoop than {stack.HADOOP}"
    assert stack.HADOOP_AWS in maven.S3A.roots


def test_java_newer_than_cassandra_runs_on_is_refused(tmp_path, monkeypatch):
    home = tmp_path / "jdk"
    fake_program(home / "bin", "java", "echo 'openjdk version \"25.0.1\" 2025-10-21' >&2\n")
    monkeypatch.setenv("JAVA_HOME", str(home))
    with pytest.raises(install.InstallError, match=r"cassandra: .* is Java 25.0.1, newer than"):
        install.find_java(newest=17, service="cassandra")
    assert install.find_java(service="kafka broker").major == 25


def test_missing_java_names_the_fix(monkeypatch):
    monkeypatch.delenv("JAVA_HOME", raising=False)
    with pytest.raises(install.InstallError, match=r"java: no Java runtime found.*apt-get install"):
        install.find_java(install_if_missing=False, search_path="/nonexistent")


def test_remote_broker_is_not_started_locally(tmp_path):
    settings = isolated_settings(tmp_path, DISCORECS_KAFKA_BOOTSTRAP_SERVERS="10.1.2.3:9092")
    with pytest.raises(ServiceError, match=r"points at 10\.1\.2\.3"):
        LocalServices(settings, say=lambda m: None).up()


@pytest.mark.services
def test_up_twice_is_harmless(services):
    manager = LocalServices(services, say=lambda message: None)
    before = manager.status()
    again = manager.up()
    assert [s.pid for s in again] == [s.pid for s in before]
    assert [s.state for s in again[:2]] == ["up", "up"]  # the site is only started by the demo
    # The versions as the servers report them (the broker's log, Cassandra's system.local).
    assert again[0].version == f"Apache Kafka {stack.KAFKA} (KRaft)"
    assert again[1].version == f"Apache Cassandra {stack.CASSANDRA}"


def test_stale_pid_file_is_ignored(tmp_path):
    settings = isolated_settings(tmp_path)
    service = ExitsAtOnce(settings)
    service.port = free_port()
    finished = subprocess.run(["true"], check=True)
    assert finished.returncode == 0
    # A pid that exists but belongs to another program (this test process): wrong start time.
    process.PidRecord(os.getpid(), 1, "x", (1,), "log").write(service.pid_file)
    assert service.record() is None
    assert not service.pid_file.exists()
    assert os.getpid()  # the test process was not signalled


def keep_something(settings) -> None:
    """A topic with 5 records and a group's committed offset 3, and a Cassandra row."""
    from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
    from kafka.admin import NewTopic
    from kafka.structs import OffsetAndMetadata

    from discorecs.cassandra import connect

    bootstrap = settings.kafka_bootstrap_servers[0]
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    admin.create_topics([NewTopic("kept", 1, 1)])
    admin.close()
    producer = KafkaProducer(bootstrap_servers=bootstrap)
    for n in range(5):
        producer.send("kept", f"record-{n}".encode())
    producer.close()
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id="keeper")
    consumer.commit({TopicPartition("kept", 0): OffsetAndMetadata(3, "", -1)})
    consumer.close()
    with connect(settings, keyspace=settings.cassandra_keyspace) as cassandra:
        cassandra.session.execute("INSERT INTO users (user_id, name) VALUES (7, 'kept')")


def what_was_kept(settings) -> tuple:
    from kafka import KafkaConsumer, TopicPartition

    from discorecs.cassandra import connect

    partition = TopicPartition("kept", 0)
    consumer = KafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap_servers[0],
        group_id="keeper",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    consumer.assign([partition])
    committed = consumer.committed(partition)
    consumer.seek_to_beginning(partition)
    records = []
    for _ in range(20):
        records += [r.value for batch in consumer.poll(500).values() for r in batch]
        if len(records) >= 5:
            break
    consumer.close()
    with connect(settings, keyspace=settings.cassandra_keyspace) as cassandra:
        row = cassandra.session.execute("SELECT name FROM users WHERE user_id = 7").one()
    return committed, records, row.name if row else None


def test_cli_cycle_up_status_down_up_keeps_data_and_leaves_nothing_running(tmp_path):
    """up, status, down; up again finds the topic, the group's offset and the row it had."""
    env = {
        **os.environ,
        "DISCORECS_HOME": str(tmp_path / "home"),
        "DISCORECS_KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{free_port()}",
        "DISCORECS_KAFKA_CONTROLLER_PORT": str(free_port()),
        "DISCORECS_CASSANDRA_PORT": str(free_port()),
        "DISCORECS_CASSANDRA_STORAGE_PORT": str(free_port()),
        "DISCORECS_CASSANDRA_MAX_HEAP": "512m",
    }
    settings = load_settings(env)
    cli = [sys.executable, "-m", "commands.cli"]

    def run(*args):
        return subprocess.run([*cli, *args], env=env, capture_output=True, text=True, timeout=240)

    try:
        up = run("up", "--skip-spark-check")
        assert up.returncode == 0, up.stderr
        assert "schema applied" in up.stderr
        keep_something(settings)
        assert run("down").returncode == 0
        again = run("up", "--skip-spark-check")
        assert again.returncode == 0, again.stderr
        assert what_was_kept(settings) == (3, [f"record-{n}".encode() for n in range(5)], "kept")
        status = run("status", "--json")
        assert status.returncode == 0
        services = {entry["name"]: entry for entry in json.loads(status.stdout)}
        assert services["kafka broker"]["state"] == "up"
        assert services["kafka broker"]["version"] == f"Apache Kafka {stack.KAFKA} (KRaft)"
        assert services["cassandra"]["state"] == "up"
        assert services["cassandra"]["version"] == f"Apache Cassandra {stack.CASSANDRA}"
        pids = [entry["pid"] for entry in services.values()]
    finally:  # a failed assertion must not leave a broker and a Cassandra running
        down = run("down")
    assert down.returncode == 0, down.stderr
    after = run("status", "--json")
    assert after.returncode == 3
    assert {entry["name"]: entry["state"] for entry in json.loads(after.stdout)} == {
        "kafka broker": "down",
        "cassandra": "down",
        "web site": "down",
        "stream": "down",
        "collection producer": "down",
        "activity producer": "down",
    }
    for pid in pids:
        assert process.start_ticks(pid) is None, f"pid {pid} still running after down"
        assert process.group_members(pid) == [], f"children of {pid} left after down"


def test_kafka_cluster_ids_never_read_as_options():
    from discorecs.services.broker import new_cluster_id

    ids = {new_cluster_id() for _ in range(2_000)}  # ~1 in 64 random ids starts with "-"
    assert len(ids) == 2_000
    assert all(len(i) == 22 and not i.startswith("-") for i in ids)
