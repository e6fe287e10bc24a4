"""Taste neighbours in a sorted block, vectorised with numpy: the per-chunk core of
:func:`spark_jobs.transforms.candidate_friends`.

A block's users are sorted by a signature of their taste vector, so similar tastes sit close
together; each user is compared with the ``window`` users that follow. Spark cuts every
sorted block into chunks (plus the first ``window`` rows of the next chunk, so no pair is
lost at a chunk's end) and hands each chunk to :func:`chunk_neighbours`.

Why numpy: a chunk's vectors become one dense matrix, and all ``window`` dot products of
every row are one batched matrix product over a sliding window view of it -- no pair rows,
no map lookups, no shuffle of pairs. Only each user's best few candidates leave the chunk.
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from spark_jobs.picks import RANKING_DIGITS, owners, ranks_in_runs, run_starts


def dense_rows(offsets: np.ndarray, features: np.ndarray, weights: np.ndarray, dims: int):
    """The sparse rows (flattened lists of feature index and weight) as a dense matrix."""
    matrix = np.zeros((len(offsets) - 1, dims))
    matrix[owners(offsets), features] = weights
    return matrix


def window_similarities(
    vectors: np.ndarray, window: int, first_rows: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(i, j, dot(vectors[i], vectors[j])) for every i < ``first_rows`` and i < j <= i +
    ``window`` with j a row of ``vectors``; rounded to RANKING_DIGITS."""
    rows, dims = vectors.shape
    first_rows = min(first_rows, rows)
    if first_rows == 0 or window == 0:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, np.zeros(0)
    padded = np.vstack([vectors, np.zeros((window, dims))])
    # ahead[i] is rows i .. i + window; the product of each with its row i is one matmul.
    ahead = sliding_window_view(padded, (window + 1, dims))[:first_rows, 0]
    dots = np.matmul(ahead[:, 1:, :], vectors[:first_rows, :, None])[..., 0]
    i = np.repeat(np.arange(first_rows), window)
    j = i + np.tile(np.arange(1, window + 1), first_rows)
    real = j < rows
    return i[real], j[real], np.round(dots.ravel()[real], RANKING_DIGITS)


def best_per_user(
    user: np.ndarray, friend: np.ndarray, similarity: np.ndarray, kept: int
) -> np.ndarray:
    """The indices of each user's ``kept`` most similar friends (ties: lower friend id), one
    per distinct (user, friend)."""
    order = np.lexsort((friend, -similarity, user))
    user, friend = user[order], friend[order]
    new_pair = run_starts(user, friend)
    order, user = order[new_pair], user[new_pair]
    return order[ranks_in_runs(user) <= kept]


def chunk_neighbours(
    users: np.ndarray,
    offsets: np.ndarray,
    features: np.ndarray,
    weights: np.ndarray,
    dims: int,
    own_rows: int,
    window: int,
    kept: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(user, friend, similarity): each user's ``kept`` best candidates in one chunk, both
    directions of every compared pair. Rows are in block order; the first ``own_rows`` are
    the chunk's own, the rest the head of the next chunk (compared, never compared from)."""
    i, j, similarity = window_similarities(
        dense_rows(offsets, features, weights, dims), window, own_rows
    )
    user = np.concatenate([users[i], users[j]])
    friend = np.concatenate([users[j], users[i]])
    similarity = np.concatenate([similarity, similarity])
    best = best_per_user(user, friend, similarity, kept)
    return user[best], friend[best], similarity[best]
