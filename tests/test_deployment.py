"""The Pegasus deployment scripts: shellcheck-clean, and what they would run (--dry-run)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

from discorecs import stack
from discorecs.settings import load_settings

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deployment" / "deploy.sh"
SHELL_SCRIPTS = sorted(
    [
        *ROOT.glob("deployment/*.sh"),
        *ROOT.glob("deployment/node/*.sh"),
        ROOT / "deployment" / "clusters.env",
        *ROOT.glob("kafka_cluster_scripts/*.sh"),
        ROOT / "tests" / "rehearsal" / "peg",
    ]
)


def deploy(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    """deploy.sh with no AWS credentials and no `peg` on PATH: nothing real can run."""
    environment = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(tmp_path),
        "DISCORECS_DEPLOY_BUILD": str(tmp_path / "build"),
        **env,
    }
    return subprocess.run(
        ["bash", str(DEPLOY), *args], capture_output=True, text=True, env=environment, timeout=60
    )


def test_every_shell_script_passes_shellcheck():
    shellcheck = shutil.which("shellcheck")
    assert shellcheck, "shellcheck is missing: `make test` installs it (apt-get install shellcheck)"
    result = subprocess.run(
        [shellcheck, "-x", *map(str, SHELL_SCRIPTS)], capture_output=True, text=True, cwd=ROOT
    )
    assert result.returncode == 0, result.stdout


def test_a_dry_run_prints_every_step_and_runs_nothing(tmp_path):
    result = deploy(tmp_path, "--dry-run", "all", "nightly", "down")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    for template in ("kafka", "spark-master", "spark-workers", "cassandra"):
        assert f"+ peg up {tmp_path}/build/templates/{template}.yml" in out
    cassandra = (tmp_path / "build" / "templates" / "cassandra.yml").read_text()
    assert "num_instances: 5" in cassandra and "vol_type: gp2" in cassandra
    fields = [line for line in cassandra.splitlines() if not line.startswith("#")]
    assert "tag_name: discorecs-cassandra" in fields and not any("${" in f for f in fields)
    # Scripts travel on standard input, never as words Pegasus would re-split.
    assert out.count("+ peg sshcmd-node discorecs-kafka 1 sudo bash -s <<'NODE'") == 2
    assert "process.roles=broker,controller" in out  # KRaft, no ZooKeeper
    assert "controller.quorum.voters=1@10.0.1.11:9093,2@10.0.1.12:9093,3@10.0.1.13:9093" in out
    assert "endpoint_snitch: GossipingPropertyFileSnitch" in out
    assert "ExecStart=/usr/bin/java @/etc/discorecs/kafka/jvm.args" in out  # real unit files
    assert "DISCORECS_CASSANDRA_REPLICATION=NetworkTopologyStrategy:dc1=3" in out
    assert "DISCORECS_SPARK_CORES_MAX=8" in out  # the stream leaves cores to the batch
    assert "create-topics" in out and "TOPIC_PARTITIONS=24" in out and "ingest-dump" in out
    assert "generate-users" in out
    assert "OnCalendar=*-*-* 03:00:00 UTC" in out
    assert "systemctl start discorecs-nightly.service" in out
    assert "+ printf 'y\\n' | peg down discorecs-cassandra" in out
    assert "archive.apache.org" not in out  # jars come from the locks, by Maven's layout
    assert not (tmp_path / ".pegasus").exists() and not (tmp_path / ".discorecs").exists()


def test_the_versions_come_from_the_stack_module(tmp_path):
    out = deploy(tmp_path, "--dry-run", "preflight").stdout
    assert (
        f"Kafka {stack.KAFKA}, Cassandra {stack.CASSANDRA}, Spark {stack.SPARK}, Java {stack.JAVA}"
        in out
    )
    env = (ROOT / "deployment" / "clusters.env").read_text()
    assert "VERSION" not in env


def test_the_settings_shipped_to_the_nodes_are_valid_discorecs_settings(tmp_path):
    out = deploy(tmp_path, "--dry-run", "spark").stdout
    block = re.search(
        r"cat > '/etc/discorecs/discorecs.env' <<'DISCORECS_FILE_END'\n(.*?)\nDISCORECS_FILE_END",
        out,
        re.S,
    ).group(1)
    values = dict(line.split("=", 1) for line in block.splitlines() if line)
    values.pop("PYSPARK_PYTHON")
    settings = load_settings(values)
    assert settings.cassandra_replication.as_setting() == "NetworkTopologyStrategy:dc1=3"
    assert len(settings.kafka_bootstrap_servers) == 3
    assert settings.maven_repository == "https://repo1.maven.org/maven2"


def test_cluster_sizes_come_from_the_environment(tmp_path):
    out = deploy(tmp_path, "--dry-run", "kafka", KAFKA_NODES="5", TOPIC_PARTITIONS="48").stdout
    voters = re.search(r"controller.quorum.voters=(\S+)", out).group(1)
    assert len(voters.split(",")) == 5
    assert out.count("peg sshcmd-node discorecs-kafka") == 10 and "num.partitions=48" in out


def test_a_real_run_without_aws_settings_stops_before_anything(tmp_path):
    result = deploy(tmp_path, "all")
    assert result.returncode != 0
    for problem in (
        "Pegasus' peg is not on PATH",
        "set AWS_DEFAULT_REGION",
        "set SUBNET_ID",
        "set KAFKA_SECURITY_GROUP_ID",
        "set DATA_ROOT",
        "ssh-agent holds no key",
    ):
        assert problem in result.stderr
    assert not (tmp_path / "build").exists()


def test_an_unknown_step_is_refused(tmp_path):
    result = deploy(tmp_path, "--dry-run", "launch")
    assert result.returncode != 0 and "unknown step 'launch'" in result.stderr
