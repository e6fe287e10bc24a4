"""Benchmark: the speed layer on local three-node clusters while a Cassandra node and then a
Kafka broker are killed (SIGKILL) and restarted in the middle of the window.

Three brokers and three Cassandra 5.0 nodes on 127.0.0.1-3 (`discorecs up --nodes 3`, on free
ports in a home of its own), topics with three replicas needing two per write, a keyspace with
three replicas, LOCAL_QUORUM; both producers at 2,500 events/s each (5,000 offered), the
stream, and the site answering a steady trickle of API requests. Timeline after the warm-up:
the Cassandra node 127.0.0.3 is killed, restarted 30 s later; then the broker that leads the
most event partitions is killed, restarted 30 s later.

Reports, per fault: the applied rate (events/s durably in Cassandra, from the stream's own
progress rows) in the 30 s before it, while the process is down, and in the 30 s after its
restart, and how long after the kill and after the restart the applied rate was back at the
offered rate (the end of the first whole 10 s window after it that applied >= 90 % of what
was offered: 10 s at best); the longest and the p99
event-time-to-Cassandra latency of the window; failed producer sends and failed site
requests; events produced (acknowledged), applied, dead-lettered, lost and doubled (Kafka
records beyond the sends, event ids twice).
Target: nothing lost, nothing doubled, back to the offered rate within 30 s of each fault.

    .venv/bin/python -m bench.faults [--rate 2500] [--warmup 60] [--down 30]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import tempfile
import threading
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import pyarrow.dataset as ds

from bench.common import free_port, write_results
from bench.stream import (
    latencies_ms,
    print_micro_batches,
    produce,
    progress_rows,
    start_with_users,
)
from discorecs import paths, tables
from discorecs.cassandra import connect
from discorecs.services.base import LocalService
from discorecs.services.jobs import StreamJob
from discorecs.services.manager import LocalServices
from discorecs.services.web import WebSite
from discorecs.settings import LOCAL_NODE_HOSTS, Settings, cluster_defaults, load_settings
from kafka_cluster_scripts.topics import partition_leaders, records_in_topics

DEFAULT_RATE = 2_500.0  # events/s per producer: 5,000 offered in all
RECOVERED_SHARE = 0.9  # of the offered rate, over a sliding window of RECOVERY_WINDOW seconds
RECOVERY_WINDOW = 10.0
TARGET_RECOVERY_SECONDS = 30.0
RESTART_ALLOWANCE = 60.0  # seconds a restarted process may take to answer


class SiteRequests:
    """A steady trickle of API requests to the site (one every 50 ms), answers counted."""

    def __init__(self, port: int, users: int) -> None:
        self.port, self.users = port, users
        self.ok = 0
        self.failed: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        n = 0
        while not self._stop.is_set():
            n += 1
            url = f"http://127.0.0.1:{self.port}/api/users/{1 + (n * 7919) % self.users}"
            try:
                with urllib.request.urlopen(url, timeout=30):
                    self.ok += 1
            except (urllib.error.URLError, OSError) as error:
                self.failed.append(f"{datetime.now(UTC):%H:%M:%S} {url}: {error}")
            time.sleep(0.05)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(60)


def applied_per_second(rows: list, since: datetime, until: datetime) -> np.ndarray:
    """Events applied in each second of [since, until) (each micro-batch counted at its end)."""
    seconds = int((until - since).total_seconds())
    counts = np.zeros(max(seconds, 1))
    for row in rows:
        at = int((row.processed_at.replace(tzinfo=UTC) - since).total_seconds())
        if 0 <= at < seconds:
            counts[at] += row.input_rows
    return counts


def fault_figures(
    rows: list, start: datetime, killed: datetime, restarted: datetime, offered: float
) -> dict:
    """The applied rate before, during and after one fault, and when it was back."""
    per_second = applied_per_second(rows, start, restarted + timedelta(seconds=60))

    def rate(since: datetime, until: datetime) -> float:
        a, b = (int((t - start).total_seconds()) for t in (since, until))
        return float(per_second[max(a, 0) : b].sum() / max(b - a, 1))

    def back_after(moment: datetime) -> int | None:
        """Seconds from ``moment`` until a sliding window applied >= 90 % of the offered rate."""
        at, window = int((moment - start).total_seconds()), int(RECOVERY_WINDOW)
        for t in range(at + window, len(per_second) + 1):
            if per_second[t - window : t].sum() >= RECOVERED_SHARE * offered * window:
                return t - at
        return None

    return {
        "killed_at": killed.isoformat(timespec="seconds"),
        "restarted_at": restarted.isoformat(timespec="seconds"),
        "applied_per_second_30_s_before": rate(killed - timedelta(seconds=30), killed),
        "applied_per_second_while_down": rate(killed, restarted),
        "applied_per_second_30_s_after_restart": rate(restarted, restarted + timedelta(seconds=30)),
        "back_to_offered_rate_after_seconds": back_after(killed),
        "back_to_offered_rate_after_restart_seconds": back_after(restarted),
    }


def drain(settings: Settings, produced: int, stalled_after: float = 120.0) -> bool:
    """Wait until the stream has taken every event produced, for as long as it makes
    progress; False if it stopped short (what it has not taken then counts as lost)."""
    taken, last_progress = -1, time.monotonic()
    while taken < produced:
        now_taken = sum(r.input_rows for r in progress_rows(settings))
        if now_taken > taken:
            taken, last_progress = now_taken, time.monotonic()
        elif time.monotonic() - last_progress > stalled_after:
            return False
        time.sleep(2)
    return True


def sigkill(service: LocalService) -> datetime:
    record = service.record()
    assert record is not None, f"{service.name} is not running"
    os.killpg(record.pid, signal.SIGKILL)
    while service.record() is not None:
        time.sleep(0.1)
    return datetime.now(UTC)


def cluster_settings(work: Path) -> Settings:
    """Three local nodes of each on ports free at every node's address, in ``work``."""

    def port() -> str:
        return str(free_port(LOCAL_NODE_HOSTS))

    base = load_settings(
        {
            "DISCORECS_HOME": str(work / "home"),
            "DISCORECS_DATA_ROOT": str(work / "data"),
            "DISCORECS_KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{port()}",
            "DISCORECS_KAFKA_CONTROLLER_PORT": port(),
            "DISCORECS_KAFKA_MAX_HEAP": "512m",
            "DISCORECS_CASSANDRA_PORT": port(),
            "DISCORECS_CASSANDRA_STORAGE_PORT": port(),
            "DISCORECS_CASSANDRA_MAX_HEAP": "1G",
            "DISCORECS_SPARK_MASTER": "local[2]",
            "DISCORECS_SPARK_DRIVER_MEMORY": "2g",
            "DISCORECS_SPARK_SHUFFLE_PARTITIONS": "2",
            "DISCORECS_STREAM_TRIGGER_SECONDS": "1",
            "DISCORECS_WEB_PORT": str(free_port()),
        }
    )
    return cluster_defaults(base.replace(local_nodes=3))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=DEFAULT_RATE, help="events/s per producer")
    parser.add_argument(
        "--warmup",
        type=float,
        default=150,
        help="seconds before the first fault (the stream's first micro-batch reads the "
        "collection of every user it meets, and the backlog that leaves must drain)",
    )
    parser.add_argument("--down", type=float, default=30, help="seconds a process stays down")
    parser.add_argument("--settle", type=float, default=40, help="seconds after each restart")
    parser.add_argument("--users", type=int, default=20_000)
    parser.add_argument("--active-users", type=int, default=5_000)
    parser.add_argument("--releases", type=int, default=200_000)
    args = parser.parse_args()
    offered = 2 * args.rate

    work = Path(tempfile.mkdtemp(prefix="discorecs-bench-faults-"))
    settings = cluster_settings(work)
    services = LocalServices(settings)
    stream, site = StreamJob(settings), WebSite(settings)
    requests = SiteRequests(settings.web_port, args.users)
    try:
        print("starting three brokers and three Cassandra nodes ...", flush=True)
        start_with_users(settings, services, args.releases, args.users, partitions=6)
        stream.start()
        site.start()
        requests.start()

        # A restart takes a while too (a Cassandra node ~20-40 s): the producers run on
        # until the last fault has settled.
        total = args.warmup + 2 * (args.down + RESTART_ALLOWANCE + args.settle)
        print(f"producing {offered:,.0f} events/s for {total:.0f} s ...", flush=True)
        started = datetime.now(UTC)
        producers = produce(settings, args.rate, total, args.active_users)
        faults = {}
        node = services.cassandra_nodes[2]
        leader_id, _ = partition_leaders(settings).most_common(1)[0]
        broker = services.brokers[leader_id - 1]
        time.sleep(args.warmup)
        for name, service in (("cassandra node", node), ("kafka broker", broker)):
            killed = sigkill(service)
            print(f"  {killed:%H:%M:%S} killed {service.name}", flush=True)
            time.sleep(args.down)
            service.start()
            restarted = datetime.now(UTC)
            print(f"  {restarted:%H:%M:%S} {service.name} answers again", flush=True)
            faults[name] = (service.name, killed, restarted)
            time.sleep(args.settle)
        summaries = {kind: json.loads(p.communicate()[0]) for kind, p in producers.items()}
        window_end = datetime.now(UTC)
        produced = sum(s["sent"] for s in summaries.values())
        failed_sends = sum(s["failed"] for s in summaries.values())
        print("producers done; waiting for the stream to drain ...", flush=True)
        drained = drain(settings, produced)
        requests.stop()

        rows = progress_rows(settings)
        log = ds.dataset(
            paths.event_log(settings.data_root), format="parquet", partitioning="hive"
        ).to_table(columns=["event_id"])
        distinct = len(pc.unique(log["event_id"]))
        with connect(settings, keyspace=settings.cassandra_keyspace) as connection:
            dead = sum(
                connection.session.execute(
                    f"SELECT COUNT(*) FROM {tables.DEAD_LETTERS} WHERE day = %s",
                    (day.strftime("%Y-%m-%d"),),
                ).one()[0]
                for day in {started.date(), datetime.now(UTC).date()}
            )
        in_kafka = records_in_topics(settings)
        latency = latencies_ms(settings, rows, started, window_end)
        restarts = stream.log_path.read_text(errors="replace").count(
            "restarting from the checkpoint"
        )
        per_fault = {
            name: {"process": process, **fault_figures(rows, started, killed, back, offered)}
            for name, (process, killed, back) in faults.items()
        }
        lost = produced - distinct - dead
        doubled = (in_kafka - produced) + (log.num_rows - distinct)
        figures = {
            "offered_events_per_second": offered,
            "faults": per_fault,
            "latency_ms": {
                "max": float(latency.max()) if len(latency) else None,
                "p99": float(np.percentile(latency, 99)) if len(latency) else None,
                "p50": float(np.percentile(latency, 50)) if len(latency) else None,
                "samples": len(latency),
            },
            "failed_requests": {
                "producer_sends": failed_sends,
                "site_requests": len(requests.failed),
                "site_requests_ok": requests.ok,
                "site_failures_first": requests.failed[:5],
            },
            "stream_restarts": restarts,
            "stream_drained": drained,
            "events": {
                "produced_acked": produced,
                "records_in_kafka": in_kafka,
                "applied": distinct,
                "dead_lettered": dead,
                "lost": lost,
                "doubled": doubled,
            },
            "users": args.users,
            "active_users": args.active_users,
            "heaps": {"cassandra_each": "1G", "broker_each": "512m", "spark_driver": "2g"},
            "target": "nothing lost, nothing doubled, back to the offered rate within 30 s of "
            "each fault",
        }
        met = (
            lost == 0
            and doubled == 0
            and all(
                (f[key] or 10**9) <= TARGET_RECOVERY_SECONDS
                for f in per_fault.values()
                for key in (
                    "back_to_offered_rate_after_seconds",
                    "back_to_offered_rate_after_restart_seconds",
                )
            )
        )
        figures["target_met"] = met
        # The run at the rate is the headline; a run at another rate keeps its own file.
        name = "faults" if args.rate == DEFAULT_RATE else f"faults_at_{offered:.0f}_per_s"
        path = write_results(
            name,
            figures,
            headline={
                "back_after_seconds": {
                    k: f["back_to_offered_rate_after_seconds"] for k, f in per_fault.items()
                },
                "lost": lost,
                "doubled": doubled,
                "max_latency_ms": figures["latency_ms"]["max"],
                "failed_site_requests": len(requests.failed),
            },
        )
        shown = ("faults", "latency_ms", "failed_requests", "stream_restarts", "events")
        print(json.dumps({k: figures[k] for k in (*shown, "target_met")}, indent=2))
        print(f"written to {path}")
    finally:
        requests.stop()
        site.stop()
        stream.stop()
        print_micro_batches(stream)
        services.down()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
