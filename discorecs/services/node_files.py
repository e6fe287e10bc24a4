"""The files a cluster node's Kafka broker or Cassandra node runs with, rendered from the
templates and JVM arguments the local services use, so a cluster runs what a laptop runs.

``deployment/deploy.sh`` runs this on the operator's machine and sends its output, a shell
script that writes the files, to the node ahead of the node's own script (``files`` does the
same for files as they are, such as the systemd units)::

    python -m discorecs.services.node_files kafka --node-id 1 --host 10.0.0.5 \\
        --voters 1@10.0.0.5:9093,2@10.0.0.6:9093 --partitions 24 --replication 3 --heap 6g
    python -m discorecs.services.node_files cassandra --host 10.0.1.7 \\
        --seeds 10.0.1.7,10.0.1.8 --cluster-name discorecs --datacenter us-east-1 --heap 8G

Where things live on a node (the systemd units in ``deployment/units/`` name the same paths):
configuration under ``/etc/discorecs/<service>/``, data under ``/var/lib/discorecs/<service>/``,
jars under ``/opt/discorecs/jvm/<service>/`` (installed from the lock on the node itself).
The JVM's arguments go to a file that ``java @file`` reads, so a unit's command line is fixed.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping
from pathlib import Path, PurePosixPath

from discorecs.services.broker import LOG4J2, SERVER_PROPERTIES, broker_arguments
from discorecs.services.cassandra_node import (
    CASSANDRA_YAML,
    LOGBACK,
    daemon_arguments,
    memtable_space,
)
from discorecs.services.maven import CASSANDRA, read_lock

CONF = PurePosixPath("/etc/discorecs")
DATA = PurePosixPath("/var/lib/discorecs")
JARS = PurePosixPath("/opt/discorecs/jvm")
LOGS = PurePosixPath("/var/log/discorecs")

KAFKA_PORT = 9092
KAFKA_CONTROLLER_PORT = 9093
CASSANDRA_PORT = 9042
CASSANDRA_STORAGE_PORT = 7000

_END = "DISCORECS_FILE_END"


def kafka_files(
    *,
    node_id: int,
    host: str,
    voters: str,
    partitions: int,
    replication: int,
    heap: str,
) -> dict[PurePosixPath, str]:
    """server.properties, the logging configuration and the JVM's arguments of one broker
    (and KRaft controller) listening on ``host``."""
    conf = CONF / "kafka"
    properties = SERVER_PROPERTIES.format(
        node_id=node_id,
        voters=voters,
        host=host,
        port=KAFKA_PORT,
        controller_port=KAFKA_CONTROLLER_PORT,
        data=DATA / "kafka",
        replication=replication,
        min_isr=max(1, replication - 1),
        partitions=partitions,
        network_threads=3,
        io_threads=8,
    )
    arguments = broker_arguments(
        heap=heap,
        log4j2=conf / "log4j2.yaml",
        lib=JARS / "kafka",
        properties=conf / "server.properties",
    )
    return {
        conf / "server.properties": properties,
        conf / "log4j2.yaml": LOG4J2,
        conf / "jvm.args": "\n".join(arguments) + "\n",
    }


def cassandra_files(
    *, host: str, seeds: list[str], cluster_name: str, datacenter: str, heap: str
) -> dict[PurePosixPath, str]:
    """cassandra.yaml, the datacenter and rack, the logging configuration and the JVM's
    arguments of one node listening on ``host``."""
    conf = CONF / "cassandra"
    data = DATA / "cassandra"
    yaml = CASSANDRA_YAML.format(
        cluster_name=cluster_name,
        snitch="GossipingPropertyFileSnitch",
        data=data / "data",
        commitlog=data / "commitlog",
        saved_caches=data / "saved_caches",
        hints=data / "hints",
        cdc_raw=data / "cdc_raw",
        storage_port=CASSANDRA_STORAGE_PORT,
        host=host,
        seeds=",".join(f"{seed}:{CASSANDRA_STORAGE_PORT}" for seed in seeds),
        native_port=CASSANDRA_PORT,
        memtable_space=memtable_space(heap),
    )
    jamm = next(jar for jar in read_lock(CASSANDRA) if jar.artifact == "jamm")
    arguments = daemon_arguments(
        heap=heap,
        jamm=JARS / "cassandra" / jamm.filename,
        conf=conf,
        lib=JARS / "cassandra",
        log_dir=LOGS,
        storage_dir=data,
    )
    return {
        conf / "cassandra.yaml": yaml,
        conf / "cassandra-rackdc.properties": f"dc={datacenter}\nrack=rack1\n",
        conf / "logback.xml": LOGBACK,
        conf / "jvm.args": "\n".join(arguments) + "\n",
    }


def as_shell(files: Mapping[PurePosixPath, str]) -> str:
    """A shell script that writes each file (its folder created), byte for byte."""
    lines = []
    for path, text in files.items():
        if _END in text.splitlines():
            raise ValueError(f"{path} contains the line {_END}")
        lines += [
            f"mkdir -p '{path.parent}'",
            f"cat > '{path}' <<'{_END}'",
            text.rstrip("\n"),
            _END,
        ]
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m discorecs.services.node_files")
    services = parser.add_subparsers(dest="service", required=True)
    kafka = services.add_parser("kafka")
    kafka.add_argument("--node-id", type=int, required=True)
    kafka.add_argument("--host", required=True)
    kafka.add_argument("--voters", required=True, help="1@host:9093,2@host:9093,...")
    kafka.add_argument("--partitions", type=int, required=True)
    kafka.add_argument("--replication", type=int, required=True)
    kafka.add_argument("--heap", required=True)
    cassandra = services.add_parser("cassandra")
    cassandra.add_argument("--host", required=True)
    cassandra.add_argument("--seeds", required=True, help="host,host")
    cassandra.add_argument("--cluster-name", required=True)
    cassandra.add_argument("--datacenter", required=True)
    cassandra.add_argument("--heap", required=True)
    copies = services.add_parser("files", help="local files, as DEST=SOURCE pairs")
    copies.add_argument("pairs", nargs="+", metavar="DEST=SOURCE")
    args = parser.parse_args(argv)
    if args.service == "files":
        files = {}
        for pair in args.pairs:
            dest, _, source = pair.partition("=")
            files[PurePosixPath(dest)] = Path(source).read_text()
    elif args.service == "kafka":
        files = kafka_files(
            node_id=args.node_id,
            host=args.host,
            voters=args.voters,
            partitions=args.partitions,
            replication=args.replication,
            heap=args.heap,
        )
    else:
        files = cassandra_files(
            host=args.host,
            seeds=args.seeds.split(","),
            cluster_name=args.cluster_name,
            datacenter=args.datacenter,
            heap=args.heap,
        )
    sys.stdout.write(as_shell(files))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
