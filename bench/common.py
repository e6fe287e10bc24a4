"""Shared helpers for the benchmarks: process-tree memory sampling and JSON results."""

from __future__ import annotations

import json
import os
import platform
import shutil
import statistics
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from discorecs import stack
from discorecs.services.process import free_port  # noqa: F401 (the benchmarks' import)

RESULTS = Path(__file__).resolve().parent / "results"
PAGE = os.sysconf("SC_PAGE_SIZE")


def _children(pid: int) -> list[int]:
    """The children of every thread of ``pid``: a JVM starts its Python workers from other
    threads than its main one, and each thread lists only the children it started."""
    found = []
    try:
        threads = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return []
    for thread in threads:
        try:
            found.extend(int(child) for child in (thread / "children").read_text().split())
        except OSError:
            continue
    return found


def tree_rss_bytes(pid: int | None = None) -> int:
    """Resident memory of a process and all its descendants."""
    pid = pid or os.getpid()
    total, stack = 0, [pid]
    while stack:
        current = stack.pop()
        try:
            total += int(Path(f"/proc/{current}/statm").read_text().split()[1]) * PAGE
        except OSError:
            continue
        stack.extend(_children(current))
    return total


TICKS = os.sysconf("SC_CLK_TCK")


def tree_cpu_seconds(pid: int) -> float | None:
    """CPU time (user + system) of a process and its descendants, including children they
    have already reaped, in seconds; None once the process is gone."""
    total, stack = 0, [pid]
    while stack:
        current = stack.pop()
        try:
            stat = Path(f"/proc/{current}/stat").read_text()
        except OSError:
            if current == pid:
                return None
            continue
        # Fields after the parenthesised command: utime, stime, cutime, cstime are 14-17.
        fields = stat[stat.rindex(")") + 2 :].split()
        total += sum(int(f) for f in fields[11:15])
        stack.extend(_children(current))
    return total / TICKS


MACHINE = "whole machine"


def machine_busy_seconds() -> float:
    """CPU seconds all cores spent busy (not idle or waiting on I/O) since boot."""
    fields = [int(f) for f in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle, iowait = fields[3], fields[4]
    return (sum(fields[:8]) - idle - iowait) / TICKS


class CpuShares:
    """Average cores each named process tree kept busy between ``start()`` and ``stop()``.

    Sampled every ``interval`` seconds in a thread, so a tree that exits before ``stop()``
    (a producer that has finished) still counts up to its last sample. ``shares()`` also
    gives the whole machine's busy cores, so a benchmark can say where the cores went, not
    only how fast the whole was.
    """

    def __init__(self, pids: dict[str, int], interval: float = 0.5) -> None:
        self.pids = pids
        self.interval = interval
        self._first: dict[str, float] = {}
        self._last: dict[str, float] = {}
        self._started_at = self._stopped_at = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> None:
        sample = {name: tree_cpu_seconds(pid) for name, pid in self.pids.items()}
        sample[MACHINE] = machine_busy_seconds()
        for name, seconds in sample.items():
            if seconds is not None:
                self._first.setdefault(name, seconds)
                self._last[name] = seconds

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    def start(self) -> None:
        self._started_at = time.monotonic()
        self._sample()
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()
        self._stopped_at = time.monotonic()

    def shares(self) -> dict[str, float]:
        seconds = self._stopped_at - self._started_at
        if seconds <= 0:
            return {}
        return {
            name: round((self._last[name] - self._first[name]) / seconds, 3) for name in self._first
        }


class PeakMemory:
    """Samples the process tree's RSS every ``interval`` seconds; ``peak`` is the maximum.
    With ``disk`` (a path), also the free space of its file system: ``least_free`` is the
    minimum, what a run left of the disk at its fullest."""

    def __init__(self, interval: float = 0.2, disk: Path | None = None) -> None:
        self.interval = interval
        self.disk = disk
        self.peak = 0
        self.least_free: int | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> None:
        self.peak = max(self.peak, tree_rss_bytes())
        if self.disk is not None:
            free = shutil.disk_usage(self.disk).free
            self.least_free = free if self.least_free is None else min(self.least_free, free)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._sample()
            self._stop.wait(self.interval)

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()


def summary(values: list[float]) -> dict[str, float]:
    """Median and range: these machines are shared and noisy, so one run is not a figure."""
    return {
        "median": statistics.median(values),
        "min": min(values),
        "max": max(values),
        "runs": len(values),
    }


STACK = {
    "kafka": f"Apache Kafka {stack.KAFKA} (KRaft)",
    "cassandra": f"Apache Cassandra {stack.CASSANDRA}",
    "spark": f"pyspark {stack.SPARK}, Spark's Kafka connector",
}
"""What the figures were measured on: a result measured on another stack is kept beside the
new one (``previous_stack``), so a change of stack shows what it changed."""


def write_results(
    name: str, figures: dict[str, Any], headline: dict[str, Any] | None = None
) -> Path:
    """Write ``bench/results/<name>.json``: this run's ``figures``, the stack they were
    measured on, the headline figures of every run on this stack so far (``runs``, to which
    ``headline`` is added), and the last result measured on another stack
    (``previous_stack``, kept as it was)."""
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}.json"
    old = json.loads(path.read_text()) if path.exists() else {}
    same_stack = old.get("stack") == STACK
    if same_stack:
        previous, runs = old.get("previous_stack"), old.get("runs", [])
    else:
        previous = {k: v for k, v in old.items() if k not in ("runs", "previous_stack")} or None
        runs = []
    measured_at = datetime.now(UTC).isoformat(timespec="seconds")
    if headline is not None:
        runs = [*runs, {"measured_at": measured_at, **headline}]
    document = {
        "benchmark": name,
        "measured_at": measured_at,
        "machine": {
            "cores": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "stack": STACK,
        **figures,
        "runs": runs,
        "previous_stack": previous,
    }
    path.write_text(json.dumps(document, indent=2) + "\n")
    return path
