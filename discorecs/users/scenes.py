"""The "scenes" taste model: collectors who follow labels, their artists and an era.

``discorecs generate-users --taste-model scenes``. The default model (``genres``,
:mod:`discorecs.users.generate`) draws every record through a genre or a style, which is how
the nightly recommender reasons; real collectors often do not. Here:

- a **scene** is a label in a decade ("a label's 1970s"): the catalog's releases on that
  label whose year falls in that decade, most popular first, and the artists of those
  releases. Every (label, decade) with at least ``MIN_SCENE_RELEASES`` releases is one;
- each collector follows 1, 2 or 3 scenes (50 / 30 / 20 %), drawn in proportion to the
  square root of a scene's size (big labels draw more followers, small ones still some),
  mixed 1 : 0.5 : 0.3 like the genre model's preferred genres;
- **each record**: 50 % a release of one of their scenes (by the mixture), by Zipf-like
  popularity within the scene; 35 % *completing an artist*: a release of the scene as
  before, then another release by its first artist, on any label and in any year, by the
  same popularity law within the artist's releases; 15 % noise: any release of the catalog
  by popularity;
- collection and wantlist sizes are drawn as in the genre model (lognormal, median 30 and
  8); a release drawn twice counts once, so collections come out smaller (median ~20);
- the preferred genres and styles written for each user (which the event producers draw
  from) are the most common ones of the user's own records.

Releases without a year belong to no scene but can still be drawn by artist or as noise.
Popularity is the sampling catalog's seeded rank, so the two models share what is popular.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from discorecs.affinities import CREDIT_COLUMNS, first_artists, label_era
from discorecs.errors import DiscorecsError
from discorecs.flatlists import offsets_of, ranks_in_runs, spans
from discorecs.users.sampling_catalog import Lists, SamplingCatalog, csr_lists

SCENE_COUNT_SHARES = (0.5, 0.3, 0.2)
SCENE_MIXTURE = np.array([1.0, 0.5, 0.3])
FROM_SCENE, FROM_ARTIST = 0.50, 0.35  # the rest (15 %) is noise
MIN_SCENE_RELEASES = 4
SCENE_COLUMNS = ("release_id", *CREDIT_COLUMNS)


class NoScenesError(DiscorecsError):
    """The catalog has no label with enough releases in one decade to make a scene."""


@dataclass(frozen=True)
class SceneIndex:
    """Scenes and artists as lists of catalog positions (indices into the sampling catalog's
    ``release_ids``, most popular first)."""

    scenes: Lists  # per scene: positions
    scene_names: tuple[str, ...]  # "Label (1970s)"
    scene_cumulative: np.ndarray  # cumulative choice weights, last = 1
    first_artist: np.ndarray  # per position: artist code, -1 when unknown
    artists: Lists  # per artist code: positions

    @property
    def count(self) -> int:
        return len(self.scene_names)


def build_scene_index(releases: pa.Table, index: SamplingCatalog) -> SceneIndex:
    """Scenes of a table with ``release_id``, ``artists``, ``labels`` and ``year`` (pure)."""
    position = _positions(releases["release_id"].to_numpy(), index.release_ids)
    in_index = position >= 0

    labels = releases["labels"].combine_chunks()
    label_row = pc.list_parent_indices(labels).to_numpy()
    label_codes = pc.dictionary_encode(pc.list_flatten(labels))
    label_code = label_codes.indices.to_numpy(zero_copy_only=False)
    year = releases["year"].fill_null(0).to_numpy(zero_copy_only=False).astype(np.int64)
    decade = year[label_row] // 10
    usable = in_index[label_row] & (decade > 0) & pc.is_valid(label_codes).to_numpy(False)
    pair_position = position[label_row][usable]
    pair_scene = label_code[usable] * 1000 + decade[usable] % 1000
    # One entry per (scene, release), however often a release lists the label.
    pairs = np.unique(np.stack([pair_scene, pair_position]), axis=1)
    keys, codes, sizes = np.unique(pairs[0], return_inverse=True, return_counts=True)
    kept = sizes >= MIN_SCENE_RELEASES
    if not kept.any():
        raise NoScenesError(
            "no label has enough releases in one decade to make a scene; the scenes taste "
            f"model needs labels with {MIN_SCENE_RELEASES}+ releases of known year "
            "(ingest a larger dump, or use --taste-model genres)"
        )
    renumber = np.cumsum(kept) - 1
    entries = kept[codes]
    scenes = csr_lists(renumber[codes[entries]], pairs[1][entries], int(kept.sum()))
    weights = np.sqrt(sizes[kept].astype(float))
    names = label_codes.dictionary.to_pylist()
    scene_names = tuple(label_era(names[k // 1000], (k % 1000) * 10) for k in keys[kept])

    first = first_artists(releases["artists"].combine_chunks())
    known = in_index & pc.is_valid(first).to_numpy(zero_copy_only=False)
    artist_codes = pc.dictionary_encode(first)
    artist_code = artist_codes.indices.fill_null(0).to_numpy(zero_copy_only=False)
    first_artist = np.full(index.size, -1, dtype=np.int64)
    first_artist[position[known]] = artist_code[known]
    artists = csr_lists(
        artist_code[known].astype(np.int64), position[known], len(artist_codes.dictionary)
    )
    return SceneIndex(
        scenes, scene_names, np.cumsum(weights) / weights.sum(), first_artist, artists
    )


def _positions(release_ids: np.ndarray, ranked_ids: np.ndarray) -> np.ndarray:
    """Each id's position in ``ranked_ids`` (the sampling catalog's popularity order), -1 if
    absent (a release without a genre is not in the index)."""
    order = np.argsort(ranked_ids)
    at = np.minimum(np.searchsorted(ranked_ids, release_ids, sorter=order), len(order) - 1)
    found = ranked_ids[order[at]] == release_ids
    return np.where(found, order[at], -1)


def draw_scenes(scenes: SceneIndex, count: int, rng: np.random.Generator):
    """(count, 3) scene codes (-1 = none) and their mixture weights (rows sum to 1)."""
    drawn = np.searchsorted(scenes.scene_cumulative, rng.random((count, 3)), side="right")
    drawn = np.minimum(drawn, scenes.count - 1)
    wanted = rng.choice([1, 2, 3], count, p=SCENE_COUNT_SHARES)
    # A scene drawn twice counts once (its weight is the first slot's).
    repeated = np.zeros((count, 3), dtype=bool)
    repeated[:, 1] = drawn[:, 1] == drawn[:, 0]
    repeated[:, 2] = (drawn[:, 2] == drawn[:, 0]) | (drawn[:, 2] == drawn[:, 1])
    valid = (np.arange(3) < wanted[:, None]) & ~repeated
    mixture = SCENE_MIXTURE * valid
    return np.where(valid, drawn, -1), mixture / mixture.sum(axis=1, keepdims=True)


def _zipf_in(lists: Lists, which: np.ndarray, u: np.ndarray, exponent: float) -> np.ndarray:
    """A member of list ``which[i]`` at popularity position ``floor(size * u ** exponent)``."""
    return lists.members[lists.offsets[which] + (lists.sizes[which] * u**exponent).astype(np.int64)]


def draw_scene_positions(
    index: SamplingCatalog,
    scenes: SceneIndex,
    followed: np.ndarray,
    mixture: np.ndarray,
    rows: np.ndarray,
    rng: np.random.Generator,
    exponent: float,
) -> np.ndarray:
    """One release (a catalog position) per entry of ``rows``, drawn by the scenes of user
    ``rows[i]`` (a row of ``followed``/``mixture``)."""
    cumulative = np.cumsum(mixture[rows], axis=1)
    slot = np.minimum((rng.random(len(rows))[:, None] > cumulative).sum(axis=1), 2)
    scene = followed[rows, slot]
    in_scene = _zipf_in(scenes.scenes, scene, rng.random(len(rows)), exponent)
    artist = scenes.first_artist[in_scene]
    by_artist = _zipf_in(scenes.artists, np.maximum(artist, 0), rng.random(len(rows)), exponent)
    by_artist = np.where(artist >= 0, by_artist, in_scene)
    noise = (index.size * rng.random(len(rows)) ** exponent).astype(np.int64)
    way = rng.random(len(rows))
    return np.where(
        way < FROM_SCENE, in_scene, np.where(way < FROM_SCENE + FROM_ARTIST, by_artist, noise)
    )


def most_common(rows: np.ndarray, codes: np.ndarray, users: int, kept: int) -> np.ndarray:
    """(users, kept) of each user's most frequent codes (ties: lower code), -1 padded.
    ``rows[i]`` is the user of code ``codes[i]``; codes below 0 are ignored."""
    valid = codes >= 0
    rows, codes = rows[valid], codes[valid]
    width = int(codes.max()) + 1 if len(codes) else 1
    pairs, counts = np.unique(rows * width + codes, return_counts=True)
    user, code = np.divmod(pairs, width)
    order = np.lexsort((code, -counts, user))
    user, code = user[order], code[order]
    rank = ranks_in_runs(user) - 1
    out = np.full((users, kept), -1, dtype=np.int64)
    top = rank < kept
    out[user[top], rank[top]] = code[top]
    return out


def codes_of_records(lists: Lists, size: int, rows: np.ndarray, positions: np.ndarray):
    """(rows, codes): one entry per record ``(rows[i], positions[i])`` and list code (genre
    or style) the record's release belongs to, for the ``size`` catalog positions."""
    codes = np.repeat(np.arange(len(lists.sizes)), lists.sizes)
    order = np.argsort(lists.members, kind="stable")
    which, at = spans(offsets_of(lists.members, size), positions)
    return rows[which], codes[order][at]
