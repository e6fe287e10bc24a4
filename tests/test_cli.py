import pytest

from commands.cli import main
from discorecs import stack, tables


def test_bad_setting_is_one_clear_line(monkeypatch, capsys):
    monkeypatch.setenv("DISCORECS_CASSANDRA_PORT", "nine")
    assert main(["status"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("discorecs: error: DISCORECS_CASSANDRA_PORT")
    assert "Traceback" not in err


def test_schema_prints_the_keyspace_with_configured_replication(monkeypatch, capsys):
    monkeypatch.setenv("DISCORECS_CASSANDRA_REPLICATION", "NetworkTopologyStrategy:dc1=3")
    monkeypatch.setenv("DISCORECS_CASSANDRA_KEYSPACE", "prod")
    assert main(["schema"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == (
        "CREATE KEYSPACE IF NOT EXISTS prod WITH replication = "
        "{'class': 'NetworkTopologyStrategy', 'dc1': 3};"
    )
    assert "CREATE TABLE IF NOT EXISTS prod.recommendations_by_user (" in "\n".join(out)


@pytest.mark.services
def test_init_schema_and_status_against_running_services(services, monkeypatch, capsys):
    monkeypatch.setenv("DISCORECS_HOME", str(services.home))
    monkeypatch.setenv("DISCORECS_KAFKA_BOOTSTRAP_SERVERS", services.kafka_bootstrap_servers[0])
    monkeypatch.setenv("DISCORECS_KAFKA_CONTROLLER_PORT", str(services.kafka_controller_port))
    monkeypatch.setenv("DISCORECS_CASSANDRA_PORT", str(services.cassandra_port))
    monkeypatch.setenv("DISCORECS_CASSANDRA_STORAGE_PORT", str(services.cassandra_storage_port))
    monkeypatch.setenv("DISCORECS_CASSANDRA_KEYSPACE", services.cassandra_keyspace)
    assert main(["init-schema"]) == 0
    assert f"{len(tables.ALL_TABLES)} tables (" in capsys.readouterr().out
    assert main(["status"]) == 0
    out = capsys.readouterr().out
    assert f"Apache Kafka {stack.KAFKA} (KRaft)" in out
    assert f"Apache Cassandra {stack.CASSANDRA}" in out
    assert "\nbatch:  " in out and "\nstream: " in out


def test_schema_reads_with_speculative_retry_on_every_table(capsys):
    assert main(["schema"]) == 0
    creates = [line for line in capsys.readouterr().out.splitlines() if "CREATE TABLE" in line]
    assert len(creates) == len(tables.ALL_TABLES)
    assert all(line.endswith("speculative_retry = 'MIN(99p,50ms)';") for line in creates)


def test_nodes_overridden_by_the_environment_is_refused(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("DISCORECS_HOME", str(tmp_path))
    monkeypatch.setenv("DISCORECS_LOCAL_NODES", "1")
    assert main(["up", "--nodes", "3", "--skip-spark-check"]) == 1
    assert "overridden by DISCORECS_LOCAL_NODES" in capsys.readouterr().err


@pytest.mark.services
def test_changing_the_node_count_while_the_services_run_is_refused(services, monkeypatch, capsys):
    for name, value in services.to_environment().items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("DISCORECS_LOCAL_NODES")
    assert main(["up", "--nodes", "3", "--skip-spark-check"]) == 1
    err = capsys.readouterr().err
    assert "kafka broker, cassandra of this home run with 1 node(s)" in err
    assert "`discorecs down`, then run `discorecs up --nodes 3`" in err
    assert not (services.home / "run" / "local-nodes").exists()
