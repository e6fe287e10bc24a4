"""Every user's taste from their records, vectorised with numpy: the per-user core of
:func:`spark_jobs.transforms.user_tastes`, which feeds it all the holdings of a partition's
users (Spark partitions the holdings by user first).

One pass gives, per user: collection size, genre scores and shares, style shares, the unit
taste vector over genres and styles, its signature (the sort key of the friend blocks), and
the lists of owned and held releases. Genres and styles come sorted by share (ties: by name),
so "top k" is a slice, never a window over a shuffled frame.

Genre score formula (see ``spark_jobs.transforms``): a release with n known genres counts
1/n towards each; style shares count a release with n styles 1/n towards each.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from discorecs.genres import GENRES
from spark_jobs.picks import RANKING_DIGITS, PopularLists, owners, ranks_in_runs, run_starts

GENRE_NAMES = sorted(GENRES)


def direction(feature: str) -> float:
    """A fixed pseudo-random weight in [-0.5, 0.5) per feature, the same on every run and
    machine: the signature is the taste vector projected on these."""
    return (zlib.crc32(feature.encode()) % 1000) / 1000.0 - 0.5


@dataclass(frozen=True)
class CatalogIndex:
    """What a taste needs of each release, as arrays: sorted ids, a bit per known genre
    (bit g = GENRE_NAMES[g]), and the styles (indices into ``style_names``) as flat lists."""

    release_ids: np.ndarray
    genre_bits: np.ndarray
    style_offsets: np.ndarray
    style_ids: np.ndarray
    style_names: list[str]

    @classmethod
    def from_arrow(cls, releases: pa.Table) -> CatalogIndex:
        """From a table of release_id, genres (list of names), styles (list of names)."""
        releases = releases.sort_by("release_id")
        genres = releases.column("genres").combine_chunks()
        styles = releases.column("styles").combine_chunks()
        genre_offsets, genre_values = flat_lists(genres)
        index = pc.index_in(genre_values, value_set=pa.array(GENRE_NAMES))
        known = pc.is_valid(index).to_numpy(zero_copy_only=False)
        bits = np.zeros(releases.num_rows, dtype=np.int64)
        np.bitwise_or.at(
            bits,
            owners(genre_offsets)[known],
            np.left_shift(1, index.fill_null(0).to_numpy()[known].astype(np.int64)),
        )
        style_offsets, style_values = flat_lists(styles)
        style_names = sorted(pc.unique(style_values.drop_null()).to_pylist())
        style_ids = pc.index_in(style_values, value_set=pa.array(style_names, pa.string()))
        return cls(
            releases.column("release_id").to_numpy(),
            bits,
            style_offsets,
            style_ids.fill_null(0).to_numpy().astype(np.int64),
            style_names,
        )

    def most_owned(
        self, release_ids: np.ndarray, owner_counts: np.ndarray, depth: int, fallback_depth: int
    ) -> tuple[PopularLists, np.ndarray, np.ndarray]:
        """From each owned release's number of owners: the ``depth`` most owned releases of
        every genre ("g:" name) and style ("s:" name) with their popularity (share of the
        group's ownership), and the ``fallback_depth`` most owned catalog releases overall
        (ids, owners). Ties: lower release id first. Releases not in the catalog count for
        nothing."""
        at, known = self.locate(release_ids)
        at, counts = at[known], owner_counts[known].astype(np.int64)

        # (group, release index) pairs: genres are groups 0..14, styles 15.. .
        genre_of = [np.flatnonzero((self.genre_bits[at] >> g) & 1) for g in range(len(GENRE_NAMES))]
        per_record = self.style_offsets[at + 1] - self.style_offsets[at]
        before = np.cumsum(per_record) - per_record
        first = np.repeat(self.style_offsets[at] - before, per_record)
        member = np.concatenate([*genre_of, np.repeat(np.arange(len(at)), per_record)]).astype(
            np.int64
        )
        group = np.concatenate(
            [np.full(len(m), g) for g, m in enumerate(genre_of)]
            + [len(GENRE_NAMES) + self.style_ids[first + np.arange(len(first))]]
        ).astype(np.int64)
        owners_of, release_of = counts[member], self.release_ids[at][member]
        order = np.lexsort((release_of, -owners_of, group))
        group, owners_of, release_of = group[order], owners_of[order], release_of[order]
        groups = len(GENRE_NAMES) + len(self.style_names)
        totals = np.bincount(group, weights=owners_of, minlength=groups)
        top = ranks_in_runs(group) <= depth
        group, owners_of, release_of = group[top], owners_of[top], release_of[top]
        present = np.unique(group)
        row = np.searchsorted(present, group)
        slot = ranks_in_runs(group) - 1
        releases = np.zeros((len(present), depth), dtype=np.int64)
        popularity = np.zeros((len(present), depth))
        releases[row, slot] = release_of
        popularity[row, slot] = owners_of / totals[group]
        names = [f"g:{g}" for g in GENRE_NAMES] + [f"s:{s}" for s in self.style_names]
        popular = PopularLists([names[g] for g in present], releases, popularity)

        overall = np.lexsort((self.release_ids[at], -counts))[:fallback_depth]
        return popular, self.release_ids[at][overall], counts[overall]

    def locate(self, release_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(position, found) of each release in the catalog's arrays (position 0 where the
        release is not in the catalog)."""
        release_ids = np.asarray(release_ids, dtype=np.int64)
        at = np.searchsorted(self.release_ids, release_ids)
        found = at < len(self.release_ids)
        found[found] = self.release_ids[at[found]] == release_ids[found]
        return np.where(found, at, 0), found

    def genre_bits_of(self, release_ids: np.ndarray) -> np.ndarray:
        """Each release's genre bits (int64); 0 for a release not in the catalog."""
        at, found = self.locate(release_ids)
        if not len(self.release_ids):
            return np.zeros(len(at), dtype=np.int64)
        return np.where(found, self.genre_bits[at], 0).astype(np.int64)

    @property
    def features(self) -> list[str]:
        """The taste vector's features: "g:" genres, then "s:" styles."""
        return [f"g:{g}" for g in GENRE_NAMES] + [f"s:{s}" for s in self.style_names]


def genre_counts(bits: np.ndarray) -> np.ndarray:
    """How many of the 15 genres each release has, from its genre bits."""
    counts = np.zeros(len(bits), dtype=np.int64)
    for g in range(len(GENRE_NAMES)):
        counts += (bits >> g) & 1
    return counts


def flat_lists(lists: pa.Array) -> tuple[np.ndarray, pa.Array]:
    """(offsets, values) of a list column: row i's values are values[offsets[i]:offsets[i +
    1]]; a null list reads as an empty one."""
    lengths = pc.list_value_length(lists).fill_null(0).to_numpy()
    return np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64), pc.list_flatten(lists)


def _lists(offsets_of: np.ndarray, values: pa.Array | np.ndarray) -> pa.ListArray:
    """A list column from per-row counts' cumulative offsets and the flat values."""
    return pa.ListArray.from_arrays(pa.array(offsets_of, pa.int32()), values)


def _offsets(sorted_rows: np.ndarray, rows: int) -> np.ndarray:
    return np.concatenate([[0], np.cumsum(np.bincount(sorted_rows, minlength=rows))])


def user_tastes(
    user: np.ndarray, release: np.ndarray, owned: np.ndarray, catalog: CatalogIndex
) -> pa.RecordBatch:
    """One row per user in ``user`` (holdings rows: ``owned`` True for a collection record,
    False for a wantlist entry). Columns: user_id, collection_size, genres, genre_scores,
    genre_shares, styles, style_shares (both sorted by share descending, then name),
    features, weights (the unit taste vector, feature indices into ``catalog.features``),
    signature, missing (owned records not in the catalog), owned, held (release ids). Users
    with wantlist entries only have size 0 and empty tastes."""
    order = np.lexsort((release, user))
    user, release, owned = user[order], release[order], owned[order]
    starts = run_starts(user)
    users = user[starts]
    row_user = np.cumsum(starts) - 1  # user index of each holdings row
    count = len(users)

    held_offsets = _offsets(row_user, count)
    mine = owned.astype(bool)
    owned_offsets = _offsets(row_user[mine], count)
    size = np.diff(owned_offsets)

    # Genres: each owned record's known genres share one record.
    own_user, own_release = row_user[mine], release[mine]
    at, found = catalog.locate(own_release)
    bits = catalog.genre_bits_of(own_release)
    genre_count = genre_counts(bits)
    weight = np.divide(1.0, genre_count, out=np.zeros(len(bits)), where=genre_count > 0)
    scores = np.zeros((count, len(GENRE_NAMES)))
    for g in range(len(GENRE_NAMES)):
        scores[:, g] = np.bincount(own_user, weights=weight * ((bits >> g) & 1), minlength=count)
    scores = np.round(scores, RANKING_DIGITS)
    totals = scores.sum(axis=1)
    genre_shares = np.divide(
        scores, totals[:, None], out=np.zeros_like(scores), where=totals[:, None] > 0
    )

    # Styles: each owned record's styles share one record.
    rec_user, rec_at = own_user[found], at[found]
    per_record = catalog.style_offsets[rec_at + 1] - catalog.style_offsets[rec_at]
    style_user = np.repeat(rec_user, per_record)
    first = np.repeat(
        catalog.style_offsets[rec_at] - np.cumsum(per_record) + per_record, per_record
    )
    style_id = catalog.style_ids[first + np.arange(len(first))] if len(first) else first
    style_weight = np.repeat(
        np.divide(1.0, per_record, out=np.zeros(len(per_record)), where=per_record > 0), per_record
    )
    styles = len(catalog.style_names)
    key = style_user * max(styles, 1) + style_id
    keys, inverse = np.unique(key, return_inverse=True)
    summed = np.bincount(inverse, weights=style_weight, minlength=len(keys))
    s_user, s_style = keys // max(styles, 1), keys % max(styles, 1)
    s_total = np.bincount(s_user, weights=summed, minlength=count)
    s_share = summed / s_total[s_user] if len(summed) else summed

    # Sorted lists: by user, share descending, then name (index order is name order).
    g_user, g_id = np.nonzero(scores > 0)
    g_order = np.lexsort((g_id, -genre_shares[g_user, g_id], g_user))
    g_user, g_id = g_user[g_order], g_id[g_order]
    s_order = np.lexsort((s_style, -s_share, s_user))
    s_user, s_style, s_share = s_user[s_order], s_style[s_order], s_share[s_order]

    # The taste vector: genre shares and style shares, to unit length.
    f_user = np.concatenate([g_user, s_user])
    f_id = np.concatenate([g_id, len(GENRE_NAMES) + s_style])
    f_weight = np.concatenate([genre_shares[g_user, g_id], s_share])
    f_order = np.lexsort((f_id, f_user))
    f_user, f_id, f_weight = f_user[f_order], f_id[f_order], f_weight[f_order]
    norms = np.sqrt(np.bincount(f_user, weights=f_weight * f_weight, minlength=count))
    f_weight = f_weight / norms[f_user] if len(f_weight) else f_weight
    directions = np.array([direction(f) for f in catalog.features])
    signature = np.bincount(f_user, weights=f_weight * directions[f_id], minlength=count)

    genre_names = pa.array(GENRE_NAMES, pa.string())
    style_names = pa.array(catalog.style_names, pa.string())
    genre_offsets = _offsets(g_user, count)
    style_offsets = _offsets(s_user, count)
    feature_offsets = _offsets(f_user, count)
    return pa.record_batch(
        {
            "user_id": pa.array(users, pa.int64()),
            "collection_size": pa.array(size, pa.int32()),
            "genres": _lists(genre_offsets, genre_names.take(pa.array(g_id))),
            "genre_scores": _lists(genre_offsets, pa.array(scores[g_user, g_id])),
            "genre_shares": _lists(genre_offsets, pa.array(genre_shares[g_user, g_id])),
            "styles": _lists(style_offsets, style_names.take(pa.array(s_style))),
            "style_shares": _lists(style_offsets, pa.array(s_share, pa.float64())),
            "features": _lists(feature_offsets, pa.array(f_id, pa.int32())),
            "weights": _lists(feature_offsets, pa.array(f_weight, pa.float64())),
            "signature": pa.array(signature, pa.float64()),
            "missing": pa.array(np.bincount(own_user[~found], minlength=count), pa.int32()),
            "owned": _lists(owned_offsets, pa.array(release[mine], pa.int64())),
            "held": _lists(held_offsets, pa.array(release, pa.int64())),
        }
    )
