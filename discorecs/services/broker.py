"""The local Kafka brokers: Apache Kafka in KRaft mode, each a combined broker and controller
(one, or three on 127.0.0.1-3 forming a controller quorum of three).

Its jars come from Maven Central (:mod:`discorecs.services.maven`); it runs in a JVM of its
own (its Scala and Jackson never meet Spark's) with a ``server.properties`` written here,
bound to 127.0.0.1, its log segments under the home, so topics and committed offsets survive
``discorecs down`` / ``up``. The storage is formatted once, on first start, with a cluster id
kept beside it.
"""

from __future__ import annotations

import base64
import re
import subprocess
import uuid
from pathlib import Path

from kafka import KafkaAdminClient

from discorecs import stack
from discorecs.services.base import LocalNode, ServiceError, ensure_dir, loopback
from discorecs.services.install import find_java
from discorecs.services.maven import KAFKA, ensure_bundle
from discorecs.settings import LOCAL_NODE_HOSTS

# A broker's server.properties, locally and on a cluster node (discorecs.services.node_files).
# Every internal topic is replicated as the event topics are, and needs all but one copy per
# write: Kafka's defaults (3 and 2) cannot be met by one broker, and the share-group state
# topic's default would fail its creation there.
SERVER_PROPERTIES = """\
process.roles=broker,controller
node.id={node_id}
controller.quorum.voters={voters}
listeners=PLAINTEXT://{host}:{port},CONTROLLER://{host}:{controller_port}
advertised.listeners=PLAINTEXT://{host}:{port}
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
log.dirs={data}
num.partitions={partitions}
auto.create.topics.enable=false
default.replication.factor={replication}
min.insync.replicas={min_isr}
offsets.topic.replication.factor={replication}
offsets.topic.num.partitions=8
transaction.state.log.replication.factor={replication}
transaction.state.log.min.isr={min_isr}
share.coordinator.state.topic.replication.factor={replication}
share.coordinator.state.topic.min.isr={min_isr}
group.initial.rebalance.delay.ms=0
num.network.threads={network_threads}
num.io.threads={io_threads}
log.retention.hours=168
"""

LOG4J2 = """\
Configuration:
  status: warn
  Appenders:
    Console:
      name: STDOUT
      PatternLayout:
        pattern: "[%d] %p %m (%c)%n"
  Loggers:
    Root:
      level: INFO
      AppenderRef:
        - ref: STDOUT
    Logger:
      - name: kafka.request.logger
        level: WARN
      - name: org.apache.kafka.controller
        level: WARN
      - name: state.change.logger
        level: WARN
"""

_VERSION_LINE = re.compile(r"Kafka version: (\S+)")


def new_cluster_id() -> str:
    """A Kafka cluster id: 16 random bytes in URL-safe base64 without padding, never starting
    with "-" (a command line would read it as an option; Kafka's own ids avoid it too)."""
    while True:
        text = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not text.startswith("-"):
            return text


def broker_arguments(
    *, heap: str, log4j2: Path | str, lib: Path | str, properties: Path | str
) -> list[str]:
    """The JVM's arguments for a broker (everything after ``java``), locally and on a node."""
    return [
        f"-Xmx{heap}",
        f"-Xms{heap}",
        "-XX:+UseG1GC",
        "-XX:MaxGCPauseMillis=20",
        "-Djava.awt.headless=true",
        f"-Dlog4j2.configurationFile={log4j2}",
        "-cp",
        f"{lib}/*",
        "kafka.Kafka",
        str(properties),
    ]


class KafkaBroker(LocalNode):
    """A local broker (and KRaft controller); in a cluster, every one is a controller voter."""

    kind = "kafka broker"
    kind_key = "broker"
    start_timeout = 90.0
    # SIGTERM is a controlled shutdown: the log segments are closed cleanly, so the next
    # start does not have to recover them.
    stop_timeout = 30.0

    def ports(self) -> tuple[int, ...]:
        return (self._port(), self.settings.kafka_controller_port)

    def _port(self) -> int:
        host, port = self.settings.broker_address
        if not loopback(host) and host not in LOCAL_NODE_HOSTS:
            raise ServiceError(
                f"{self.name}: DISCORECS_KAFKA_BOOTSTRAP_SERVERS points at {host}, not this "
                "machine; `discorecs up` only starts brokers on 127.0.0.1-3 (use "
                "127.0.0.1:<port>)"
            )
        return port

    def install(self) -> None:
        self.java = find_java(service=self.name)
        self.lib = ensure_bundle(
            KAFKA, self.settings.cache_dir, repository=self.settings.maven_repository
        )

    @property
    def data_dir(self) -> Path:
        return self.dir / "data"

    def prepare(self) -> None:
        conf = ensure_dir(self.dir / "conf")
        (conf / "server.properties").write_text(
            SERVER_PROPERTIES.format(
                node_id=self.node,
                voters=",".join(
                    f"{node}@{LOCAL_NODE_HOSTS[node - 1]}:{self.settings.kafka_controller_port}"
                    for node in range(1, self.nodes + 1)
                ),
                host=self.host,
                port=self._port(),
                controller_port=self.settings.kafka_controller_port,
                data=ensure_dir(self.data_dir),
                replication=self.nodes,
                min_isr=max(1, self.nodes - 1),
                partitions=1,
                network_threads=2,
                io_threads=4,
            )
        )
        (conf / "log4j2.yaml").write_text(LOG4J2)
        if not (self.data_dir / "meta.properties").exists():
            self._format_storage(conf / "server.properties")

    def _format_storage(self, properties: Path) -> None:
        """Format the KRaft log folder once, with the cluster id every broker of the home
        shares, kept beside their data."""
        if self.nodes == 1:
            id_file = self.dir / "cluster-id"
        else:
            id_file = self.settings.run_dir / "kafka-cluster-id"
        id_file.parent.mkdir(parents=True, exist_ok=True)
        if not id_file.exists():
            id_file.write_text(new_cluster_id())
        result = subprocess.run(
            [
                *self._java_command(),
                "kafka.tools.StorageTool",
                "format",
                "--cluster-id",
                id_file.read_text().strip(),
                "--config",
                str(properties),
                "--ignore-formatted",
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            raise ServiceError(
                f"{self.name}: formatting its storage in {self.data_dir} failed: "
                f"{(result.stderr or result.stdout).strip()[-500:]}; if the folder holds "
                f"data of another cluster, `discorecs down` and remove {self.dir}"
            )

    def _java_command(self) -> list[str]:
        return [
            self.java.path,
            f"-Dlog4j2.configurationFile={self.dir / 'conf' / 'log4j2.yaml'}",
            "-cp",
            f"{self.lib}/*",
        ]

    def command(self) -> list[str]:
        conf = self.dir / "conf"
        return [
            self.java.path,
            *broker_arguments(
                heap=self.settings.kafka_max_heap,
                log4j2=conf / "log4j2.yaml",
                lib=self.lib,
                properties=conf / "server.properties",
            ),
        ]

    def probe(self) -> str:
        """Ask this broker for the cluster's metadata; ready once it lists every broker."""
        admin = KafkaAdminClient(
            bootstrap_servers=f"{self.host}:{self._port()}",
            request_timeout_ms=3000,
            client_id="discorecs-probe",
        )
        try:
            brokers = admin.describe_cluster()["brokers"]
        finally:
            admin.close()
        if len(brokers) < self.nodes:
            raise ServiceError(
                f"{self.name}: the cluster's metadata lists {len(brokers)} of {self.nodes} brokers"
            )
        return f"Apache Kafka {self.reported_version()} (KRaft)"

    def reported_version(self) -> str:
        """The version the broker logged at start ("Kafka version: 4.1.1"), else the pinned one.
        The log starts anew with each start and says it within its first lines: only its
        head is read, however long the broker has run."""
        try:
            with self.log_path.open("rb") as log:
                head = log.read(1 << 20).decode(errors="replace")
        except FileNotFoundError:
            head = ""
        found = _VERSION_LINE.search(head)
        return found.group(1) if found else stack.KAFKA

    def hint(self) -> str:
        return (
            f"see {self.log_path}; free ports can be set with DISCORECS_KAFKA_BOOTSTRAP_SERVERS "
            "and DISCORECS_KAFKA_CONTROLLER_PORT"
        )

    def port_setting_hint(self, port: int) -> str:
        if port == self.settings.kafka_controller_port:
            return "set DISCORECS_KAFKA_CONTROLLER_PORT to another port"
        return "set DISCORECS_KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:<another port>"
