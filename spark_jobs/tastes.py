"""Every user's taste from their records, vectorised with numpy: the per-user core of
:func:`spark_jobs.transforms.user_tastes`, which feeds it all the holdings of a partition's
users (Spark partitions the holdings by user first).

One pass gives, per user: collection size, genre scores and shares, style shares, the
strongest artists and label-eras (:mod:`discorecs.affinities`) with the records the user
owns in each, the unit taste vector over all three, its signature (the sort key of the
friend blocks), the taste groups the release picks weigh, and the lists of owned and held
releases. Everything comes sorted by share (ties: by name), so "top k" is a slice, never a
window over a shuffled frame.

Genre score formula (see ``spark_jobs.transforms``): a release with n known genres counts
1/n towards each; style shares count a release with n styles 1/n towards each; an
affinity's share is the user's records in it over their collection size.
"""

from __future__ import annotations

import zlib

import numpy as np
import pyarrow as pa

from discorecs.catalog.index import CatalogIndex, genre_counts
from discorecs.flatlists import offsets_of, ranks_in_runs, run_starts, spans
from discorecs.genres import GENRES
from spark_jobs.picks import RANKING_DIGITS

TOP_STYLES, TOP_GENRES = 3, 2
MIN_RECORDS = 2  # an artist or label-era with one of a user's records is not yet a pattern
TOP_AFFINITIES = 2  # artists, and label-eras, weighed per user


def direction(feature: str) -> float:
    """A fixed pseudo-random weight in [-0.5, 0.5) per feature, the same on every run and
    machine: the signature is the taste vector projected on these."""
    return (zlib.crc32(feature.encode()) % 1000) / 1000.0 - 0.5


def _lists(offsets: np.ndarray, values: pa.Array | np.ndarray) -> pa.ListArray:
    """A list column from offsets and the flat values."""
    return pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), values)


def user_tastes(
    user: np.ndarray, release: np.ndarray, owned: np.ndarray, catalog: CatalogIndex
) -> pa.RecordBatch:
    """One row per user in ``user`` (holdings rows: ``owned`` True for a collection record,
    False for a wantlist entry). Columns: user_id, collection_size, genres, genre_scores,
    genre_shares, styles, style_shares (both sorted by share descending, then name),
    features, weights (the unit taste vector's genres and styles, feature indices into
    ``catalog.features``),
    signature, missing (owned records not in the catalog), owned, wanted (release ids), and
    taste_groups / taste_shares: what the release picks weigh (:func:`taste_groups`), and the
    strongest affinities (names, records owned in each, weight in the taste vector). Users
    with wantlist entries only have size 0 and empty tastes."""
    # One sort of one key (release ids are below 2**32): a lexsort of two is slower.
    order = np.argsort((user.astype(np.int64) << 32) | release.astype(np.int64))
    user, release, owned = user[order], release[order], owned[order]
    starts = run_starts(user)
    users = user[starts]
    row_user = np.cumsum(starts) - 1  # user index of each holdings row
    count = len(users)

    mine = owned.astype(bool)
    owned_offsets = offsets_of(row_user[mine], count)
    wanted_offsets = offsets_of(row_user[~mine], count)
    size = np.diff(owned_offsets)

    own_user, own_release = row_user[mine], release[mine]
    at, found = catalog.locate(own_release)
    scores, genre_shares = genre_scores(own_user, catalog.genre_bits_at(at, found), count)
    rec_user, rec_at = own_user[found], at[found]
    s_user, s_style, s_share = style_shares(rec_user, rec_at, catalog, count)

    # Sorted lists: by user, share descending, then name (index order is name order).
    g_user, g_id = np.nonzero(scores > 0)
    g_order = np.lexsort((g_id, -genre_shares[g_user, g_id], g_user))
    g_user, g_id = g_user[g_order], g_id[g_order]
    s_order = np.lexsort((s_style, -s_share, s_user))
    s_user, s_style, s_share = s_user[s_order], s_style[s_order], s_share[s_order]

    # The strongest artists and label-eras, weighed by their share of the collection.
    a_user, a_id, a_records = strongest_affinities(rec_user, rec_at, catalog)
    a_share = a_records / size[a_user] if len(a_user) else np.zeros(0)

    (f_user, f_id, f_weight), a_weight, signature = taste_vector(
        (g_user, g_id, genre_shares[g_user, g_id]),
        (s_user, s_style, s_share),
        a_user,
        a_share,
        catalog,
        count,
    )

    genre_names = pa.array(GENRES, pa.string())
    style_names = pa.array(catalog.style_names, pa.string())
    genre_offsets = offsets_of(g_user, count)
    style_offsets = offsets_of(s_user, count)
    feature_offsets = offsets_of(f_user, count)
    t_user, t_group, t_share = taste_groups(
        (g_user, g_id, genre_shares[g_user, g_id]),
        (s_user, s_style, s_share),
        (a_user, a_id, a_share),
        catalog,
    )
    taste_offsets = offsets_of(t_user, count)
    affinity_offsets = offsets_of(a_user, count)
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
            "wanted": _lists(wanted_offsets, pa.array(release[~mine], pa.int64())),
            "taste_groups": _lists(taste_offsets, pa.array(t_group, pa.int32())),
            "taste_shares": _lists(taste_offsets, pa.array(t_share, pa.float64())),
            "affinities": _lists(affinity_offsets, catalog.affinity_names.take(pa.array(a_id))),
            "affinity_records": _lists(affinity_offsets, pa.array(a_records, pa.int32())),
            "affinity_weights": _lists(affinity_offsets, pa.array(a_weight, pa.float64())),
        }
    )


Ranked = tuple[np.ndarray, np.ndarray, np.ndarray]
"""(user, id, share) rows sorted by user, then share descending, then id."""


def genre_scores(user: np.ndarray, bits: np.ndarray, count: int) -> tuple[np.ndarray, np.ndarray]:
    """(scores, shares), each (count, 15): each owned record (its ``user`` index and genre
    ``bits``) counts one record, split evenly between its known genres (the module's formula);
    a user's shares are their scores over their total."""
    genre_count = genre_counts(bits)
    weight = np.divide(1.0, genre_count, out=np.zeros(len(bits)), where=genre_count > 0)
    scores = np.zeros((count, len(GENRES)))
    for g in range(len(GENRES)):
        scores[:, g] = np.bincount(user, weights=weight * ((bits >> g) & 1), minlength=count)
    scores = np.round(scores, RANKING_DIGITS)
    totals = scores.sum(axis=1)
    shares = np.divide(
        scores, totals[:, None], out=np.zeros_like(scores), where=totals[:, None] > 0
    )
    return scores, shares


def style_shares(
    user: np.ndarray, at: np.ndarray, catalog: CatalogIndex, count: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(user, style id, share) of every style a user's records have (records at catalog
    positions ``at``), by user then style id: each record counts one, split evenly between
    its styles, and a user's shares add up to 1."""
    per_record = catalog.style_offsets[at + 1] - catalog.style_offsets[at]
    by_record, style_at = spans(catalog.style_offsets, at)
    style_user, style_id = user[by_record], catalog.style_ids[style_at]
    styles = max(len(catalog.style_names), 1)
    keys, inverse = np.unique(style_user * styles + style_id, return_inverse=True)
    summed = np.bincount(inverse, weights=1.0 / per_record[by_record], minlength=len(keys))
    s_user, s_style = keys // styles, keys % styles
    total = np.bincount(s_user, weights=summed, minlength=count)
    return s_user, s_style, summed / total[s_user] if len(summed) else summed


def taste_vector(
    genres: Ranked,
    styles: Ranked,
    affinity_user: np.ndarray,
    affinity_share: np.ndarray,
    catalog: CatalogIndex,
    count: int,
) -> tuple[Ranked, np.ndarray, np.ndarray]:
    """The taste vector friends are compared on: genre shares, style shares and the strongest
    affinities' shares, scaled to unit length together, so that cosine similarity is a dot
    product. Genres and styles are dense features ((user, feature index into
    ``catalog.features``, weight), by user then feature); the affinities, a few of a vast
    vocabulary, are named, and keep their order (their weights are returned). Also each
    user's signature: the dense part projected on fixed pseudo-random directions
    (:func:`direction`), the order of the friend blocks."""
    (g_user, g_id, g_share), (s_user, s_style, s_share) = genres, styles
    f_user = np.concatenate([g_user, s_user])
    f_id = np.concatenate([g_id, len(GENRES) + s_style])
    f_weight = np.concatenate([g_share, s_share])
    f_order = np.lexsort((f_id, f_user))
    f_user, f_id, f_weight = f_user[f_order], f_id[f_order], f_weight[f_order]
    squares = np.bincount(f_user, weights=f_weight * f_weight, minlength=count)
    squares += np.bincount(affinity_user, weights=affinity_share * affinity_share, minlength=count)
    norms = np.sqrt(squares)
    f_weight = f_weight / norms[f_user] if len(f_weight) else f_weight
    a_weight = affinity_share / norms[affinity_user] if len(affinity_share) else affinity_share
    directions = np.array([direction(f) for f in catalog.features])
    signature = np.bincount(f_user, weights=f_weight * directions[f_id], minlength=count)
    return (f_user, f_id, f_weight), a_weight, signature


def strongest_affinities(
    user: np.ndarray, at: np.ndarray, catalog: CatalogIndex
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(user, affinity id, records): each user's ``TOP_AFFINITIES`` artists, then
    ``TOP_AFFINITIES`` label-eras, holding the most of their records (``MIN_RECORDS`` at
    least; ties: name order), from one row per owned record found in the catalog (``user``,
    catalog position ``at``)."""
    by_record, group_at = spans(catalog.affinity_offsets, at)
    groups = max(len(catalog.affinity_names), 1)
    key = user[by_record] * groups + catalog.affinity_ids[group_at]
    keys, records = np.unique(key, return_counts=True)
    common = records >= MIN_RECORDS
    a_user, a_id = np.divmod(keys[common], groups)
    records = records[common]
    label_era = (a_id >= catalog.artist_groups).astype(np.int64)
    order = np.lexsort((a_id, -records, label_era, a_user))
    a_user, a_id, records, label_era = (x[order] for x in (a_user, a_id, records, label_era))
    top = ranks_in_runs(a_user * 2 + label_era) <= TOP_AFFINITIES if len(a_user) else label_era > 0
    return a_user[top], a_id[top], records[top]


def taste_groups(
    genres: Ranked, styles: Ranked, affinities: Ranked, catalog: CatalogIndex
) -> Ranked:
    """The groups the release picks weigh per user, as (user, group id in
    ``catalog.group_names``, share of the collection) in this order: the top ``TOP_STYLES``
    styles, the top ``TOP_GENRES`` genres, then the strongest affinities (ids into
    ``catalog.affinity_names``, :func:`strongest_affinities`)."""
    first_style = len(GENRES)
    first_affinity = first_style + len(catalog.style_names)
    parts = [
        (styles[0], first_style + styles[1], styles[2], TOP_STYLES),
        (genres[0], genres[1], genres[2], TOP_GENRES),
        (affinities[0], first_affinity + affinities[1], affinities[2], 2 * TOP_AFFINITIES),
    ]
    kept = [
        (user[top], group[top], share[top], np.full(int(top.sum()), part))
        for part, (user, group, share, most) in enumerate(parts)
        for top in [ranks_in_runs(user) <= most if len(user) else np.zeros(0, bool)]
    ]
    user, group, share, part = (np.concatenate(column) for column in zip(*kept, strict=True))
    order = np.lexsort((np.arange(len(user)), part, user))
    return user[order], group[order].astype(np.int64), share[order].astype(np.float64)
