"""The Parquet schema of the published catalog (``<data_root>/catalog/releases/``).

Batch jobs read these columns by name; the Cassandra ``releases`` table has the same columns.
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from discorecs.catalog.parse import release_year

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


def keep_last_duplicates(columns: dict[str, list[Any]]) -> tuple[dict[str, list[Any]], int]:
    """Drop all but the last occurrence of each release id; returns the columns and how many
    rows were dropped (a dump lists a release once; a repeated id is the later that counts)."""
    ids = columns["release_id"]
    if len(set(ids)) == len(ids):
        return columns, 0
    seen: set[int] = set()
    keep = []
    for index in range(len(ids) - 1, -1, -1):
        if ids[index] not in seen:
            seen.add(ids[index])
            keep.append(index)
    keep.reverse()
    return {name: [values[i] for i in keep] for name, values in columns.items()}, len(ids) - len(
        keep
    )


def releases_table(columns: dict[str, list[Any]]) -> pa.Table:
    """Parsed columns as an Arrow table with :data:`RELEASE_SCHEMA` (``year`` derived)."""
    data = dict(columns)
    data["year"] = [release_year(value) for value in columns["released"]]
    return pa.table({name: data[name] for name in RELEASE_COLUMNS}, schema=RELEASE_SCHEMA)
