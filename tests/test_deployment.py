"""The Pegasus deployment scripts: shellcheck-clean, and what they would run (--dry-run)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

from discorecs.settings import load_settings

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deployment" / "deploy.sh"
SHELL_SCRIPTS = sorted(
    [
        *ROOT.glob("deployment/*.sh"),
        ROOT / "deployment" / "clusters.env",
        *ROOT.glob("kafka_cluster_scripts/*.sh"),
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
    result = deploy(tmp_path, "--dry-run", "all", "down")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    for definition in ("kafka", "spark-master", "spark-workers", "cassandra"):
        assert f"+ peg up {tmp_path}/build/{definition}.yml" in out
    assert "num_instances: 5" in (tmp_path / "build" / "cassandra.yml").read_text()
    assert "process.roles=broker,controller" in out  # KRaft, no ZooKeeper
    assert "controller.quorum.voters=1@discorecs-kafka-1.internal:9093," in out
    assert "kafka_2.13-3.9.1.tgz" in out and "spark-4.0.1-bin-hadoop3.tgz" in out
    assert "apache-cassandra-5.0.5-bin.tar.gz" in out
    assert "endpoint_snitch: GossipingPropertyFileSnitch" in out
    assert "discorecs create-topics --partitions 24 --replication 3" in out
    assert "--packages org.apache.spark:spark-sql-kafka-0-10_2.13:4.0.1" in out
    assert "streaming/job.py" in out and "start_kafka_producers.sh both" in out
    assert "OnCalendar=*-*-* 03:00:00 UTC" in out and "spark_jobs/nightly.py" in out
    assert "+ peg down discorecs-cassandra" in out
    assert not (tmp_path / ".pegasus").exists()


def test_the_settings_shipped_to_the_nodes_are_valid_discorecs_settings(tmp_path):
    out = deploy(tmp_path, "--dry-run", "app").stdout
    block = re.search(r"<<'SETTINGS'\n(.*?)\nSETTINGS", out, re.S).group(1)
    values = dict(line.split("=", 1) for line in block.splitlines())
    values.pop("PYSPARK_PYTHON")
    settings = load_settings(values)
    assert settings.cassandra_replication.as_setting() == "NetworkTopologyStrategy:us-east-1=3"
    assert len(settings.kafka_bootstrap_servers) == 3


def test_cluster_sizes_come_from_the_environment(tmp_path):
    out = deploy(tmp_path, "--dry-run", "kafka", KAFKA_NODES="5", TOPIC_PARTITIONS="48").stdout
    voters = re.search(r"controller.quorum.voters=(\S+)", out).group(1)
    assert len(voters.split(",")) == 5
    assert out.count("peg sshcmd-node discorecs-kafka") == 5 and "num.partitions=48" in out


def test_a_real_run_without_aws_settings_stops_before_anything(tmp_path):
    result = deploy(tmp_path, "up")
    assert result.returncode != 0
    assert "set SUBNET_ID SECURITY_GROUP_ID KEY_NAME" in result.stderr
    assert not (tmp_path / "build").exists()


def test_an_unknown_step_is_refused(tmp_path):
    result = deploy(tmp_path, "--dry-run", "launch")
    assert result.returncode != 0 and "unknown step 'launch'" in result.stderr
