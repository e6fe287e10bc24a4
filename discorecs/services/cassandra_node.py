"""The local Cassandra node: Apache Cassandra 2.1.0 launched directly on Java 17.

Its own start scripts cannot be used (they pass JVM flags Java 17 rejects), so the JVM is
started here with the module openings Cassandra 2.1 needs on a modern JDK, G1GC, a minimal
cassandra.yaml bound to 127.0.0.1, JMX off, and its data under the run folder. Production runs
Cassandra 4.1/5.0; one schema and protocol v3 serve both.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

from discorecs.cassandra import connect, release_version
from discorecs.services.base import LocalService, ServiceError, ensure_dir, loopback
from discorecs.services.install import Java, ensure_cassandra_lib, find_java

# Cassandra 2.1 reaches into JDK internals of these modules (reflection, unsafe, JMX beans).
_OPENED_MODULES = ("java.base", "java.management", "jdk.management", "java.rmi", "java.sql")

_YAML = """\
cluster_name: discorecs-local
num_tokens: 16
partitioner: org.apache.cassandra.dht.Murmur3Partitioner
data_file_directories: [{data}]
commitlog_directory: {commitlog}
saved_caches_directory: {saved_caches}
commitlog_sync: periodic
commitlog_sync_period_in_ms: 10000
seed_provider:
  - class_name: org.apache.cassandra.locator.SimpleSeedProvider
    parameters:
      - seeds: "127.0.0.1"
listen_address: 127.0.0.1
rpc_address: 127.0.0.1
storage_port: {storage_port}
ssl_storage_port: {ssl_storage_port}
native_transport_port: {native_port}
start_rpc: false
start_native_transport: true
endpoint_snitch: SimpleSnitch
disk_access_mode: standard
auto_snapshot: false
hinted_handoff_enabled: false
concurrent_reads: 8
concurrent_writes: 16
read_request_timeout_in_ms: 10000
write_request_timeout_in_ms: 5000
request_timeout_in_ms: 20000
batch_size_warn_threshold_in_kb: 64
"""

_LOGBACK = """\
<configuration scan="false">
  <appender name="STDOUT" class="ch.qos.logback.core.ConsoleAppender">
    <encoder><pattern>%-5level [%thread] %date{ISO8601} %F:%L - %msg%n</pattern></encoder>
  </appender>
  <root level="INFO"><appender-ref ref="STDOUT" /></root>
  <logger name="com.thinkaurelius.thrift" level="ERROR"/>
</configuration>
"""


class CassandraNode(LocalService):
    name = "cassandra"
    key = "cassandra"
    start_timeout = 90.0

    def ports(self) -> tuple[int, ...]:
        hosts = self.settings.cassandra_contact_points
        if not any(loopback(host) for host in hosts):
            raise ServiceError(
                f"{self.name}: DISCORECS_CASSANDRA_CONTACT_POINTS is {','.join(hosts)}, not this "
                "machine; `discorecs up` only starts a node on 127.0.0.1"
            )
        return (self.settings.cassandra_port, self.settings.cassandra_storage_port)

    def install(self) -> None:
        self.java = find_java()
        self.lib = ensure_cassandra_lib(self.settings.cache_dir)

    def prepare(self) -> None:
        conf = ensure_dir(self.dir / "conf")
        storage = self.settings.cassandra_storage_port
        (conf / "cassandra.yaml").write_text(
            _YAML.format(
                data=ensure_dir(self.dir / "data"),
                commitlog=ensure_dir(self.dir / "commitlog"),
                saved_caches=ensure_dir(self.dir / "saved_caches"),
                storage_port=storage,
                ssl_storage_port=storage + 1 if storage < 65535 else storage - 1,
                native_port=self.settings.cassandra_port,
            )
        )
        (conf / "logback.xml").write_text(_LOGBACK)

    def command(self) -> list[str]:
        conf = self.dir / "conf"
        return [
            self.java.path,
            "-Xms256M",
            f"-Xmx{self.settings.cassandra_max_heap}",
            "-Xss512k",
            "-XX:+UseG1GC",
            "-Djava.net.preferIPv4Stack=true",
            f"-Dcassandra.config=file://{conf / 'cassandra.yaml'}",
            f"-Dlogback.configurationFile=file://{conf / 'logback.xml'}",
            f"-Dcassandra.logdir={self.log_path.parent}",
            f"-Dcassandra.storagedir={self.dir}",
            "-Dcassandra-foreground=yes",
            # Without JNA, Cassandra 2.1 skips mlockall and native calls: less memory, no warnings.
            "-Dcassandra.boot_without_jna=true",
            "-Djna.nosys=true",
            *module_openings(self.java, self.settings.cache_dir),
            "-cp",
            f"{conf}:{self.lib}/*",
            "org.apache.cassandra.service.CassandraDaemon",
        ]

    def probe(self) -> str:
        local = self.settings.replace(cassandra_contact_points=("127.0.0.1",))
        with connect(local, connect_timeout=3) as connection:
            return f"Cassandra {release_version(connection)}"

    def hint(self) -> str:
        return (
            f"see {self.log_path}; if its data is damaged, `discorecs down` and remove "
            f"{self.dir / 'data'} (it is local test data)"
        )

    def port_setting_hint(self, port: int) -> str:
        if port == self.settings.cassandra_storage_port:
            return "set DISCORECS_CASSANDRA_STORAGE_PORT to another port"
        return "set DISCORECS_CASSANDRA_PORT to another port"


def module_openings(java: Java, cache_dir: Path) -> list[str]:
    """``--add-opens``/``--add-exports`` for every package of the modules Cassandra 2.1 uses.

    Generated from ``java --describe-module`` (so it matches the JDK at hand) and cached per
    JDK version, since it takes a few JVM starts to build.
    """
    cache = cache_dir / f"java-{java.version}-cassandra-openings.json"
    if cache.exists():
        return list(json.loads(cache.read_text()))
    flags: list[str] = []
    for module in _OPENED_MODULES:
        described = subprocess.run(
            [java.path, "--describe-module", module], capture_output=True, text=True, check=True
        ).stdout
        packages = sorted(
            set(re.findall(r"^(?:exports|contains|qualified exports) (\S+)", described, re.M))
        )
        for package in packages:
            flags.append(f"--add-opens={module}/{package}=ALL-UNNAMED")
            flags.append(f"--add-exports={module}/{package}=ALL-UNNAMED")
    cache.parent.mkdir(parents=True, exist_ok=True)
    cache.write_text(json.dumps(flags))
    return flags
