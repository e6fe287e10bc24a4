"""The AWS deployment rehearsed for real: `deployment/deploy.sh all` against six local test hosts
(network namespaces this test makes, each with its own address and folders) through a
Pegasus stand-in, then the nightly batch through its systemd unit, the site read from the
rehearsal's Cassandra, a step run again, and `deploy.sh down`.

What stands in for AWS: the hosts (made here instead of by `peg up`), Pegasus' CLI
(tests/rehearsal/peg: its argument splitting, standard input and fetch files), systemd
(tests/rehearsal/bin/systemctl runs the real unit files), the download sources (the jars the
project locks, served with Maven's layout, and a wheelhouse of requirements.txt, both from
this machine at the bridge's address) and S3 (a moto server there, holding the dump and the
data root). Everything else is what a cluster runs: the node scripts, the units, Kafka in
KRaft mode with two voters, two Cassandra nodes (both seeds) with NetworkTopologyStrategy and
RF 2, a Spark standalone master and worker, the producers, the stream and the batch.

Run by `make test-deployment` (root needed; about six minutes).
"""

from __future__ import annotations

import functools
import hashlib
import http.server
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from pathlib import Path

import pytest

from discorecs import tables
from discorecs import topics as event_topics
from discorecs.catalog.generate import write_dump
from discorecs.services import maven
from discorecs.settings import load_settings
from tests.conftest import free_port
from tests.rehearsal.hosts import RehearsalHosts, missing_tools

pytestmark = pytest.mark.rehearsal

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deployment" / "deploy.sh"
PREFIX = "rehearsal"
# (cluster, role) of each test host, in the order `peg up` hands them out.
LAYOUT = [
    ("kafka", "master"),
    ("kafka", "master"),
    ("cassandra", "master"),
    ("cassandra", "master"),
    ("spark", "master"),
    ("spark", "worker"),
]
USERS = 300
BUCKET = "discorecs-rehearsal"


def serve(folder: Path, address: str) -> tuple[str, http.server.HTTPServer]:
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer((address, 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return f"http://{address}:{server.server_address[1]}", server


def maven_layout(into: Path, cache_dir: Path) -> None:
    """A repository with Maven's layout holding every locked jar, linked from the bundles this
    machine has installed (installed first if missing): the rehearsal's Maven Central."""
    for bundle in maven.BUNDLES.values():
        folder = maven.ensure_bundle(bundle, cache_dir, say=lambda message: None)
        for jar in maven.read_lock(bundle):
            target = into.joinpath(*jar.group.split("."), jar.artifact, jar.version)
            target.mkdir(parents=True, exist_ok=True)
            link = target / jar.filename
            if not link.exists():
                link.symlink_to(folder / jar.filename)


def wheelhouse(cache_dir: Path) -> Path:
    """Wheels of requirements.txt (and what builds the project), built once per pin set:
    the rehearsal's PyPI."""
    pins = (ROOT / "requirements.txt").read_bytes()
    folder = cache_dir / f"wheelhouse-{hashlib.sha256(pins).hexdigest()[:12]}"
    if not (folder / ".complete").exists():
        subprocess.run(
            [sys.executable, "-m", "pip", "wheel", "--quiet", "--disable-pip-version-check",
             "-r", str(ROOT / "requirements.txt"), "setuptools>=77", "-w", str(folder)],
            check=True,
            timeout=1200,
        )  # fmt: skip
        (folder / ".complete").touch()
    return folder


@pytest.fixture(scope="module")
def rehearsal(tmp_path_factory):
    if os.geteuid() != 0:
        pytest.skip("the rehearsal's test hosts are network namespaces: it must run as root")
    missing = missing_tools() + [t for t in ("ssh-agent", "ssh-keygen") if not shutil.which(t)]
    if missing:
        pytest.skip(
            f"the rehearsal needs {', '.join(missing)} "
            "(apt-get install iproute2 util-linux openssh-client)"
        )
    root = tmp_path_factory.mktemp("rehearsal")
    settings = load_settings()
    jars = root / "served" / "maven"
    maven_layout(jars, settings.cache_dir)
    os.symlink(wheelhouse(settings.cache_dir), root / "served" / "wheelhouse")

    hosts = RehearsalHosts(root / "hosts", uuid.uuid4().hex[:4])
    agent = None
    servers = []
    try:
        for cluster, role in LAYOUT:
            hosts.add(f"{PREFIX}-{cluster}", role)
        artifacts, server = serve(root / "served", hosts.gateway)
        servers.append(server)
        from moto.server import ThreadedMotoServer

        s3_port = free_port()
        s3 = ThreadedMotoServer(ip_address=hosts.gateway, port=s3_port, verbose=False)
        s3.start()
        s3_endpoint = f"http://{hosts.gateway}:{s3_port}"
        servers.append(s3)
        import boto3

        client = boto3.client(
            "s3", endpoint_url=s3_endpoint, region_name="us-east-1",
            aws_access_key_id="rehearsal", aws_secret_access_key="rehearsal",
        )  # fmt: skip
        client.create_bucket(Bucket=BUCKET)
        dump = write_dump(root / "discogs_20261101_releases.xml.gz", 2000, seed=5).path
        client.upload_file(str(dump), BUCKET, f"dumps/{dump.name}")
        digest = hashlib.sha256(dump.read_bytes()).hexdigest()
        client.put_object(
            Bucket=BUCKET,
            Key="dumps/discogs_20261101_CHECKSUM.txt",
            Body=f"{digest} {dump.name}\n".encode(),
        )

        pegasus = root / "pegasus"
        pegasus.mkdir()
        (pegasus / "peg").symlink_to(ROOT / "tests" / "rehearsal" / "peg")
        (pegasus / "hosts").write_text(hosts.hosts_file())
        agent_out = subprocess.run(["ssh-agent", "-s"], capture_output=True, text=True, check=True)
        agent = dict(
            part.split("=", 1)
            for part in agent_out.stdout.replace("\n", ";").split(";")
            if part.strip().startswith(("SSH_AUTH_SOCK=", "SSH_AGENT_PID="))
        )
        key = root / "rehearsal.pem"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
        subprocess.run(["ssh-add", "-q", str(key)], env={**os.environ, **agent}, check=True)

        node_settings = "\n".join(
            [
                f"DISCORECS_S3_ENDPOINT={s3_endpoint}",
                f"AWS_ENDPOINT_URL={s3_endpoint}",
                "AWS_ACCESS_KEY_ID=rehearsal",
                "AWS_SECRET_ACCESS_KEY=rehearsal",
            ]
        )
        env = {
            "PATH": f"{pegasus}:{os.environ['PATH']}",
            "HOME": str(root / "operator"),
            "LANG": "C.UTF-8",
            **agent,
            "DISCORECS_DEPLOY_BUILD": str(root / "build"),
            "DEPLOY_STATE": str(root / "state"),
            "CLUSTER_PREFIX": PREFIX,
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_IMAGE": "ami-rehearsal",
            "KEY_NAME": "rehearsal",
            "SUBNET_ID": "subnet-rehearsal",
            "KAFKA_SECURITY_GROUP_ID": "sg-kafka",
            "SPARK_SECURITY_GROUP_ID": "sg-spark",
            "CASSANDRA_SECURITY_GROUP_ID": "sg-cassandra",
            "KAFKA_NODES": "2",
            "KAFKA_HEAP": "384m",
            "CASSANDRA_NODES": "2",
            "CASSANDRA_HEAP": "768M",
            "CASSANDRA_DC": "dc1",
            "CASSANDRA_RF": "2",
            "SPARK_WORKERS": "1",
            "SPARK_WORKER_CORES": "4",
            "SPARK_WORKER_MEMORY": "3g",
            "STREAM_CORES": "1",
            "STREAM_EXECUTOR_MEMORY": "1g",
            "NIGHTLY_EXECUTOR_MEMORY": "1500m",
            "DRIVER_MEMORY": "1g",
            "SHUFFLE_PARTITIONS": "4",
            "TOPIC_PARTITIONS": "4",
            "TOPIC_REPLICATION": "2",
            "DATA_ROOT": f"s3a://{BUCKET}/data",
            "DUMP": f"s3://{BUCKET}/dumps/{dump.name}",
            "USERS": str(USERS),
            "PRODUCER_RATE": "20",
            "ACTIVE_USERS": str(USERS),
            "MAVEN_REPOSITORY": f"{artifacts}/maven",
            "PIP_OPTIONS": (
                f"--no-index --find-links {artifacts}/wheelhouse/ --trusted-host {hosts.gateway}"
            ),
            "NODE_SETTINGS": node_settings,
            "TUNE_KERNEL": "0",  # the hosts share this machine's kernel: leave its settings
        }
        yield Rehearsal(hosts, env, pegasus)
    finally:
        for server in servers:
            if hasattr(server, "shutdown"):
                server.shutdown()
            else:
                server.stop()
        if agent:
            os.kill(int(agent["SSH_AGENT_PID"]), signal.SIGTERM)
        hosts.close()
        from moto.moto_api._internal.models import moto_api_backend

        moto_api_backend.reset()


class Rehearsal:
    def __init__(self, hosts: RehearsalHosts, env: dict[str, str], pegasus: Path) -> None:
        self.hosts = hosts
        self.env = env
        self.pegasus = pegasus

    def deploy(self, *steps: str, timeout: float = 2400) -> subprocess.CompletedProcess:
        return subprocess.run(
            ["bash", str(DEPLOY), *steps],
            env=self.env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def addresses(self, cluster: str) -> list[str]:
        return [h.address for h in self.hosts.hosts if h.cluster == f"{PREFIX}-{cluster}"]

    def host(self, cluster: str, role: str = "master"):
        return next(
            h for h in self.hosts.hosts if h.cluster == f"{PREFIX}-{cluster}" and h.role == role
        )

    def settings(self):
        return load_settings(
            {
                "DISCORECS_KAFKA_BOOTSTRAP_SERVERS": ",".join(
                    f"{a}:9092" for a in self.addresses("kafka")
                ),
                "DISCORECS_CASSANDRA_CONTACT_POINTS": ",".join(self.addresses("cassandra")),
                "DISCORECS_CASSANDRA_LOCAL_DC": "dc1",
            }
        )


def output(result: subprocess.CompletedProcess) -> str:
    return (
        f"exit {result.returncode}\n--- stdout ---\n{result.stdout[-6000:]}\n"
        f"--- stderr ---\n{result.stderr[-6000:]}"
    )


def test_deploy_all_brings_up_every_cluster_and_the_pipeline_on_the_test_hosts(rehearsal):
    result = rehearsal.deploy("all")
    assert result.returncode == 0, output(result)
    assert "sha256 verified against" in result.stderr  # the dump was checked before loading
    # Pegasus' files, as `peg fetch` writes them, masters first.
    fetched = rehearsal.pegasus / "tmp" / f"{PREFIX}-spark"
    assert (fetched / "roles").read_text().split() == ["master", "worker"]
    spark = rehearsal.addresses("spark")
    assert (fetched / "hostnames").read_text().split() == [
        f"ip-{a.replace('.', '-')}" for a in spark
    ]

    from kafka import KafkaAdminClient

    settings = rehearsal.settings()
    admin = KafkaAdminClient(
        bootstrap_servers=list(settings.kafka_bootstrap_servers), request_timeout_ms=10000
    )
    try:
        brokers = admin.describe_cluster()["brokers"]
        described = admin.describe_topics(list(event_topics.ALL_TOPICS))
    finally:
        admin.close()
    assert sorted(b["host"] for b in brokers) == sorted(rehearsal.addresses("kafka"))
    assert len(described) == len(event_topics.ALL_TOPICS)
    assert all(len(p["replica_nodes"]) == 2 for t in described for p in t["partitions"])

    from discorecs.cassandra import connect

    with connect(settings) as connection:
        keyspace = connection.session.execute(
            "SELECT replication FROM system_schema.keyspaces WHERE keyspace_name = %s",
            (settings.cassandra_keyspace,),
        ).one()
        peers = connection.session.execute("SELECT peer FROM system.peers").all()
    assert keyspace.replication["class"].endswith("NetworkTopologyStrategy")
    assert keyspace.replication["dc1"] == "2"
    assert len(peers) == 1  # two nodes in one ring

    # Each unit is enabled and running on its host, and only there.
    master = rehearsal.host("spark")
    for unit in (
        "discorecs-spark-master",
        "discorecs-producers",
        "discorecs-stream",
        "discorecs-web",
    ):
        assert master.run(f"systemctl is-active {unit}.service").stdout.strip() == "active", unit
        assert master.run(f"systemctl is-enabled {unit}.service").stdout.strip() == "enabled", unit
    assert master.run("systemctl is-enabled discorecs-nightly.timer").stdout.strip() == "enabled"
    worker = rehearsal.host("spark", "worker")
    assert (
        worker.run("systemctl is-active discorecs-spark-worker.service").stdout.strip() == "active"
    )
    assert worker.run("systemctl is-active discorecs-web.service").stdout.strip() == "inactive"
    # Services run as their own user, with the node's own folders.
    assert (
        "discorecs"
        in rehearsal.host("cassandra").run("stat -c %U /var/lib/discorecs/cassandra/data").stdout
    )
    assert not Path("/opt/discorecs/venv").exists()  # this machine's own folders are untouched


def test_the_stream_writes_and_the_nightly_batch_runs_through_its_unit(rehearsal):
    from discorecs.cassandra import connect

    settings = rehearsal.settings()
    # The load wrote collections of its own: the stream's mark is its progress table.
    deadline = time.monotonic() + 300
    with connect(settings, keyspace=settings.cassandra_keyspace) as connection:
        while True:
            rows = connection.session.execute(f"SELECT valid_rows FROM {tables.STREAM_PROGRESS}")
            applied = sum(row.valid_rows for row in rows)
            if applied > 0 or time.monotonic() > deadline:
                break
            time.sleep(5)
    assert applied > 0, "the stream applied no event within 5 minutes"

    result = rehearsal.deploy("nightly", timeout=1800)
    assert result.returncode == 0, output(result)
    with connect(settings, keyspace=settings.cassandra_keyspace) as connection:
        record = connection.session.execute(
            f"SELECT status, step_counts FROM {tables.BATCH_RUNS} WHERE scope = %s",
            (tables.BATCH_SCOPE,),
        ).one()
        run_id = connection.session.execute(
            f"SELECT run_id FROM {tables.PUBLISHED_RUNS} WHERE scope = %s",
            (tables.BATCH_SCOPE,),
        ).one()[0]
        user_id = connection.session.execute(
            f"SELECT user_id FROM {tables.RECOMMENDATIONS} WHERE run_id = %s LIMIT 1 "
            "ALLOW FILTERING",
            (run_id,),
        ).one()[0]
    assert record.status == "succeeded"
    assert record.step_counts["events_read"] > 0  # the stream's event log reached the batch

    # The site on the Spark master answers from that Cassandra, with this run's picks.
    master = rehearsal.host("spark")
    url = f"http://{master.address}:8000/api/users/{user_id}/recommendations"
    with urllib.request.urlopen(url, timeout=30) as answer:
        body = json.load(answer)
    assert str(body["run_id"]) == str(run_id) and body["releases"]
    assert body["friend"]["user"]["user_id"] != user_id


def test_a_step_runs_again_without_renumbering_and_down_terminates_everything(rehearsal):
    ids_before = (Path(rehearsal.env["DEPLOY_STATE"]) / "kafka-node-ids").read_text()
    result = rehearsal.deploy("kafka")
    assert result.returncode == 0, output(result)
    assert (Path(rehearsal.env["DEPLOY_STATE"]) / "kafka-node-ids").read_text() == ids_before

    result = rehearsal.deploy("down", timeout=300)
    assert result.returncode == 0, output(result)
    for host in rehearsal.hosts.hosts:
        assert host.pids() == [host.holder.pid], (
            f"{host.cluster} {host.address} still runs processes"
        )
    assert not (rehearsal.pegasus / "tmp" / f"{PREFIX}-kafka").exists()
