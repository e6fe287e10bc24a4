"""What deploy.sh sends a cluster node: its Kafka and Cassandra files, rendered from the local
services' own templates, and the shell that writes them byte for byte."""

from __future__ import annotations

import subprocess
from pathlib import PurePosixPath

import pytest

from discorecs.services import node_files
from discorecs.services.cassandra_node import JVM17_SERVER_OPTIONS, memtable_space
from discorecs.services.maven import CASSANDRA, read_lock


def test_a_broker_gets_its_id_voters_and_listeners_and_a_fixed_command_line():
    files = node_files.kafka_files(
        node_id=2,
        host="10.0.1.12",
        voters="1@10.0.1.11:9093,2@10.0.1.12:9093,3@10.0.1.13:9093",
        partitions=24,
        replication=3,
        heap="6g",
    )
    properties = files[PurePosixPath("/etc/discorecs/kafka/server.properties")]
    lines = set(properties.splitlines())
    assert {
        "node.id=2",
        "controller.quorum.voters=1@10.0.1.11:9093,2@10.0.1.12:9093,3@10.0.1.13:9093",
        "listeners=PLAINTEXT://10.0.1.12:9092,CONTROLLER://10.0.1.12:9093",
        "advertised.listeners=PLAINTEXT://10.0.1.12:9092",
        "log.dirs=/var/lib/discorecs/kafka",
        "num.partitions=24",
        "default.replication.factor=3",
        "min.insync.replicas=2",
        "offsets.topic.replication.factor=3",
    } <= lines
    arguments = files[PurePosixPath("/etc/discorecs/kafka/jvm.args")].splitlines()
    assert arguments[:2] == ["-Xmx6g", "-Xms6g"]
    assert arguments[-4:] == [
        "-cp",
        "/opt/discorecs/jvm/kafka/*",
        "kafka.Kafka",
        "/etc/discorecs/kafka/server.properties",
    ]


def test_a_cassandra_node_gets_its_datacenter_seeds_and_cassandras_own_jvm_options():
    files = node_files.cassandra_files(
        host="10.0.3.12",
        seeds=["10.0.3.11", "10.0.3.12"],
        cluster_name="discorecs",
        datacenter="us-east-1",
        heap="8G",
    )
    conf = PurePosixPath("/etc/discorecs/cassandra")
    yaml = files[conf / "cassandra.yaml"]
    assert "cluster_name: discorecs\n" in yaml
    assert '      - seeds: "10.0.3.11:7000,10.0.3.12:7000"\n' in yaml
    assert "listen_address: 10.0.3.12\n" in yaml and "rpc_address: 10.0.3.12\n" in yaml
    assert "endpoint_snitch: GossipingPropertyFileSnitch\n" in yaml
    assert "data_file_directories: [/var/lib/discorecs/cassandra/data]\n" in yaml
    assert "memtable_offheap_space: 8192MiB\n" in yaml  # as much as the 8G heap
    assert files[conf / "cassandra-rackdc.properties"] == "dc=us-east-1\nrack=rack1\n"
    arguments = files[conf / "jvm.args"].splitlines()
    jamm = next(jar for jar in read_lock(CASSANDRA) if jar.artifact == "jamm")
    assert f"-javaagent:/opt/discorecs/jvm/cassandra/{jamm.filename}" in arguments
    assert set(JVM17_SERVER_OPTIONS) <= set(arguments)
    # A cluster node waits for gossip as Cassandra does: the local fast start stays local.
    assert not any(a.startswith("-Dcassandra.ring_delay_ms") for a in arguments)
    assert arguments[-1] == "org.apache.cassandra.service.CassandraDaemon"


def test_the_shell_writes_each_file_byte_for_byte(tmp_path):
    tricky = "a $HOME `date` \\ line\n'quoted' \"double\"\n\ttabbed\n"
    files = {
        PurePosixPath(tmp_path / "conf" / "one.properties"): tricky,
        PurePosixPath(tmp_path / "other" / "deeper" / "two.yaml"): "key: value\n",
    }
    subprocess.run(["bash", "-c", node_files.as_shell(files)], check=True)
    assert (tmp_path / "conf" / "one.properties").read_text() == tricky
    assert (tmp_path / "other" / "deeper" / "two.yaml").read_text() == "key: value\n"


def test_a_file_holding_the_end_marker_is_refused():
    with pytest.raises(ValueError, match="DISCORECS_FILE_END"):
        node_files.as_shell({PurePosixPath("/x"): "before\nDISCORECS_FILE_END\nafter\n"})


@pytest.mark.parametrize(("heap", "space"), [("512m", "512MiB"), ("2G", "2048MiB")])
def test_a_nodes_memtables_get_as_much_space_off_the_heap_as_the_heap(heap, space):
    assert memtable_space(heap) == space


def test_a_heap_without_a_unit_is_refused_with_the_form_it_takes():
    with pytest.raises(ValueError, match="512m or 8g"):
        memtable_space("2048")
