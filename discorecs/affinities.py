"""Affinity groups: the artists and label-eras a collector completes.

Genres and styles are one way a collection hangs together; collectors also complete an
artist's records and a label's catalog of an era. Each release belongs to the groups

- ``a:<artist>``: its first credited artist (never "Various" and the like), and
- ``l:<label> (<decade>s)``: each of its labels in the decade of its year (none without a
  year).

The nightly batch weighs a user's strongest groups like their top styles
(:mod:`spark_jobs.tastes`), and the "scenes" taste model of the user generator draws
collectors who follow label-eras (:mod:`discorecs.users.scenes`). This module is the one
place that names a group.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from discorecs.flatlists import flat_lists

ARTIST, LABEL_ERA = "a:", "l:"
CREDIT_COLUMNS = ("artists", "labels", "year")
"""The catalog columns the groups are read from (beside ``release_id``)."""
UNKNOWN_ARTISTS = frozenset({"various", "unknown artist", "no artist"})
"""First artists that make no artist group (compared lower-cased)."""


def label_era(label: str, year: int) -> str:
    """A label-era's name without its prefix: "Blue Note (1960s)"."""
    return f"{label} ({year // 10 * 10}s)"


def first_artists(artists: pa.Array) -> pa.Array:
    """Each row's first artist name, null for a row with none or an unknown one."""
    offsets, names = flat_lists(artists)
    first = names.take(pa.array(offsets[:-1], mask=np.diff(offsets) == 0))
    unknown = pc.is_in(pc.utf8_lower(first), value_set=pa.array(sorted(UNKNOWN_ARTISTS)))
    return pc.if_else(unknown, pa.scalar(None, pa.string()), first)


def release_groups(releases: pa.Table) -> tuple[np.ndarray, pa.Array]:
    """(row, name): one entry per (row of ``releases``, affinity group), rows ascending, each
    group once per row. ``releases`` has the :data:`CREDIT_COLUMNS`."""
    artists = releases.column("artists").combine_chunks()
    first = first_artists(artists)
    artist_rows = np.flatnonzero(pc.is_valid(first).to_numpy(zero_copy_only=False))
    artist_names = pc.binary_join_element_wise(ARTIST, first.take(artist_rows), "")

    labels = releases.column("labels").combine_chunks()
    label_rows = pc.list_parent_indices(labels).to_numpy().astype(np.int64)
    year = releases.column("year").combine_chunks().fill_null(0).to_numpy(zero_copy_only=False)
    decade = (np.asarray(year, dtype=np.int64)[label_rows] // 10) * 10
    label_names = pc.list_flatten(labels)
    dated = (decade > 0) & pc.is_valid(label_names).to_numpy(zero_copy_only=False)
    era_names = pc.binary_join_element_wise(
        LABEL_ERA,
        label_names.filter(pa.array(dated)),
        " (",
        pa.array(decade[dated]).cast(pa.string()),
        "s)",
        "",
    )
    rows = np.concatenate([artist_rows.astype(np.int64), label_rows[dated]])
    names = pa.concat_arrays([artist_names, era_names])
    # Rows ascending, each name once per row (a release may list a label twice).
    order = pa.table({"row": rows, "name": names}).group_by(["row", "name"]).aggregate([])
    order = order.sort_by([("row", "ascending"), ("name", "ascending")])
    return order.column("row").to_numpy(), order.column("name").combine_chunks()
