"""Release picks for a batch of users, vectorised with numpy: the per-user core of
:func:`spark_jobs.releases.pick_lists`, which feeds it Arrow batches of users.

Why numpy and not Spark SQL: every user has up to (3 styles + 2 genres + 4 affinity
groups) x 40 popular candidates. As rows that is up to 360 candidate rows per user, shuffled
three times (sum per release, drop what the user holds, rank): 360M shuffled rows for 1M
users. Here a batch of users' candidates live in flat arrays: one sort groups them, one
sorted membership test drops what is held, one more sort ranks them; nothing is shuffled.

Lists per user are flat (:mod:`discorecs.flatlists`), as Arrow stores them.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from discorecs.catalog.index import CatalogIndex
from discorecs.flatlists import contains, offsets_of, owners, ranks_in_runs, run_starts, spans
from discorecs.genres import GENRES

# Scores and similarities are rounded before ranking: sums of floats depend on the order Spark
# adds them in (its partitioning), and the last bits must not decide a tie that the id breaks.
RANKING_DIGITS = 9
FRIEND_BONUS = 0.5
NO_SOURCE = -1  # the source of a fallback pick: the most collected records overall
CO_CANDIDATES_PER_RECORD = 10
"""How many of each owned release's most similar releases are candidates: a collection of
50 records brings 500 co-collection candidates at most, beside its ~360 taste candidates."""


@dataclass(frozen=True)
class PopularLists:
    """The most owned releases of each taste group (a genre, a style, an artist or a
    label-era) as flat lists: group ``g`` is named ``names[g]`` and has
    ``releases[offsets[g]:offsets[g + 1]]``, most owned first, with ``popularity`` (their
    share of the group's ownership). Most groups of a large catalog hold a handful of
    releases, so the lists are flat rather than a (groups x depth) table."""

    names: pa.Array  # string
    offsets: np.ndarray
    releases: np.ndarray
    popularity: np.ndarray

    @classmethod
    def build(cls, rows: Iterable[tuple[str, int, float]], depth: int) -> PopularLists:
        """From (group name, release id, popularity) rows, each group's rows in rank order;
        groups sorted by name, at most ``depth`` releases each."""
        by_group: dict[str, list[tuple[int, float]]] = {}
        for name, release_id, share in rows:
            by_group.setdefault(name, []).append((release_id, share))
        names = sorted(by_group)
        entries = [by_group[name][:depth] for name in names]
        flat = [entry for group in entries for entry in group]
        return cls(
            pa.array(names, pa.string()),
            np.concatenate([[0], np.cumsum([len(group) for group in entries])]).astype(np.int64),
            np.array([r for r, _ in flat], dtype=np.int64),
            np.array([p for _, p in flat], dtype=np.float64),
        )


def most_owned(
    catalog: CatalogIndex,
    release_ids: np.ndarray,
    owner_counts: np.ndarray,
    depth: int,
    fallback_depth: int,
) -> tuple[PopularLists, np.ndarray, np.ndarray]:
    """From each owned release's number of owners: the ``depth`` most owned releases of
    every taste group (:attr:`CatalogIndex.group_names`) with their popularity (share of the group's
    ownership), and the ``fallback_depth`` most owned catalog releases overall (ids,
    owners). Ties: lower release id first. Releases not in the catalog count for
    nothing."""
    at, known = catalog.locate(release_ids)
    at, counts = at[known], owner_counts[known].astype(np.int64)

    # (group, owned release) pairs: genres are groups 0..14, then styles, then affinities.
    genre_of = [np.flatnonzero((catalog.genre_bits[at] >> g) & 1) for g in range(len(GENRES))]
    by_style, style_at = spans(catalog.style_offsets, at)
    by_affinity, affinity_at = spans(catalog.affinity_offsets, at)
    first_affinity = len(GENRES) + len(catalog.style_names)
    member = np.concatenate([*genre_of, by_style, by_affinity]).astype(np.int64)
    group = np.concatenate(
        [np.full(len(m), g) for g, m in enumerate(genre_of)]
        + [len(GENRES) + catalog.style_ids[style_at]]
        + [first_affinity + catalog.affinity_ids[affinity_at]]
    ).astype(np.int64)
    owners_of, release_of = counts[member], catalog.release_ids[at][member]
    order = np.lexsort((release_of, -owners_of, group))
    group, owners_of, release_of = group[order], owners_of[order], release_of[order]
    groups = first_affinity + len(catalog.affinity_names)
    totals = np.bincount(group, weights=owners_of, minlength=groups)
    top = ranks_in_runs(group) <= depth
    group, owners_of, release_of = group[top], owners_of[top], release_of[top]
    popular = PopularLists(
        catalog.group_names,
        offsets_of(group, groups),
        release_of.astype(np.int64),
        owners_of / totals[group] if len(group) else np.zeros(0),
    )
    overall = np.lexsort((catalog.release_ids[at], -counts))[:fallback_depth]
    return popular, catalog.release_ids[at][overall], counts[overall]


@dataclass(frozen=True)
class SimilarReleases:
    """Each release's most similar releases (:mod:`spark_jobs.cocollection`) as flat lists:
    ``release_ids`` sorted, release ``release_ids[i]`` has ``similar[offsets[i]:offsets[i+1]]``
    with ``similarity``."""

    release_ids: np.ndarray
    offsets: np.ndarray
    similar: np.ndarray
    similarity: np.ndarray

    @classmethod
    def build(
        cls, release_ids: np.ndarray, similar: np.ndarray, similarity: np.ndarray
    ) -> SimilarReleases:
        """From (release, similar release, similarity) rows in any order."""
        order = np.lexsort((similar, -similarity, release_ids))
        release_ids, similar, similarity = (a[order] for a in (release_ids, similar, similarity))
        starts = np.flatnonzero(run_starts(release_ids)) if len(release_ids) else np.zeros(0, int)
        offsets = np.concatenate([starts, [len(release_ids)]]).astype(np.int64)
        return cls(
            release_ids[starts].astype(np.int64),
            offsets,
            similar.astype(np.int64),
            similarity.astype(np.float64),
        )

    def as_table(self) -> pa.Table:
        """release_id, similar_id, similarity: one row per kept neighbour."""
        return pa.table(
            {
                "release_id": self.release_ids[owners(self.offsets)],
                "similar_id": self.similar,
                "similarity": self.similarity,
            }
        )

    def candidates(self, user: np.ndarray, owned: np.ndarray, most: int | None = None):
        """(user, release, similarity, because): the releases similar to one a user owns
        (the ``most`` most similar of each, or all), once per owned release that suggests
        it (``because``)."""
        if len(self.release_ids) == 0:
            return (np.zeros(0, np.int64),) * 2 + (np.zeros(0),) + (np.zeros(0, np.int64),)
        at = np.minimum(np.searchsorted(self.release_ids, owned), len(self.release_ids) - 1)
        found = np.flatnonzero(self.release_ids[at] == owned)
        which, position = spans(self.offsets, at[found])
        if most is not None:
            best = position - self.offsets[at[found]][which] < most
            which, position = which[best], position[best]
        return (
            user[found][which],
            self.similar[position],
            self.similarity[position],
            owned[found][which],
        )


@dataclass(frozen=True)
class Picks:
    """Ranked picks, one row per (user index, rank); ``source`` indexes the group names, or
    is NO_SOURCE; ``because`` is the owned release that suggested a co-collection pick
    (NO_SOURCE for a taste pick)."""

    user: np.ndarray
    rank: np.ndarray
    release: np.ndarray
    score: np.ndarray
    source: np.ndarray
    friend_owns: np.ndarray
    because: np.ndarray


def _keys(user: np.ndarray, release: np.ndarray) -> np.ndarray:
    # Release ids are below 2**32 (Discogs ids are in the tens of millions).
    return (user.astype(np.int64) << 32) | release.astype(np.int64)


def pick_releases(
    users: int,
    taste_offsets: np.ndarray,
    taste_groups: np.ndarray,  # index in popular.names (-1: none)
    taste_shares: np.ndarray,
    held_offsets: np.ndarray,
    held_releases: np.ndarray,
    friend_offsets: np.ndarray,
    friend_releases: np.ndarray,
    wants_picks: np.ndarray,
    popular: PopularLists,
    fallback_releases: np.ndarray,
    fallback_owners: np.ndarray,
    kept: int,
    *,
    similar: SimilarReleases | None = None,
    owned_offsets: np.ndarray | None = None,
    owned_releases: np.ndarray | None = None,
    co_weight: float = 0.0,
) -> Picks:
    """The top ``kept`` releases for each of ``users`` users that they neither own nor want.

    A candidate is one of the popular releases of a group in the user's taste lists (their
    top styles, genres and affinity groups, with the share of their collection each takes);
    its taste score is the sum over those groups of share x popularity, its source the group
    that gave the most. It scores ``taste x (1 + FRIEND_BONUS)`` when the recommended friend
    owns it, and ``taste`` otherwise. Users in ``wants_picks`` left with no candidate get the
    fallback releases (most owned overall) they do not hold, scored owners x 1e-9. Ties:
    lower release id first.

    With ``similar`` (and each user's owned releases), the releases similar to what a user
    owns are candidates too, and a candidate scores ``(1 - co_weight) x taste / best taste
    + co_weight x co / best co`` (each part relative to the user's best candidate by it;
    ``co`` is the similarity summed over the owned releases that suggest it, ``because`` the
    strongest of them when that part outweighs the taste part), before the friend bonus.
    """
    held = np.sort(_keys(owners(held_offsets), held_releases))
    # A group outside ``popular`` (-1: unknown) has no candidates.
    known = (taste_groups >= 0) & (taste_groups < len(popular.offsets) - 1)
    taste_users, taste_groups, taste_shares = (
        owners(taste_offsets)[known],
        taste_groups[known].astype(np.int64),
        taste_shares[known],
    )
    which, at = spans(popular.offsets, taste_groups)
    user_of, group_of, release = taste_users[which], taste_groups[which], popular.releases[at]
    weight = taste_shares[which] * popular.popularity[at]

    # One row per (user, release): summed weight, the source with the largest part (of
    # equal parts, the lower group index). One sort of one int64 key; the rest is per run.
    keys = _keys(user_of, release)
    order = np.argsort(keys, kind="stable")
    keys, user_of, group_of, release, weight = (
        a[order] for a in (keys, user_of, group_of, release, weight)
    )
    starts = np.flatnonzero(run_starts(keys))
    run = np.cumsum(run_starts(keys)) - 1
    taste = np.add.reduceat(weight, starts) if len(starts) else np.zeros(0)
    largest = np.maximum.reduceat(weight, starts) if len(starts) else np.zeros(0)
    no_group = np.int64(np.iinfo(np.int64).max)
    contenders = np.where(weight == largest[run], group_of, no_group)
    source = np.minimum.reduceat(contenders, starts) if len(starts) else contenders
    user_of, release, keys = (a[starts] for a in (user_of, release, keys))
    group_of = source
    because = np.full(len(keys), NO_SOURCE, dtype=np.int64)
    if similar is not None and owned_offsets is not None and owned_releases is not None:
        keys, taste, group_of, because = _blend_co_collection(
            keys,
            taste,
            group_of,
            similar.candidates(
                owners(owned_offsets), owned_releases.astype(np.int64), CO_CANDIDATES_PER_RECORD
            ),
            co_weight,
        )
        user_of, release = keys >> 32, keys & 0xFFFFFFFF

    fresh = ~contains(held, keys)
    user_of, group_of, release, keys, taste, because = (
        a[fresh] for a in (user_of, group_of, release, keys, taste, because)
    )
    friend_owns = contains(np.sort(_keys(owners(friend_offsets), friend_releases)), keys)
    score = np.round(taste * np.where(friend_owns, 1.0 + FRIEND_BONUS, 1.0), RANKING_DIGITS)

    # Fallback for the users with nothing left.
    has_candidate = np.zeros(users, dtype=bool)
    has_candidate[user_of] = True
    needy = np.flatnonzero(wants_picks & ~has_candidate)
    f_user = np.repeat(needy, len(fallback_releases))
    f_release = np.tile(fallback_releases.astype(np.int64), len(needy))
    f_score = np.tile(fallback_owners.astype(np.float64) * 1e-9, len(needy))
    f_fresh = ~contains(held, _keys(f_user, f_release))

    user_of = np.concatenate([user_of, f_user[f_fresh]])
    release = np.concatenate([release, f_release[f_fresh]])
    score = np.concatenate([score, f_score[f_fresh]])
    source = np.concatenate([group_of, np.full(int(f_fresh.sum()), NO_SOURCE)])
    friend_owns = np.concatenate([friend_owns, np.zeros(int(f_fresh.sum()), dtype=bool)])
    because = np.concatenate([because, np.full(int(f_fresh.sum()), NO_SOURCE)])

    # By user, then score descending, then release: the rows of a user are in release order
    # (candidates) or in fallback order (most owned, then release), so a stable sort on
    # user + a fraction falling with the score keeps that order among equal scores. Scores
    # are below 4 (shares sum to at most 1 per list, x 1.5) and 1e-9 apart at least.
    order = np.argsort(user_of + (1.0 - np.clip(score, 0.0, 3.999) / 4.0), kind="stable")
    user_of, release, score, source, friend_owns, because = (
        a[order] for a in (user_of, release, score, source, friend_owns, because)
    )
    rank = ranks_in_runs(user_of)
    top = rank <= kept
    return Picks(
        user_of[top],
        rank[top],
        release[top],
        score[top],
        source[top],
        friend_owns[top],
        because[top],
    )


def _blend_co_collection(
    keys: np.ndarray,
    taste: np.ndarray,
    group: np.ndarray,
    co_candidates: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
    co_weight: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(keys, score, group, because) of the taste candidates (one row per key) merged with
    the co-collection candidates (one row per suggesting owned release), sorted by key."""
    c_user, c_release, c_similarity, c_because = co_candidates
    c_keys = _keys(c_user, c_release)
    # Per key: the summed similarity, and the strongest suggestion (ties: the lower owned
    # release) behind it.
    order = np.argsort(c_keys, kind="stable")
    c_keys, c_similarity, c_because = (a[order] for a in (c_keys, c_similarity, c_because))
    c_starts = np.flatnonzero(run_starts(c_keys)) if len(c_keys) else np.zeros(0, np.int64)
    co = np.add.reduceat(c_similarity, c_starts) if len(c_starts) else np.zeros(0)
    if len(c_starts):
        run = np.cumsum(run_starts(c_keys)) - 1
        strongest = np.maximum.reduceat(c_similarity, c_starts)[run] == c_similarity
        c_because = np.minimum.reduceat(
            np.where(strongest, c_because, np.iinfo(np.int64).max), c_starts
        )
    c_keys = c_keys[c_starts]

    every = np.concatenate([keys, c_keys])
    order = np.argsort(every, kind="stable")
    every = every[order]
    taste_part = np.concatenate([taste, np.zeros(len(c_keys))])[order]
    co_part = np.concatenate([np.zeros(len(keys)), co])[order]
    groups = np.concatenate([group, np.full(len(c_keys), NO_SOURCE)])[order]
    becauses = np.concatenate([np.full(len(keys), NO_SOURCE), c_because])[order]
    if len(every) == 0:
        return every, taste_part, groups, becauses
    starts = np.flatnonzero(run_starts(every))
    keys = every[starts]
    taste_part, co_part = (np.add.reduceat(a, starts) for a in (taste_part, co_part))
    groups, becauses = (np.maximum.reduceat(a, starts) for a in (groups, becauses))

    user = keys >> 32
    first = run_starts(user)
    run = np.cumsum(first) - 1
    best_taste = np.maximum.reduceat(taste_part, np.flatnonzero(first))[run]
    best_co = np.maximum.reduceat(co_part, np.flatnonzero(first))[run]
    taste_part = (1.0 - co_weight) * np.divide(
        taste_part, best_taste, out=np.zeros(len(keys)), where=best_taste > 0
    )
    co_part = co_weight * np.divide(co_part, best_co, out=np.zeros(len(keys)), where=best_co > 0)
    co_led = co_part > taste_part
    return (
        keys,
        taste_part + co_part,
        np.where(co_led, NO_SOURCE, groups),
        np.where(co_led, becauses, NO_SOURCE),
    )
