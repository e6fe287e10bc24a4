"""The Parquet schema of the published catalog (``<data_root>/catalog/releases/``).

Batch jobs read these columns by name; the Cassandra ``releases`` table has the same columns.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

_TEXT_LIST = pa.list_(pa.string())

RELEASE_SCHEMA = pa.schema(
    [
        pa.field("release_id", pa.int64(), nullable=False),
        pa.field("title", pa.string()),
        pa.field("artists", _TEXT_LIST),
        pa.field("genres", _TEXT_LIST),
        pa.field("styles", _TEXT_LIST),
        pa.field("year", pa.int32()),
        pa.field("released", pa.string()),
        pa.field("country", pa.string()),
        pa.field("master_id", pa.int64()),
        pa.field("is_main_release", pa.bool_()),
        pa.field("formats", _TEXT_LIST),
        pa.field("labels", _TEXT_LIST),
        pa.field("status", pa.string()),
        pa.field("data_quality", pa.string()),
    ]
)

RELEASE_COLUMNS: tuple[str, ...] = tuple(RELEASE_SCHEMA.names)


def keep_last_duplicates(table: pa.Table) -> tuple[pa.Table, int]:
    """Drop all but the last row of each release id; returns the table and how many rows were
    dropped (a dump lists a release once; when an id repeats, the later one counts)."""
    ids = table["release_id"].to_numpy()
    reversed_first = np.unique(ids[::-1], return_index=True)[1]
    if len(reversed_first) == len(ids):
        return table, 0
    keep = np.sort(len(ids) - 1 - reversed_first)
    return table.take(pa.array(keep)), len(ids) - len(keep)
