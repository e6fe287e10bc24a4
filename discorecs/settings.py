"""One typed settings object for every part of discorecs.

Values come from, in increasing order of precedence: the defaults below (which run everything
locally on 127.0.0.1), an optional TOML file (``DISCORECS_CONFIG`` or ``--config``), and
environment variables named ``DISCORECS_<FIELD>`` (``DISCORECS_CASSANDRA_PORT=9142``). Every
value is checked when it is read, and a bad one raises :class:`SettingsError` naming the setting,
the value and what is accepted, so a typo never surfaces later as a connection timeout.

``discorecs.example.toml`` at the project root lists every key.

Why one module: a setting's name, default, environment variable and check are one contract;
split, a setting would be spelled in two places.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from collections.abc import Callable, Mapping, Set
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from discorecs.errors import DiscorecsError

ENV_PREFIX = "DISCORECS_"
CONFIG_ENV = "DISCORECS_CONFIG"
SUPPORTED_PROTOCOL_VERSIONS = (3, 4, 5)
DATA_ROOT_SCHEMES = ("file://", "s3a://", "hdfs://")
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
LOCAL_NODE_HOSTS = ("127.0.0.1", "127.0.0.2", "127.0.0.3")
"""Where `discorecs up` runs its nodes: Linux routes all of 127.0.0.0/8 to loopback, so three
nodes of a cluster each get an address of their own and the same ports."""
LOCAL_DATACENTER = "datacenter1"
"""The datacenter every local Cassandra node reports (SimpleSnitch's one datacenter)."""
CONSISTENCY_LEVELS = (
    "ONE", "TWO", "THREE", "QUORUM", "ALL", "LOCAL_QUORUM", "EACH_QUORUM", "LOCAL_ONE",
)  # fmt: skip


class SettingsError(DiscorecsError, ValueError):
    """A setting has a value discorecs cannot use; the message names the setting."""


@dataclass(frozen=True)
class Replication:
    """Keyspace replication: ``SimpleStrategy`` with one factor, or per-datacenter factors."""

    strategy: str
    factors: tuple[tuple[str, int], ...]

    def as_cql_map(self) -> str:
        """The replication map as CQL: ``{'class': 'SimpleStrategy', 'replication_factor': 1}``."""
        entries = [f"'class': '{self.strategy}'"]
        entries += [f"'{name}': {factor}" for name, factor in self.factors]
        return "{" + ", ".join(entries) + "}"

    def local_factor(self, datacenter: str | None) -> int:
        """How many replicas each partition has in ``datacenter`` (SimpleStrategy: its one
        factor; a datacenter not named: the largest factor)."""
        factors = dict(self.factors)
        return factors.get(datacenter or "", max(factors.values()))

    def as_setting(self) -> str:
        """The setting's own notation: ``SimpleStrategy:1``, ``NetworkTopologyStrategy:dc1=3``."""
        if self.strategy == "SimpleStrategy":
            return f"{self.strategy}:{self.factors[0][1]}"
        return f"{self.strategy}:" + ",".join(f"{dc}={factor}" for dc, factor in self.factors)


@dataclass(frozen=True)
class Settings:
    """Everything a discorecs process needs to know about where things are."""

    kafka_bootstrap_servers: tuple[str, ...] = ("127.0.0.1:9092",)
    # Only for the local broker `discorecs up` starts: its KRaft controller port and heap.
    kafka_controller_port: int = 9093
    kafka_max_heap: str = "512m"
    # The event topics' replication and the acknowledged copies a write needs (acks=all):
    # with 3 and 2, one broker can be lost without losing or refusing an event.
    kafka_replication_factor: int = 1
    kafka_min_insync_replicas: int = 1
    cassandra_contact_points: tuple[str, ...] = ("127.0.0.1",)
    cassandra_port: int = 9042
    cassandra_keyspace: str = "discorecs"
    cassandra_protocol_version: int = 5
    cassandra_replication: Replication = Replication("SimpleStrategy", (("replication_factor", 1),))
    cassandra_local_dc: str | None = None
    # Consistency of every read and every write (LOCAL_QUORUM: a majority of the local
    # datacenter's replicas, so one node of three may be down; on one node it is that node).
    cassandra_read_consistency: str = "LOCAL_QUORUM"
    cassandra_write_consistency: str = "LOCAL_QUORUM"
    cassandra_username: str | None = None
    cassandra_password: str | None = None
    # Rows per unlogged batch when the nightly run loads its serving tables and the stream
    # writes a micro-batch (1: no batches); a batch also ends at the bytes the node allows
    # (discorecs.cassandra.CassandraConnection.batch_bytes).
    # Larger batches of small rows cost the client less CPU per row (docs/performance.md).
    cassandra_batch_rows: int = 128
    # Only for the local node `discorecs up` starts: its inter-node port and heap.
    cassandra_storage_port: int = 7000
    cassandra_max_heap: str = "1G"
    # How many Kafka brokers and Cassandra nodes `discorecs up` runs on this machine: 1, or 3
    # on 127.0.0.1-3 (see cluster_defaults for the settings a cluster of three implies).
    local_nodes: int = 1
    data_root: str = ""
    # An s3a:// data root: the S3 endpoint (empty: AWS's own; an address such as
    # http://127.0.0.1:9000 for another S3 server, addressed path-style) and its region.
    # Credentials come from the AWS default chain (environment, profile, instance role).
    s3_endpoint: str = ""
    s3_region: str = "us-east-1"
    # A published dataset's previous versions are deleted this long after they were written,
    # so a reader that resolved the old version before a publish can finish reading it.
    old_versions_grace_hours: float = 24.0
    spark_master: str = "local[*]"
    spark_driver_memory: str = "2g"
    spark_shuffle_partitions: int = 16
    # On a standalone cluster: the cores one application may take (0: every core offered,
    # Spark's default, which leaves none for a second application such as the nightly batch
    # beside the stream) and each executor's memory (empty: Spark's default, 1g).
    spark_cores_max: int = 0
    spark_executor_memory: str = ""
    # How many users' collections the nightly batch pairs up at most to find releases kept
    # together (spark_jobs.cocollection): a larger population is sampled uniformly by user
    # id, which estimates the same similarities at a bounded cost.
    co_collection_users: int = 50_000
    # The speed layer: events per micro-batch at most, the trigger interval, and how many
    # failures in a row it restarts from before giving up. The cap keeps a slowdown from
    # feeding itself: a batch's time grows with its size, and events arrive meanwhile, so an
    # uncapped stream that falls behind once settles into large, slow batches.
    stream_max_events_per_trigger: int = 30_000
    stream_trigger_seconds: float = 2.0
    stream_restarts: int = 10
    # An event dated more than this after its Kafka record's timestamp is dead-lettered.
    stream_max_seconds_ahead: float = 300.0
    # The site `discorecs web` serves (on 127.0.0.1 unless --host says otherwise).
    web_port: int = 8000
    # Rendered recommendation answers each web worker keeps (0: none); see webapp.views.api.
    web_response_cache: int = 20_000
    # Where local services keep their state (pid files, logs, Cassandra data).
    home: Path = Path("~/.discorecs")
    # Where downloaded service distributions are kept, shared by every home.
    cache_dir: Path = Path("~/.cache/discorecs")
    # Where the locked jars come from: empty for Maven (Maven Central, or the mirror in
    # ~/.m2/settings.xml); a repository address (https://repo1.maven.org/maven2, or any
    # server with Maven's layout) to fetch each locked file from it directly, without Maven.
    maven_repository: str = ""

    @property
    def run_dir(self) -> Path:
        """Pid files, logs and service data of the local services."""
        return self.home / "run"

    @property
    def broker_address(self) -> tuple[str, int]:
        """Host and port of the first bootstrap server (the one a local broker listens on)."""
        return split_host_port(self.kafka_bootstrap_servers[0], "kafka_bootstrap_servers")

    def to_environment(self) -> dict[str, str]:
        """These settings as ``DISCORECS_*`` variables, so a child process (a service, a
        spark-submit) reads exactly the same settings whatever their source was here."""
        env = {}
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if value is None:
                continue
            if isinstance(value, tuple):
                text = ",".join(value)
            elif isinstance(value, Replication):
                text = value.as_setting()
            else:
                text = str(value)
            env[ENV_PREFIX + field.name.upper()] = text
        return env

    def replace(self, **changes: Any) -> Settings:
        """A copy with some fields changed (used by tests and the CLI's overrides)."""
        return dataclasses.replace(self, **changes)


def load_settings(
    environ: Mapping[str, str] | None = None, config_file: str | Path | None = None
) -> Settings:
    """Read settings from an optional TOML file, then environment variables over it.

    ``environ`` defaults to ``os.environ``; ``config_file`` defaults to ``$DISCORECS_CONFIG``.
    """
    environ = os.environ if environ is None else environ
    raw: dict[str, Any] = {}
    config_file = config_file or environ.get(CONFIG_ENV)
    if config_file:
        raw.update(_read_config_file(Path(config_file)))
    for field in dataclasses.fields(Settings):
        env_name = ENV_PREFIX + field.name.upper()
        if env_name in environ:
            raw[field.name] = environ[env_name]
    return settings_from_mapping(raw)


def settings_from_mapping(raw: Mapping[str, Any]) -> Settings:
    """Build and validate :class:`Settings` from plain values (strings from the environment,
    or typed values from TOML)."""
    known = {f.name for f in dataclasses.fields(Settings)}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise SettingsError(
            f"unknown setting(s) {', '.join(unknown)}; "
            f"known settings are: {', '.join(sorted(known))}"
        )
    values: dict[str, Any] = {}
    for name, value in raw.items():
        parser = _PARSERS.get(name, _parse_text)
        values[name] = parser(name, value)
    settings = Settings(**values)
    home = settings.home.expanduser().absolute()
    cache_dir = settings.cache_dir.expanduser().absolute()
    data_root = settings.data_root or str(home / "data")
    settings = settings.replace(
        home=home,
        cache_dir=cache_dir,
        data_root=_parse_data_root("data_root", data_root),
        local_nodes=values.get("local_nodes") or remembered_local_nodes(home),
    )
    return cluster_defaults(settings, explicit=set(values) - {"local_nodes"})


LOCAL_NODES_FILE = "run/local-nodes"
"""Under the home: the node count the last ``discorecs up --nodes N`` chose, the default of
``local_nodes`` for every later command of that home (so ``stream``, ``demo``, ``status`` and
``down`` address the cluster ``up`` started without being told again)."""


def remembered_local_nodes(home: Path) -> int:
    """What ``discorecs up --nodes N`` recorded for ``home``, else 1."""
    try:
        text = (home / LOCAL_NODES_FILE).read_text()
    except FileNotFoundError:
        return 1
    try:
        return _parse_local_nodes("local_nodes", text)
    except SettingsError:
        raise SettingsError(
            f"{home / LOCAL_NODES_FILE} says {text.strip()!r}, not a node count (1 or 3); "
            "remove the file (1 node) or write 1 or 3 in it"
        ) from None


def cluster_defaults(settings: Settings, explicit: Set[str] = frozenset()) -> Settings:
    """``settings`` with what ``local_nodes`` implies, except the settings named in
    ``explicit``: for three local nodes, the three brokers as bootstrap servers and the three
    Cassandra nodes as contact points (on the ports already set), topics replicated three
    times needing two copies per write, and a keyspace with three replicas in the one local
    datacenter (NetworkTopologyStrategy, as on a real cluster). One node implies nothing."""
    if settings.local_nodes == 1:
        return settings
    hosts = LOCAL_NODE_HOSTS[: settings.local_nodes]
    port = settings.broker_address[1]
    implied: dict[str, Any] = {
        "kafka_bootstrap_servers": tuple(f"{host}:{port}" for host in hosts),
        "kafka_replication_factor": len(hosts),
        "kafka_min_insync_replicas": len(hosts) - 1,
        "cassandra_contact_points": hosts,
        "cassandra_replication": Replication(
            "NetworkTopologyStrategy", ((LOCAL_DATACENTER, len(hosts)),)
        ),
        "cassandra_local_dc": LOCAL_DATACENTER,
    }
    return settings.replace(**{k: v for k, v in implied.items() if k not in explicit})


def split_host_port(address: str, setting: str) -> tuple[str, int]:
    """``"host:port"`` to ``(host, port)``, with an error naming ``setting`` if it is malformed."""
    host, sep, port = address.rpartition(":")
    if not sep or not host:
        raise SettingsError(f"{_env(setting)}: {address!r} is not host:port (e.g. 127.0.0.1:9092)")
    return host.strip("[]"), _parse_port(setting, port)


def _read_config_file(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError:
        raise SettingsError(
            f"config file {path} does not exist; fix {CONFIG_ENV} or --config"
        ) from None
    except tomllib.TOMLDecodeError as error:
        raise SettingsError(f"config file {path} is not valid TOML: {error}") from None


def _env(setting: str) -> str:
    return f"{ENV_PREFIX}{setting.upper()} (or '{setting}' in the config file)"


def _parse_text(name: str, value: Any) -> str:
    text = str(value).strip()
    if not text:
        raise SettingsError(f"{_env(name)} must not be empty")
    return text


def _parse_optional_text(name: str, value: Any) -> str | None:
    text = str(value).strip()
    return text or None


def _parse_int(name: str, value: Any, low: int, high: int) -> int:
    try:
        number = int(str(value).strip())
    except ValueError:
        raise SettingsError(f"{_env(name)}: {value!r} is not a whole number") from None
    if not low <= number <= high:
        raise SettingsError(f"{_env(name)}: {number} is outside {low}..{high}")
    return number


def _parse_port(name: str, value: Any) -> int:
    try:
        return _parse_int(name, value, 1, 65535)
    except SettingsError:
        raise SettingsError(f"{_env(name)}: {value!r} is not a port number (1-65535)") from None


def _parse_list(name: str, value: Any) -> tuple[str, ...]:
    items = value if isinstance(value, list | tuple) else str(value).split(",")
    cleaned = tuple(str(item).strip() for item in items if str(item).strip())
    if not cleaned:
        raise SettingsError(f"{_env(name)} needs at least one entry (comma-separated)")
    return cleaned


def _parse_bootstrap_servers(name: str, value: Any) -> tuple[str, ...]:
    servers = _parse_list(name, value)
    for server in servers:
        split_host_port(server, name)
    return servers


def _parse_protocol_version(name: str, value: Any) -> int:
    try:
        version = int(str(value).strip())
    except ValueError:
        version = -1
    if version not in SUPPORTED_PROTOCOL_VERSIONS:
        raise SettingsError(
            f"{_env(name)}: {value!r} is not a supported CQL native protocol version; use one of "
            f"{', '.join(map(str, SUPPORTED_PROTOCOL_VERSIONS))} (Cassandra 5.0 speaks all "
            "three; 5 is its newest, 4 the newest of Cassandra 4.1)"
        )
    return version


def _parse_replication(name: str, value: Any) -> Replication:
    """``SimpleStrategy:1`` or ``NetworkTopologyStrategy:dc1=3,dc2=3``."""
    if isinstance(value, Replication):
        return value
    text = str(value).strip()
    strategy, _, spec = text.partition(":")
    usage = "use SimpleStrategy:<factor> or NetworkTopologyStrategy:<dc>=<factor>[,<dc>=<factor>]"
    if strategy == "SimpleStrategy":
        factor = _parse_int(name, spec or "x", 1, 99)
        return Replication(strategy, (("replication_factor", factor),))
    if strategy == "NetworkTopologyStrategy":
        factors = []
        for part in filter(None, (p.strip() for p in spec.split(","))):
            dc, eq, factor = part.partition("=")
            if not eq or not dc.strip():
                raise SettingsError(
                    f"{_env(name)}: {text!r}: {part!r} is not <dc>=<factor>; {usage}"
                )
            factors.append((dc.strip(), _parse_int(name, factor, 1, 99)))
        if not factors:
            raise SettingsError(f"{_env(name)}: {text!r} names no datacenter; {usage}")
        return Replication(strategy, tuple(factors))
    raise SettingsError(f"{_env(name)}: {text!r} is not understood; {usage}")


def _parse_consistency(name: str, value: Any) -> str:
    text = _parse_text(name, value).upper()
    if text not in CONSISTENCY_LEVELS:
        raise SettingsError(
            f"{_env(name)}: {value!r} is not a consistency level; use one of "
            f"{', '.join(CONSISTENCY_LEVELS)}"
        )
    return text


def _parse_local_nodes(name: str, value: Any) -> int:
    nodes = _parse_int(name, value, 1, len(LOCAL_NODE_HOSTS))
    if nodes == 2:
        raise SettingsError(
            f"{_env(name)}: 2 nodes cannot lose one and keep a majority; use 1 or 3"
        )
    return nodes


def _parse_keyspace(name: str, value: Any) -> str:
    text = _parse_text(name, value)
    if not (text[0].isalpha() and text.replace("_", "").isalnum() and len(text) <= 48):
        raise SettingsError(
            f"{_env(name)}: {text!r} is not a valid keyspace name (letters, digits, underscores, "
            "starting with a letter, at most 48 characters)"
        )
    return text


def _parse_data_root(name: str, value: Any) -> str:
    """A local folder (made absolute) or a ``file://``, ``s3a://`` or ``hdfs://`` URI."""
    text = _parse_text(name, value)
    if "://" in text:
        if not text.startswith(DATA_ROOT_SCHEMES):
            hint = " (Spark reads S3 through s3a://)" if text.startswith("s3://") else ""
            raise SettingsError(
                f"{_env(name)}: {text!r} has an unsupported scheme{hint}; use a local folder or "
                f"one of {', '.join(DATA_ROOT_SCHEMES)}"
            )
        return text.rstrip("/")
    return str(Path(text).expanduser().absolute())


def _http_address(what: str, empty: str) -> Callable[[str, Any], str]:
    """A parser of an optional http(s):// address (trailing slashes dropped); ``what`` is
    what to give ("an endpoint such as ..."), ``empty`` what an empty value means."""

    def parse(name: str, value: Any) -> str:
        text = str(value).strip().rstrip("/")
        if text and not text.startswith(("http://", "https://")):
            raise SettingsError(f"{_env(name)}: {text!r} is not {what} (leave it empty {empty})")
        return text

    return parse


def _parse_path(name: str, value: Any) -> Path:
    return Path(_parse_text(name, value))


def _parse_memory(name: str, value: Any) -> str:
    text = _parse_text(name, value)
    if not (text[:-1].isdigit() and text[-1].lower() in "mg"):
        raise SettingsError(f"{_env(name)}: {text!r} is not a memory size such as 512m or 2g")
    return text


def _parse_amount(name: str, value: Any, unit: str, low: float, high: float) -> float:
    try:
        amount = float(str(value).strip())
    except ValueError:
        raise SettingsError(f"{_env(name)}: {value!r} is not a number of {unit}") from None
    if not low <= amount <= high:
        raise SettingsError(f"{_env(name)}: {amount:g} is outside {low:g}..{high:g} {unit}")
    return amount


def _parse_seconds(name: str, value: Any) -> float:
    return _parse_amount(name, value, "seconds", 0.1, 3600)


def _parse_hours(name: str, value: Any) -> float:
    return _parse_amount(name, value, "hours", 0, 24 * 365)


_PARSERS = {
    "kafka_bootstrap_servers": _parse_bootstrap_servers,
    "kafka_controller_port": _parse_port,
    "kafka_max_heap": _parse_memory,
    "kafka_replication_factor": lambda name, value: _parse_int(name, value, 1, 99),
    "kafka_min_insync_replicas": lambda name, value: _parse_int(name, value, 1, 99),
    "cassandra_contact_points": _parse_list,
    "cassandra_port": _parse_port,
    "cassandra_keyspace": _parse_keyspace,
    "cassandra_protocol_version": _parse_protocol_version,
    "cassandra_replication": _parse_replication,
    "cassandra_local_dc": _parse_optional_text,
    "cassandra_read_consistency": _parse_consistency,
    "cassandra_write_consistency": _parse_consistency,
    "cassandra_username": _parse_optional_text,
    "cassandra_password": _parse_optional_text,
    "cassandra_batch_rows": lambda name, value: _parse_int(name, value, 1, 1000),
    "cassandra_storage_port": _parse_port,
    "cassandra_max_heap": _parse_memory,
    "local_nodes": _parse_local_nodes,
    "data_root": _parse_data_root,
    "s3_endpoint": _http_address("an endpoint such as http://127.0.0.1:9000", "for AWS's own"),
    "s3_region": _parse_text,
    "old_versions_grace_hours": _parse_hours,
    "spark_master": _parse_text,
    "spark_driver_memory": _parse_memory,
    "spark_shuffle_partitions": lambda name, value: _parse_int(name, value, 1, 100_000),
    "spark_cores_max": lambda name, value: _parse_int(name, value, 0, 100_000),
    "spark_executor_memory": lambda name, value: _parse_memory(name, value) if value else "",
    "co_collection_users": lambda name, value: _parse_int(name, value, 1, 1_000_000_000),
    "stream_max_events_per_trigger": lambda name, value: _parse_int(name, value, 1, 10_000_000),
    "stream_trigger_seconds": _parse_seconds,
    "stream_restarts": lambda name, value: _parse_int(name, value, 0, 1000),
    "stream_max_seconds_ahead": _parse_seconds,
    "web_port": _parse_port,
    "web_response_cache": lambda name, value: _parse_int(name, value, 0, 10_000_000),
    "home": _parse_path,
    "cache_dir": _parse_path,
    "maven_repository": _http_address(
        "a repository address such as https://repo1.maven.org/maven2",
        "to let Maven fetch the jars",
    ),
}
