"""Each apply task's copy of its users' live profiles, kept on the executor between
micro-batches, so a user who is active batch after batch is not read back from Cassandra
every time (on two shared cores those reads were the largest part of a small batch).

Why the copy can be trusted: with the same number of tasks, task p of every micro-batch
holds the same users (the source's co-partitioned read tasks, or a shuffle by user into a
fixed number of partitions), and is the only writer of their live rows. When the task has
applied a batch (live rows and every other write done) it saves the profiles it wrote,
tagged with the batch id. The next batch's task p trusts the copy only if it was saved by the
batch just before, so the chain of saves has no gap: in the same Spark application (the copy
lives in its scratch directory, which Spark deletes when the application ends), query and
number of tasks. Anything else (p's previous batch ran on another executor, a restart, a new
checkpoint, another task count) starts again from Cassandra. A copy saved by the batch being
run means the batch is a replay whose live rows are already written.
"""

from __future__ import annotations

import os
import pickle
from enum import Enum
from pathlib import Path

from streaming.live import LiveProfile

KEPT_USERS = 50_000
"""Users a partition's copy keeps at most (the most recently written): what is loaded and
saved every batch. A user evicted, or never seen, is read from Cassandra."""

Entry = tuple[int, bytes]
"""A user's saved profile: (the batch that last wrote their live row, their holdings blob,
genre units and changes, pickled together). Every batch saves a partition's whole copy
(~10,000 users at 10,000 events/s), and a worker that did not save it last loads it whole,
but a batch decodes only the users it touches (a fraction of them): kept as bytes, the copy
pickles and unpickles many times faster than as the decoded tuples and dicts, and only the
touched users pay to be encoded and decoded."""

Kept = dict[int, Entry]
"""user -> their entry."""


def entry(batch_id: int, profile: LiveProfile) -> Entry:
    """What the copy keeps of ``profile``, written by ``batch_id``."""
    saved = (profile.holdings_blob(), profile.genre_units, profile.changes)
    return (batch_id, pickle.dumps(saved, protocol=pickle.HIGHEST_PROTOCOL))


def profile_of(kept: Entry) -> LiveProfile:
    """The profile an entry keeps."""
    return LiveProfile.of_blob(*pickle.loads(kept[1]))


class CopyState(Enum):
    CURRENT = "saved by the batch before: the profiles are those in Cassandra"
    APPLIED = "saved by this batch: a replay, its live rows are written"
    COLD = "no copy that can be trusted"


class LiveCache:
    """The copy of one partition of one query (a file; see the module docstring)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    @classmethod
    def for_task(cls, stream_id: str, partitions: int, partition: int) -> LiveCache:
        """The copy of ``partition`` of ``partitions`` in this executor's scratch directory
        for the Spark application (private to it, deleted when it ends)."""
        from pyspark import SparkFiles

        root = Path(SparkFiles.getRootDirectory())
        return cls(root / "discorecs-live" / f"{stream_id}-{partitions}-{partition}.pickle")

    def load(self, batch_id: int) -> tuple[CopyState, Kept]:
        """What the copy says before ``batch_id`` is applied."""
        try:
            saved_batch, kept = self._read()
        except (OSError, EOFError, pickle.UnpicklingError, ValueError, TypeError):
            return CopyState.COLD, {}
        if saved_batch == batch_id - 1:
            return CopyState.CURRENT, kept
        if saved_batch == batch_id:
            return CopyState.APPLIED, kept
        return CopyState.COLD, {}

    def _read(self) -> tuple[int, Kept]:
        """The file's (batch, entries): from this process's memory when it saved this very
        file (same inode, size and modification time), else unpickled."""
        identity = _identity(self.path.stat())
        remembered = _SAVED.get(self.path)
        if remembered is not None and remembered[0] == identity:
            return remembered[1]
        with self.path.open("rb") as file:
            return pickle.load(file)

    def save(self, batch_id: int, kept: Kept) -> None:
        """Save ``kept`` as the copy after ``batch_id`` (atomically: a task killed while
        saving leaves the previous copy, which the next batch then does not trust)."""
        if len(kept) > KEPT_USERS:
            newest = sorted(kept.items(), key=lambda item: item[1][0], reverse=True)
            kept = dict(newest[:KEPT_USERS])
        self.path.parent.mkdir(parents=True, exist_ok=True)
        partial = self.path.with_name(f"{self.path.name}.{os.getpid()}.partial")
        with partial.open("wb") as file:
            pickle.dump((batch_id, kept), file, protocol=pickle.HIGHEST_PROTOCOL)
        identity = _identity(partial.stat())
        os.replace(partial, self.path)
        _SAVED[self.path] = (identity, (batch_id, kept))


_SAVED: dict[Path, tuple[tuple[int, int, int], tuple[int, Kept]]] = {}
"""The copy each file holds, for the files this process saved last (Spark reuses its Python
workers, so the worker that saved a partition's copy often applies its next batch and need
not unpickle it). Keyed by path; trusted only while the file is the one saved."""


def _identity(stat: os.stat_result) -> tuple[int, int, int]:
    return (stat.st_ino, stat.st_size, stat.st_mtime_ns)
