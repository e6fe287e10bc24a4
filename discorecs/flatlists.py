"""Lists of many rows as two flat numpy arrays, the way Arrow stores a list column.

A list per row for n rows is ``offsets`` (n + 1 ints: row i owns
``values[offsets[i]:offsets[i + 1]]``) and ``values``. The batch layer's numpy cores (tastes,
picks, neighbours) and the user generator work on this shape: one sort and a few vector
operations replace a loop over rows. The helpers here are the idioms they share.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc


def flat_lists(lists: pa.Array) -> tuple[np.ndarray, pa.Array]:
    """(offsets, values) of an Arrow list column; a null list reads as an empty one."""
    lengths = pc.list_value_length(lists).fill_null(0).to_numpy()
    return np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64), pc.list_flatten(lists)


def owners(offsets: np.ndarray) -> np.ndarray:
    """For each flattened value, the index of the row (list) it belongs to."""
    return np.repeat(np.arange(len(offsets) - 1), np.diff(offsets))


def spans(offsets: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(which, at): the values of the lists of ``rows``, in order: value ``at[k]`` of the flat
    values belongs to ``rows[which[k]]``. A row may be asked for more than once."""
    rows = np.asarray(rows, dtype=np.int64)
    counts = offsets[rows + 1] - offsets[rows]
    which = np.repeat(np.arange(len(rows)), counts)
    starts = np.cumsum(counts) - counts
    at = np.repeat(offsets[rows] - starts, counts) + np.arange(int(counts.sum()))
    return which, at.astype(np.int64)


def concatenated(
    first_offsets: np.ndarray,
    first: np.ndarray,
    second_offsets: np.ndarray,
    second: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """(offsets, values): each row's list of ``first`` followed by its list of ``second``
    (two list columns of the same rows)."""
    rows = np.concatenate([owners(first_offsets), owners(second_offsets)])
    order = np.argsort(rows, kind="stable")
    return first_offsets + second_offsets, np.concatenate([first, second])[order]


def offsets_of(sorted_rows: np.ndarray, rows: int) -> np.ndarray:
    """The offsets of lists whose values' rows are ``sorted_rows`` (ascending), for ``rows``
    rows (rows with no value get an empty list)."""
    counts = np.bincount(np.asarray(sorted_rows, dtype=np.int64), minlength=rows)
    return np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)


def run_starts(*sorted_columns: np.ndarray) -> np.ndarray:
    """True where a row starts a new run of equal values in the (sorted) columns."""
    starts = np.zeros(len(sorted_columns[0]), dtype=bool)
    starts[:1] = True
    for column in sorted_columns:
        starts[1:] |= column[1:] != column[:-1]
    return starts


def ranks_in_runs(sorted_column: np.ndarray) -> np.ndarray:
    """1-based position of each row within its run of equal values."""
    starts = np.flatnonzero(run_starts(sorted_column))
    first = np.repeat(starts, np.diff(np.r_[starts, len(sorted_column)]))
    return np.arange(len(sorted_column)) - first + 1


def contains(sorted_haystack: np.ndarray, needles: np.ndarray) -> np.ndarray:
    """For each needle, whether it is in the sorted array (binary search, no hashing)."""
    if len(sorted_haystack) == 0:
        return np.zeros(len(needles), dtype=bool)
    at = np.minimum(np.searchsorted(sorted_haystack, needles), len(sorted_haystack) - 1)
    return sorted_haystack[at] == needles
