"""Each apply task's copy of its users' live profiles, kept on the executor between
micro-batches, so a user who is active batch after batch is not read back from Cassandra
every time (on two shared cores those reads were the largest part of a small batch).

Why the copy can be trusted: every micro-batch shuffles its events by user into the same
number of partitions, so partition p always holds the same users, and partition p's task is
the only writer of their live rows. When the task has applied a batch (live rows and every
other write done) it saves the profiles it wrote, tagged with the batch id. The next batch's
task for p trusts the copy only if it was saved by the batch just before, so the chain of
saves has no gap: in the same Spark application (the copy lives in its scratch directory,
which Spark deletes when the application ends), query and number of partitions. Anything
else (p's previous batch ran on another executor, a restart, a new checkpoint) starts again
from Cassandra. A copy saved by the batch being run means the batch is a replay whose live
rows are already written.

The file is a log: a record with the whole copy, then one record per batch with only the
profiles that batch wrote (a third of a partition's users at 10,000 events/s), rewritten whole
every ``COMPACT_AFTER`` batches or when the task cannot append (the copy was not current, or
the file changed since it was read). Pickling the whole copy every batch cost ~70 ms per
partition, whatever the batch's size. A record cut short (a task killed while appending)
makes the whole file untrusted.
"""

from __future__ import annotations

import os
import pickle
from enum import Enum
from pathlib import Path

from streaming.live import LiveProfile

KEPT_USERS = 50_000
"""Users a partition's copy keeps when its file is rewritten whole (the most recently
written). A user evicted, or never seen, is read from Cassandra."""

Entry = tuple[int, bytes, dict[str, int], tuple[tuple[str, str, str, int], ...]]
"""A user's saved profile: (the batch that last wrote their live row, holdings blob, genre
units, changes as plain tuples), plain tuples and bytes: every batch saves and loads a
partition's whole copy, and these pickle several times faster than the objects (13 against
42 µs a user)."""

Kept = dict[int, Entry]
"""user -> their entry."""


def entry(batch_id: int, profile: LiveProfile) -> Entry:
    """What the copy keeps of ``profile``, written by ``batch_id``."""
    return (batch_id, profile.holdings_blob(), profile.genre_units, profile.changes)


def profile_of(kept: Entry) -> LiveProfile:
    """The profile an entry keeps."""
    _, holdings, units, changes = kept
    return LiveProfile.of_blob(holdings, units, changes)


class CopyState(Enum):
    CURRENT = "saved by the batch before: the profiles are those in Cassandra"
    APPLIED = "saved by this batch: a replay, its live rows are written"
    COLD = "no copy that can be trusted"


class LiveCache:
    """The copy of one partition of one query (a file; see the module docstring). ``load``
    then ``save``, once per batch."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._state = CopyState.COLD
        self._kept: Kept = {}
        self._records = 0  # records in the file when it was loaded
        self._identity: tuple[int, int, int] | None = None  # the file's, when it was loaded

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
            self._identity, self._records, (saved_batch, kept) = self._read()
        except (OSError, EOFError, pickle.UnpicklingError, ValueError, TypeError):
            self._identity, self._records, saved_batch, kept = None, 0, None, {}
        if saved_batch == batch_id - 1:
            self._state, self._kept = CopyState.CURRENT, kept
        elif saved_batch == batch_id:
            self._state, self._kept = CopyState.APPLIED, kept
        else:
            self._state, self._kept = CopyState.COLD, {}
        return self._state, self._kept

    def _read(self) -> tuple[tuple[int, int, int], int, tuple[int, Kept]]:
        """The file's identity, its number of records and the copy it holds (batch,
        entries): from this process's memory when it wrote this very file (same inode, size
        and modification time), else read."""
        identity = _identity(self.path.stat())
        remembered = _SAVED.get(self.path)
        if remembered is not None and remembered[0] == identity:
            return remembered
        with self.path.open("rb") as file:
            saved_batch, kept = pickle.load(file)
            records = 1
            while file.tell() < identity[1]:
                saved_batch, written = pickle.load(file)  # a record cut short raises
                kept.update(written)
                records += 1
        return identity, records, (saved_batch, kept)

    def save(self, batch_id: int, written: Kept) -> None:
        """Save the copy after ``batch_id``: what ``load`` returned plus ``written``, the
        entries of the profiles the batch wrote. Appended when the copy loaded was the
        current one and the file has not changed since; else the file is replaced
        atomically (a task killed while replacing it leaves the previous copy, which the
        next batch then does not trust)."""
        if self._state is CopyState.APPLIED and not written:
            return  # a replay: the copy already says this batch
        kept = self._kept | written
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if (
            self._state is CopyState.CURRENT
            and 0 < self._records < COMPACT_AFTER
            and self._unchanged()
        ):
            with self.path.open("ab") as file:
                pickle.dump((batch_id, written), file, protocol=pickle.HIGHEST_PROTOCOL)
            records = self._records + 1
            identity = _identity(self.path.stat())
        else:
            if len(kept) > KEPT_USERS:
                newest = sorted(kept.items(), key=lambda item: item[1][0], reverse=True)
                kept = dict(newest[:KEPT_USERS])
            partial = self.path.with_name(f"{self.path.name}.{os.getpid()}.partial")
            with partial.open("wb") as file:
                pickle.dump((batch_id, kept), file, protocol=pickle.HIGHEST_PROTOCOL)
            records = 1
            identity = _identity(partial.stat())
            os.replace(partial, self.path)
        _SAVED[self.path] = (identity, records, (batch_id, kept))
        self._state, self._kept, self._records, self._identity = (
            CopyState.APPLIED,
            kept,
            records,
            identity,
        )

    def _unchanged(self) -> bool:
        try:
            return _identity(self.path.stat()) == self._identity
        except OSError:
            return False


COMPACT_AFTER = 32
"""Records a copy's file holds at most (the whole copy, then one per batch) before it is
rewritten whole: loading it from the file in another worker process stays cheap."""

_SAVED: dict[Path, tuple[tuple[int, int, int], int, tuple[int, Kept]]] = {}
"""What each file holds (identity, records, copy), for the files this process wrote last
(Spark reuses its Python workers, so the worker that saved a partition's copy often applies
its next batch and need not read it). Keyed by path; trusted only while the file is the
one written."""


def _identity(stat: os.stat_result) -> tuple[int, int, int]:
    return (stat.st_ino, stat.st_size, stat.st_mtime_ns)
