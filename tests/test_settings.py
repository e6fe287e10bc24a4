from pathlib import Path

import pytest

from discorecs.settings import LOCAL_NODES_FILE, Replication, SettingsError, load_settings


def test_defaults_run_locally():
    settings = load_settings({"DISCORECS_HOME": "/tmp/discorecs-x"})
    assert settings.kafka_bootstrap_servers == ("127.0.0.1:9092",)
    assert settings.cassandra_contact_points == ("127.0.0.1",)
    assert settings.cassandra_port == 9042
    assert settings.cassandra_protocol_version == 5
    assert settings.cassandra_replication.as_cql_map() == (
        "{'class': 'SimpleStrategy', 'replication_factor': 1}"
    )
    assert settings.data_root == "/tmp/discorecs-x/data"
    assert settings.spark_master == "local[*]"


def test_environment_overrides_file(tmp_path: Path):
    config = tmp_path / "discorecs.toml"
    config.write_text(
        'cassandra_port = 9142\nkafka_bootstrap_servers = ["10.0.0.1:9092", "10.0.0.2:9092"]\n'
        'cassandra_keyspace = "from_file"\n'
    )
    settings = load_settings({"DISCORECS_CASSANDRA_KEYSPACE": "from_env"}, config)
    assert settings.cassandra_port == 9142
    assert settings.kafka_bootstrap_servers == ("10.0.0.1:9092", "10.0.0.2:9092")
    assert settings.cassandra_keyspace == "from_env"
    assert settings.broker_address == ("10.0.0.1", 9092)


def test_config_file_from_environment(tmp_path: Path):
    config = tmp_path / "c.toml"
    config.write_text('spark_master = "spark://10.0.0.5:7077"\n')
    assert load_settings({"DISCORECS_CONFIG": str(config)}).spark_master == "spark://10.0.0.5:7077"


def test_lists_from_environment_are_comma_separated():
    settings = load_settings({"DISCORECS_CASSANDRA_CONTACT_POINTS": "10.0.0.1, 10.0.0.2,"})
    assert settings.cassandra_contact_points == ("10.0.0.1", "10.0.0.2")


def test_network_topology_replication():
    settings = load_settings(
        {"DISCORECS_CASSANDRA_REPLICATION": "NetworkTopologyStrategy:us-east=3,eu-west=2"}
    )
    assert settings.cassandra_replication == Replication(
        "NetworkTopologyStrategy", (("us-east", 3), ("eu-west", 2))
    )
    assert settings.cassandra_replication.as_cql_map() == (
        "{'class': 'NetworkTopologyStrategy', 'us-east': 3, 'eu-west': 2}"
    )


@pytest.mark.parametrize(
    "root", ["s3a://lake/discorecs", "hdfs://namenode:8020/discorecs", "file:///srv/discorecs"]
)
def test_data_root_accepts_cluster_uris(root: str):
    assert load_settings({"DISCORECS_DATA_ROOT": root + "/"}).data_root == root


def test_local_data_root_is_made_absolute():
    assert Path(load_settings({"DISCORECS_DATA_ROOT": "rel/data"}).data_root).is_absolute()


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("DISCORECS_CASSANDRA_PORT", "90x42", r"DISCORECS_CASSANDRA_PORT.*'90x42' is not a port"),
        ("DISCORECS_CASSANDRA_PORT", "70000", r"DISCORECS_CASSANDRA_PORT.*not a port"),
        ("DISCORECS_CASSANDRA_PROTOCOL_VERSION", "7", r"PROTOCOL_VERSION.*'7'.*use one of 3, 4, 5"),
        ("DISCORECS_CASSANDRA_PROTOCOL_VERSION", "v3", r"PROTOCOL_VERSION.*'v3'"),
        ("DISCORECS_KAFKA_BOOTSTRAP_SERVERS", "localhost", r"BOOTSTRAP_SERVERS.*not host:port"),
        ("DISCORECS_KAFKA_BOOTSTRAP_SERVERS", "h:port", r"BOOTSTRAP_SERVERS.*'port' is not a port"),
        ("DISCORECS_CASSANDRA_REPLICATION", "SimpleStrategy:zero", r"REPLICATION.*whole number"),
        ("DISCORECS_CASSANDRA_REPLICATION", "Everywhere:3", r"REPLICATION.*not understood"),
        ("DISCORECS_CASSANDRA_KEYSPACE", "1bad-name", r"KEYSPACE.*not a valid keyspace"),
        ("DISCORECS_DATA_ROOT", "s3://bucket/x", r"DATA_ROOT.*s3a://"),
        ("DISCORECS_SPARK_DRIVER_MEMORY", "lots", r"SPARK_DRIVER_MEMORY.*memory size"),
        ("DISCORECS_LOCAL_NODES", "2", r"LOCAL_NODES.*2 nodes cannot lose one.*use 1 or 3"),
        ("DISCORECS_LOCAL_NODES", "5", r"LOCAL_NODES.*outside 1..3"),
        ("DISCORECS_CASSANDRA_READ_CONSISTENCY", "MOST", r"READ_CONSISTENCY.*LOCAL_QUORUM"),
        ("DISCORECS_SPARK_EXECUTOR_MEMORY", "lots", r"SPARK_EXECUTOR_MEMORY.*memory size"),
        ("DISCORECS_SPARK_CORES_MAX", "-1", r"SPARK_CORES_MAX"),
        ("DISCORECS_MAVEN_REPOSITORY", "repo1.maven.org", r"MAVEN_REPOSITORY.*repository address"),
    ],
)
def test_bad_values_name_the_setting(name: str, value: str, expected: str):
    with pytest.raises(SettingsError, match=expected):
        load_settings({name: value})


def test_cluster_spark_and_artifact_settings():
    settings = load_settings(
        {
            "DISCORECS_SPARK_CORES_MAX": "2",
            "DISCORECS_SPARK_EXECUTOR_MEMORY": "1500m",
            "DISCORECS_MAVEN_REPOSITORY": "https://repo1.maven.org/maven2/",
        }
    )
    assert settings.spark_cores_max == 2 and settings.spark_executor_memory == "1500m"
    assert settings.maven_repository == "https://repo1.maven.org/maven2"
    defaults = load_settings({})
    assert (defaults.spark_cores_max, defaults.spark_executor_memory) == (0, "")
    assert defaults.maven_repository == ""


def test_co_collection_users_bound_the_pairing():
    assert load_settings({}).co_collection_users == 50_000
    assert load_settings({"DISCORECS_CO_COLLECTION_USERS": "5000"}).co_collection_users == 5000
    with pytest.raises(SettingsError, match="DISCORECS_CO_COLLECTION_USERS"):
        load_settings({"DISCORECS_CO_COLLECTION_USERS": "0"})


def test_unknown_key_in_file_is_named(tmp_path: Path):
    config = tmp_path / "c.toml"
    config.write_text("cassandra_prot = 4\n")
    with pytest.raises(SettingsError, match=r"unknown setting.*cassandra_prot"):
        load_settings({}, config)


def test_missing_and_malformed_config_files(tmp_path: Path):
    with pytest.raises(SettingsError, match="does not exist"):
        load_settings({}, tmp_path / "nope.toml")
    broken = tmp_path / "broken.toml"
    broken.write_text("cassandra_port = = 1\n")
    with pytest.raises(SettingsError, match="not valid TOML"):
        load_settings({}, broken)


def test_example_config_file_is_valid():
    example = Path(__file__).resolve().parents[1] / "discorecs.example.toml"
    settings = load_settings({}, example)
    assert settings.cassandra_keyspace == "discorecs"


def test_settings_survive_the_trip_through_the_environment():
    settings = load_settings(
        {
            "DISCORECS_KAFKA_BOOTSTRAP_SERVERS": "k1:9092,k2:9092",
            "DISCORECS_CASSANDRA_REPLICATION": "NetworkTopologyStrategy:dc1=3,dc2=2",
            "DISCORECS_CASSANDRA_USERNAME": "reader",
            "DISCORECS_STREAM_TRIGGER_SECONDS": "0.5",
        }
    )
    again = load_settings(settings.to_environment())
    assert again == settings
    assert again.cassandra_local_dc is None and again.stream_trigger_seconds == 0.5


def test_three_local_nodes_imply_a_replicated_cluster_on_three_loopback_addresses():
    settings = load_settings(
        {
            "DISCORECS_HOME": "/tmp/discorecs-x",
            "DISCORECS_LOCAL_NODES": "3",
            "DISCORECS_KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:19092",
        }
    )
    # What was set stays as set; the rest follows from the node count.
    assert settings.kafka_bootstrap_servers == ("127.0.0.1:19092",)
    assert settings.cassandra_contact_points == ("127.0.0.1", "127.0.0.2", "127.0.0.3")
    assert settings.cassandra_replication.as_cql_map() == (
        "{'class': 'NetworkTopologyStrategy', 'datacenter1': 3}"
    )
    assert settings.cassandra_local_dc == "datacenter1"
    assert (settings.kafka_replication_factor, settings.kafka_min_insync_replicas) == (3, 2)
    assert settings.cassandra_read_consistency == settings.cassandra_write_consistency
    assert settings.cassandra_write_consistency == "LOCAL_QUORUM"
    implied = load_settings({"DISCORECS_HOME": "/tmp/discorecs-x", "DISCORECS_LOCAL_NODES": "3"})
    assert implied.kafka_bootstrap_servers == (
        "127.0.0.1:9092",
        "127.0.0.2:9092",
        "127.0.0.3:9092",
    )
    assert load_settings(implied.to_environment()) == implied


def test_the_node_count_up_chose_is_the_homes_default(tmp_path: Path):
    assert load_settings({"DISCORECS_HOME": str(tmp_path)}).local_nodes == 1
    (tmp_path / LOCAL_NODES_FILE).parent.mkdir(parents=True)
    (tmp_path / LOCAL_NODES_FILE).write_text("3\n")
    remembered = load_settings({"DISCORECS_HOME": str(tmp_path)})
    assert remembered.local_nodes == 3
    assert remembered.cassandra_contact_points == ("127.0.0.1", "127.0.0.2", "127.0.0.3")
    explicit = {"DISCORECS_HOME": str(tmp_path), "DISCORECS_LOCAL_NODES": "1"}
    assert load_settings(explicit).cassandra_contact_points == ("127.0.0.1",)
    (tmp_path / LOCAL_NODES_FILE).write_text("two\n")
    with pytest.raises(SettingsError, match=r"says 'two', not a node count"):
        load_settings({"DISCORECS_HOME": str(tmp_path)})
