"""The local Cassandra nodes: Apache Cassandra 5.0 from Maven Central, each in a JVM of its
own (one node, or three on 127.0.0.1-3 forming one ring in one datacenter).

Cassandra's jar ships neither start scripts nor configuration, so they are written here: the
JVM options of Cassandra's own ``conf/jvm-server.options`` and ``conf/jvm17-server.options``
(G1, the module openings and exports Cassandra needs on Java 17, netty's flags), the jamm
agent that measures memtables, a ``cassandra.yaml`` bound to 127.0.0.1 with its data under
the run folder, and a logback configuration. JMX is off: nothing listens beyond the CQL and
inter-node ports.
"""

from __future__ import annotations

from pathlib import Path

from discorecs import stack
from discorecs.cassandra import connect, release_version
from discorecs.services.base import LocalNode, ServiceError, ensure_dir, loopback
from discorecs.services.install import InstallError, find_java
from discorecs.services.maven import CASSANDRA, ensure_bundle
from discorecs.settings import LOCAL_NODE_HOSTS

# A node's cassandra.yaml, locally and on a cluster node (discorecs.services.node_files).
CASSANDRA_YAML = """\
cluster_name: {cluster_name}
num_tokens: 16
partitioner: org.apache.cassandra.dht.Murmur3Partitioner
data_file_directories: [{data}]
commitlog_directory: {commitlog}
saved_caches_directory: {saved_caches}
hints_directory: {hints}
cdc_raw_directory: {cdc_raw}
commitlog_sync: periodic
commitlog_sync_period: 10000ms
# auto: direct I/O for the (uncompressed) commit log where the filesystem allows it, else the
# memory-mapped segments of before. Measured on one node taking 60,000 rows of ~6 KB: ~15 %
# less of the node's CPU (without a commit log at all it took half as much).
commitlog_disk_access_mode: auto
seed_provider:
  - class_name: org.apache.cassandra.locator.SimpleSeedProvider
    parameters:
      - seeds: "{seeds}"
listen_address: {host}
rpc_address: {host}
storage_port: {storage_port}
native_transport_port: {native_port}
start_native_transport: true
endpoint_snitch: {snitch}
storage_compatibility_mode: NONE
auto_snapshot: false
hinted_handoff_enabled: true
concurrent_reads: 8
concurrent_writes: 16
concurrent_counter_writes: 4
read_request_timeout: 10000ms
range_request_timeout: 10000ms
write_request_timeout: 5000ms
request_timeout: 20000ms
# Batches up to 320 KiB (Cassandra's default refuses 50 KiB): every batch the project sends
# holds rows that share their replicas, and a nightly load of a million rows costs the node
# mostly per request. Clients size their batches by what the node reports
# (discorecs.cassandra.CassandraConnection.batch_bytes), so a node left at the default works.
batch_size_warn_threshold: 320KiB
batch_size_fail_threshold: 320KiB
compaction_throughput: 64MiB/s
# Cassandra 5.0's storage engine: trie memtables (less heap and GC per write than the skip
# lists before them) and trie-indexed (BTI) sstables; both need storage_compatibility_mode
# NONE, which a node created by 5.0 has.
memtable:
  configurations:
    skiplist:
      class_name: SkipListMemtable
    trie:
      class_name: TrieMemtable
    default:
      inherits: trie
memtable_allocation_type: offheap_objects
# As much memtable space off the heap as the heap itself (Cassandra's default is a quarter of
# it): a nightly run's rows arrive as one load of gigabytes, and fewer, larger flushes leave
# fewer SSTables to compact. Measured on one node (2 GB heap) taking 300,000 rows of ~5 KB:
# 40 s of the node's CPU against 54 s with the default (17 s of it compaction after the load).
memtable_offheap_space: {memtable_space}
sstable:
  selected_format: bti
"""

LOGBACK = """\
<configuration scan="false">
  <appender name="STDOUT" class="ch.qos.logback.core.ConsoleAppender">
    <encoder><pattern>%-5level [%thread] %date{ISO8601} %F:%L - %msg%n</pattern></encoder>
  </appender>
  <root level="INFO"><appender-ref ref="STDOUT" /></root>
</configuration>
"""

# conf/jvm-server.options (the general part; -XX:+AlwaysPreTouch is left out: it touches the
# whole heap before the node starts, seconds of a test run for nothing on a laptop) and
# conf/jvm17-server.options of Cassandra 5.0.
JVM_SERVER_OPTIONS = (
    "-ea",
    "-da:net.openhft...",
    "-XX:+UseThreadPriorities",
    "-XX:+HeapDumpOnOutOfMemoryError",
    "-XX:+CrashOnOutOfMemoryError",  # cassandra-env.sh adds it: never run on after an OOM
    "-Xss256k",
    "-XX:+UseTLAB",
    "-XX:+ResizeTLAB",
    "-XX:+UseNUMA",
    "-XX:+PerfDisableSharedMem",
    "-Djava.net.preferIPv4Stack=true",
)
JVM17_SERVER_OPTIONS = (
    "-XX:+UseG1GC",
    "-XX:+ParallelRefProcEnabled",
    "-XX:MaxTenuringThreshold=1",
    "-XX:G1HeapRegionSize=16m",
    "-XX:G1RSetUpdatingPauseTimePercent=5",
    "-XX:MaxGCPauseMillis=300",
    "-XX:InitiatingHeapOccupancyPercent=70",
    "-Djdk.attach.allowAttachSelf=true",
    "--add-exports=java.base/jdk.internal.misc=ALL-UNNAMED",
    "--add-exports=java.management.rmi/com.sun.jmx.remote.internal.rmi=ALL-UNNAMED",
    "--add-exports=java.rmi/sun.rmi.registry=ALL-UNNAMED",
    "--add-exports=java.rmi/sun.rmi.server=ALL-UNNAMED",
    "--add-exports=java.sql/java.sql=ALL-UNNAMED",
    "--add-exports=java.base/java.lang.ref=ALL-UNNAMED",
    "--add-exports=jdk.unsupported/sun.misc=ALL-UNNAMED",
    "--add-exports=jdk.compiler/com.sun.tools.javac.file=ALL-UNNAMED",
    "--add-exports=jdk.attach/sun.tools.attach=ALL-UNNAMED",
    "--add-opens=java.base/java.lang.module=ALL-UNNAMED",
    "--add-opens=java.base/jdk.internal.loader=ALL-UNNAMED",
    "--add-opens=java.base/jdk.internal.ref=ALL-UNNAMED",
    "--add-opens=java.base/jdk.internal.reflect=ALL-UNNAMED",
    "--add-opens=java.base/jdk.internal.math=ALL-UNNAMED",
    "--add-opens=java.base/jdk.internal.module=ALL-UNNAMED",
    "--add-opens=java.base/jdk.internal.util.jar=ALL-UNNAMED",
    "--add-opens=jdk.management/com.sun.management.internal=ALL-UNNAMED",
    "--add-opens=java.base/sun.nio.ch=ALL-UNNAMED",
    "--add-opens=java.base/java.io=ALL-UNNAMED",
    "--add-opens=java.base/java.lang.reflect=ALL-UNNAMED",
    "--add-opens=jdk.compiler/com.sun.tools.javac=ALL-UNNAMED",
    "--add-opens=java.base/java.lang=ALL-UNNAMED",
    "--add-opens=java.base/java.util=ALL-UNNAMED",
    "-Dio.netty.tryReflectionSetAccessible=true",
    "-Dio.netty.allocator.useCacheForAllThreads=true",
    "-Dio.netty.allocator.maxOrder=11",
)
# Local nodes answer gossip at once: skip the waits meant for a ring spread over a network.
FAST_LOCAL_START = (
    "-Dcassandra.skip_wait_for_gossip_to_settle=0",
    "-Dcassandra.ring_delay_ms=1000",
    "-Dcassandra.load_ring_state=false",
)


def memtable_space(heap: str) -> str:
    """``memtable_offheap_space`` for a node whose heap is ``heap`` (``512m``, ``2g``): the same
    amount, in cassandra.yaml's units."""
    amount, unit = heap[:-1], heap[-1:].lower()
    if not amount.isdigit() or unit not in ("m", "g"):
        raise ValueError(f"a node's heap is given as 512m or 8g, not {heap!r}")
    return f"{int(amount) * (1024 if unit == 'g' else 1)}MiB"


def daemon_arguments(
    *,
    heap: str,
    jamm: Path | str,
    conf: Path | str,
    lib: Path | str,
    log_dir: Path | str,
    storage_dir: Path | str,
    extra: tuple[str, ...] = (),
) -> list[str]:
    """The JVM's arguments for a node (everything after ``java``), locally and on a cluster
    node; ``conf`` holds cassandra.yaml and logback.xml."""
    return [
        f"-Xms{heap}",
        f"-Xmx{heap}",
        *JVM_SERVER_OPTIONS,
        *JVM17_SERVER_OPTIONS,
        f"-javaagent:{jamm}",
        *extra,
        f"-Dcassandra.config=file://{conf}/cassandra.yaml",
        f"-Dlogback.configurationFile=file://{conf}/logback.xml",
        f"-Dcassandra.logdir={log_dir}",
        f"-Dcassandra.storagedir={storage_dir}",
        "-Dcassandra-foreground=yes",
        "-cp",
        f"{conf}:{lib}/*",
        "org.apache.cassandra.service.CassandraDaemon",
    ]


class CassandraNode(LocalNode):
    """A local Cassandra node. Every node of a local cluster is a seed: a new empty ring then
    forms without streaming (no node bootstraps), and a node restarted after a fault finds the
    others whichever it is."""

    kind = "cassandra"
    kind_key = "cassandra"
    start_timeout = 150.0
    # SIGTERM drains the node (memtables flushed), so the next start replays no commit log.
    stop_timeout = 60.0

    def ports(self) -> tuple[int, ...]:
        hosts = self.settings.cassandra_contact_points
        if not any(loopback(host) or host in LOCAL_NODE_HOSTS for host in hosts):
            raise ServiceError(
                f"{self.name}: DISCORECS_CASSANDRA_CONTACT_POINTS is {','.join(hosts)}, not this "
                "machine; `discorecs up` only starts nodes on 127.0.0.1-3"
            )
        return (self.settings.cassandra_port, self.settings.cassandra_storage_port)

    def install(self) -> None:
        self.java = find_java(newest=stack.CASSANDRA_NEWEST_JAVA, service=self.name)
        self.lib = ensure_bundle(
            CASSANDRA, self.settings.cache_dir, repository=self.settings.maven_repository
        )
        self.jamm = next(self.lib.glob("jamm-*.jar"), None)
        if self.jamm is None:
            raise InstallError(f"{self.name}: {self.lib} has no jamm jar; remove it and retry")

    def prepare(self) -> None:
        conf = ensure_dir(self.dir / "conf")
        (conf / "cassandra.yaml").write_text(
            CASSANDRA_YAML.format(
                cluster_name="discorecs-local",
                snitch="SimpleSnitch",
                data=ensure_dir(self.dir / "data"),
                commitlog=ensure_dir(self.dir / "commitlog"),
                saved_caches=ensure_dir(self.dir / "saved_caches"),
                hints=ensure_dir(self.dir / "hints"),
                cdc_raw=ensure_dir(self.dir / "cdc_raw"),
                storage_port=self.settings.cassandra_storage_port,
                host=self.host,
                seeds=",".join(
                    f"{host}:{self.settings.cassandra_storage_port}"
                    for host in LOCAL_NODE_HOSTS[: self.nodes]
                ),
                native_port=self.settings.cassandra_port,
                memtable_space=memtable_space(self.settings.cassandra_max_heap),
            )
        )
        (conf / "logback.xml").write_text(LOGBACK)

    def command(self) -> list[str]:
        return [
            self.java.path,
            *daemon_arguments(
                heap=self.settings.cassandra_max_heap,
                jamm=self.jamm,
                conf=self.dir / "conf",
                lib=self.lib,
                log_dir=self.log_path.parent,
                storage_dir=self.dir,
                extra=FAST_LOCAL_START,
            ),
        ]

    def probe(self) -> str:
        """A CQL query answered by this node itself."""
        with connect(self.settings, connect_timeout=3, hosts=(self.host,)) as connection:
            return f"Apache Cassandra {release_version(connection)}"

    def hint(self) -> str:
        return (
            f"see {self.log_path}; if its data is damaged, `discorecs down` and remove "
            f"{self.dir / 'data'} (it is local test data)"
        )

    def port_setting_hint(self, port: int) -> str:
        if port == self.settings.cassandra_storage_port:
            return "set DISCORECS_CASSANDRA_STORAGE_PORT to another port"
        return "set DISCORECS_CASSANDRA_PORT to another port"
