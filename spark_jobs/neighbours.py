"""Taste neighbours in a sorted block, vectorised with numpy: the per-chunk core of
:func:`spark_jobs.friends.candidate_friends`.

A block's users are sorted by a signature of their taste vector, so similar tastes sit close
together; each user is compared with the ``window`` users that follow. Spark cuts every
sorted block into chunks (plus the first ``window`` rows of the next chunk, so no pair is
lost at a chunk's end) and hands each chunk to :func:`chunk_neighbours`.

Why numpy: a chunk's vectors become one dense matrix, and all ``window`` dot products of
every row are one batched matrix product over a sliding window view of it -- no pair rows,
no map lookups, no shuffle of pairs. Only each user's best few candidates leave the chunk.

The recommended friend's reason (:func:`friend_reasons`) is numpy too: a user and their
friend have a few genres and a few affinities each, so what both hold is a comparison of two
small padded matrices per batch of pairs, not maps and higher-order functions per row.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from numpy.lib.stride_tricks import sliding_window_view

from discorecs.flatlists import flat_lists, owners, ranks_in_runs, run_starts
from spark_jobs.picks import RANKING_DIGITS

SHARED_GENRE_SHARE = 0.15  # a genre both collect: at least this share of each collection
SHARED_GENRES_NAMED = 2


def dense_rows(offsets: np.ndarray, features: np.ndarray, weights: np.ndarray, dims: int):
    """The sparse rows (flattened lists of feature index and weight) as a dense matrix."""
    matrix = np.zeros((len(offsets) - 1, dims))
    matrix[owners(offsets), features] = weights
    return matrix


def named_rows(
    offsets: np.ndarray, codes: np.ndarray, weights: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Rows of a few named features each (flattened lists of code and weight) as two
    (rows, widest row) matrices: codes (-1 pads) and weights (0 pads)."""
    rows = len(offsets) - 1
    widths = np.diff(offsets)
    widest = int(widths.max()) if rows else 0
    matrix_codes = np.full((rows, widest), -1, dtype=np.int64)
    matrix_weights = np.zeros((rows, widest))
    row = owners(offsets)
    column = np.arange(len(codes)) - np.repeat(offsets[:-1], widths)
    matrix_codes[row, column], matrix_weights[row, column] = codes, weights
    return matrix_codes, matrix_weights


def _ahead(matrix: np.ndarray, window: int, first_rows: int, pad: float) -> np.ndarray:
    """(first_rows, window, columns): for row i, rows i + 1 .. i + window (``pad`` beyond)."""
    columns = matrix.shape[1]
    padded = np.vstack([matrix, np.full((window, columns), pad, dtype=matrix.dtype)])
    return sliding_window_view(padded, (window + 1, columns))[:first_rows, 0, 1:]


def window_similarities(
    vectors: np.ndarray,
    window: int,
    first_rows: int,
    named: tuple[np.ndarray, np.ndarray] | None = None,
) -> np.ndarray:
    """(first_rows, window) matrix: [i, d - 1] = dot(vectors[i], vectors[i + d]), rounded to
    RANKING_DIGITS, and -inf where row i + d does not exist. ``named`` (:func:`named_rows`)
    adds the named features' part of each dot product: the products of equal codes."""
    rows = vectors.shape[0]
    first_rows = min(first_rows, rows)
    # The rows ahead of each row; the product of each with its row i is one matmul.
    ahead = _ahead(vectors, window, first_rows, 0.0)
    dots = np.matmul(ahead, vectors[:first_rows, :, None])[..., 0]
    if named is not None and named[0].shape[1]:
        codes, weights = named
        same = (
            _ahead(codes, window, first_rows, -1)[:, :, None, :]
            == codes[:first_rows, None, :, None]
        )
        dots += np.einsum(
            "fwab,fa,fwb->fw",
            same,
            weights[:first_rows],
            _ahead(weights, window, first_rows, 0.0),
        )
    dots = np.round(dots, RANKING_DIGITS)
    beyond = np.arange(first_rows)[:, None] + np.arange(1, window + 1) >= rows
    dots[beyond] = -np.inf
    return dots


def best_per_user(
    user: np.ndarray, friend: np.ndarray, similarity: np.ndarray, kept: int
) -> np.ndarray:
    """The indices of each user's ``kept`` most similar friends, by user, then similarity
    descending (ties: lower friend id); a pair given more than once counts once, with its
    highest similarity."""
    pairs = np.lexsort((-similarity, friend, user))
    pairs = pairs[run_starts(user[pairs], friend[pairs])]
    order = pairs[np.lexsort((friend[pairs], -similarity[pairs], user[pairs]))]
    return order[ranks_in_runs(user[order]) <= kept]


def chunk_neighbours(
    users: np.ndarray,
    offsets: np.ndarray,
    features: np.ndarray,
    weights: np.ndarray,
    dims: int,
    own_rows: int,
    window: int,
    kept: int,
    named: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(user, friend, similarity): each user's ``kept`` best candidates in one chunk, both
    directions of every compared pair, by user then rank. Rows are in block order; the first
    ``own_rows`` are the chunk's own, the rest the head of the next chunk (compared, never
    compared from). ``named``: (offsets, codes, weights) of each row's named features (the
    strongest affinities), whose vocabulary is too large for a dense row. Each row has at
    most 2 x ``window`` candidates here (ahead and behind), so the ranking is a sort of a
    (rows, 2 x window) matrix along its rows."""
    rows = len(users)
    own = min(own_rows, rows)
    dots = window_similarities(
        dense_rows(offsets, features, weights, dims),
        window,
        own,
        named_rows(*named) if named is not None else None,
    )
    similarity = np.full((rows, 2 * window), -np.inf)
    friend = np.full((rows, 2 * window), -1, dtype=np.int64)
    i = np.repeat(np.arange(own), window)
    d = np.tile(np.arange(1, window + 1), own)
    j = i + d
    real = j < rows
    i, d, j, sims = i[real], d[real], j[real], dots.ravel()[real]
    similarity[i, d - 1], friend[i, d - 1] = sims, users[j]  # ahead of i
    similarity[j, window + d - 1], friend[j, window + d - 1] = sims, users[i]  # behind j
    order = np.lexsort((friend, -similarity), axis=1)[:, :kept]
    similarity = np.take_along_axis(similarity, order, axis=1)
    friend = np.take_along_axis(friend, order, axis=1)
    found = similarity > -np.inf
    user = np.broadcast_to(users[:, None], found.shape)
    return user[found], friend[found], similarity[found]


def friend_reasons(pairs: pa.RecordBatch) -> tuple[pa.ListArray, pa.StringArray]:
    """(shared_genres, reason) for each (user, recommended friend) row of ``pairs``.

    ``pairs`` has the pair's ``similarity``, the user's ``genres``, ``genre_shares``,
    ``affinities`` (names prefixed "a:" or "l:") and ``affinity_records``, and the friend's
    same four columns prefixed ``their_``. Shared genres: the genres both collect
    (``SHARED_GENRE_SHARE`` of each collection at least), by the smaller of the two shares,
    descending (ties: by name), at most ``SHARED_GENRES_NAMED``. The reason names, in this
    order of preference: the artist or label-era both keep the most records of (the smaller
    count; ties: by name), the shared genres, or only the taste match.
    """
    (genres, shares), genre_names = _held_by_both(pairs, "genres", "genre_shares")
    shown = _by_amount(genres, shares, genre_names, shares >= SHARED_GENRE_SHARE)[0]
    shown = shown[:, :SHARED_GENRES_NAMED]
    shared = pa.ListArray.from_arrays(
        pa.array(np.concatenate([[0], np.cumsum((shown >= 0).sum(axis=1))]), pa.int32()),
        genre_names.take(pa.array(shown[shown >= 0])),
    )
    (kept, records), kept_names = _held_by_both(pairs, "affinities", "affinity_records")
    kept, records = _by_amount(kept, records, kept_names, ~np.isnan(records))
    most_kept, at_least = kept[:, 0], np.nan_to_num(records[:, 0]).astype(np.int64)

    def named(codes: np.ndarray, names: pa.Array) -> pa.Array:
        """The names of ``codes``; null for -1."""
        return names.take(pa.array(np.maximum(codes, 0), mask=codes < 0))

    percent = np.floor(pairs.column("similarity").to_numpy() * 100 + 0.5).astype(np.int64)
    match = [pc.cast(pa.array(percent), pa.string()), "% taste match"]
    both_keep = pc.binary_join_element_wise(
        "you both own at least ",
        pc.cast(pa.array(at_least, mask=most_kept < 0), pa.string()),
        " ",
        pc.utf8_slice_codeunits(named(most_kept, kept_names), 2),  # without "a:" or "l:"
        " records, ",
        *match,
        "",
    )
    first, second = named(shown[:, 0], genre_names), named(shown[:, 1], genre_names)
    two = pc.binary_join_element_wise("you both collect ", first, " and ", second, ", ", *match, "")
    one = pc.binary_join_element_wise("you both collect ", first, ", ", *match, "")
    only_taste = pc.binary_join_element_wise("similar styles, ", *match, "")
    return shared, pc.coalesce(both_keep, two, one, only_taste)


def _held_by_both(
    pairs: pa.RecordBatch, names: str, amounts: str
) -> tuple[tuple[np.ndarray, np.ndarray], pa.Array]:
    """((codes, amounts), names) of what a user and their friend both hold, as two
    (rows, widest) matrices over the user's list ``names``: each name's code in ``names``
    (-1 pads), and the smaller of the two ``amounts`` (NaN where the friend lacks the name, and
    in pads). At least ``SHARED_GENRES_NAMED`` columns wide."""
    mine_offsets, mine = flat_lists(pairs.column(names))
    their_offsets, theirs = flat_lists(pairs.column(f"their_{names}"))
    encoded = pa.concat_arrays([mine, theirs]).dictionary_encode()
    codes = encoded.indices.to_numpy(zero_copy_only=False).astype(np.int64)

    def amounts_of(column: str) -> np.ndarray:
        return pc.list_flatten(pairs.column(column)).to_numpy(zero_copy_only=False).astype(float)

    my_codes, my_amounts = named_rows(mine_offsets, codes[: len(mine)], amounts_of(amounts))
    their_codes, their_amounts = named_rows(
        their_offsets, codes[len(mine) :], amounts_of(f"their_{amounts}")
    )
    # A name is at most once in a list: the friend's amount for each of the user's names.
    same = (my_codes[:, :, None] == their_codes[:, None, :]) & (my_codes[:, :, None] >= 0)
    theirs_too = np.where(same, their_amounts[:, None, :], 0.0).sum(axis=2)
    both = np.where(same.any(axis=2), np.minimum(my_amounts, theirs_too), np.nan)
    pad = ((0, 0), (0, max(SHARED_GENRES_NAMED - my_codes.shape[1], 0)))
    return (
        np.pad(my_codes, pad, constant_values=-1),
        np.pad(both, pad, constant_values=np.nan),
    ), encoded.dictionary


def _by_amount(
    codes: np.ndarray, amounts: np.ndarray, names: pa.Array, valid: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(codes, amounts): each row's codes where ``valid``, by amount descending (ties: by
    name), then -1 for the rest."""
    name_rank = np.zeros(len(names) + 1, dtype=np.int64)  # + 1: no name, no IndexError on pads
    name_rank[pc.sort_indices(names).to_numpy()] = np.arange(len(names))
    valid = valid & (codes >= 0)
    order = np.lexsort(
        (np.where(valid, name_rank[np.maximum(codes, 0)], 0), np.where(valid, -amounts, np.inf)),
        axis=1,
    )
    return (
        np.take_along_axis(np.where(valid, codes, -1), order, axis=1),
        np.take_along_axis(amounts, order, axis=1),
    )
