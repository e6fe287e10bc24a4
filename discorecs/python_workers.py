"""Python's cyclic garbage collector in Spark's Python worker processes.

PySpark reuses a worker process for task after task, and after each task its daemon runs a
full ``gc.collect()``, which walks every container object the process holds. By its second
task a worker holds some hundred thousand of them that live as long as it does (pyarrow,
pandas, the Cassandra driver and kafka-python imported, a cluster connection open), so each
of those collections costs tens of milliseconds of CPU, several times per micro-batch
whatever its size, on cores the whole pipeline shares.

:func:`task_started` moves the objects alive when a task starts into the collector's
permanent generation (``gc.freeze``), which collections skip; it is called at the start of
each of the stream's Python tasks. :func:`collector_paused` turns the collector off while a
task allocates heavily.
"""

from __future__ import annotations

import gc
import sys
from collections.abc import Iterator
from contextlib import contextmanager

_modules_at_freeze = 0


def task_started() -> None:
    """Freeze what the worker holds as a task starts, if it has imported modules since it last
    did (the first task of each kind imports its libraries and opens its connections).

    When a task starts, the daemon has just collected the last task's garbage, so what is
    left is what the process keeps: its modules, connections and caches, plus the task's own
    function and broadcast handles. A frozen object is still freed when its last reference
    goes; only a frozen object that ends up in a reference cycle is never reclaimed, which is
    why the freeze happens a handful of times per process (when its modules change), not at
    every task: whatever it can leak is bounded and small."""
    global _modules_at_freeze
    loaded = len(sys.modules)
    if loaded != _modules_at_freeze:
        gc.freeze()
        _modules_at_freeze = loaded


@contextmanager
def collector_paused() -> Iterator[None]:
    """Python's cyclic garbage collector off for the block. The stream's apply pass allocates
    tuples and dicts by the hundred thousand while the worker holds its live copy (every
    touched user's entry), so the collector would keep re-scanning that copy, a large share of the
    pass's Python time. Most of what the pass allocates is freed by reference counting;
    the few cycles it leaves (the Cassandra driver's futures) are collected after the task
    (see the module docstring)."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()
