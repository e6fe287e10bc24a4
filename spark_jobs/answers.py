"""The API's answers, rendered from Arrow batches of users (pure; no Spark, no Cassandra).

The nightly batch stores each user's answer whole (``tables.RECOMMENDATION_COLUMNS``) so the
site sends it as read. Spark gathers each user's friends (already JSON, in rank order) and
picks (rank, release id, score, reason; in rank order); :func:`render_answers` puts the
documents together here, a column at a time, with each picked release's details rendered
once for the whole run (a few thousand releases are picked for a million users, fifteen
times each) and looked up by id. The picks travel to this step small (ids, scores,
reasons), so what Spark shuffles and sorts per user is not the kilobytes of text each
pick becomes.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from discorecs import tables
from discorecs.flatlists import flat_lists
from discorecs.tables import document_json

_TYPES = {
    "user_id": "long",
    "run_id": "string",
    "genre_profile": "string",
    "recommendation": "string",
    "spare_picks": "string",
    "pick_ids": "binary",
}
RUN_ROW_SCHEMA = ", ".join(f"{name} {_TYPES[name]}" for name in tables.RECOMMENDATION_COLUMNS)
"""What :func:`render_answers` yields, as Spark's DDL: ``tables.RECOMMENDATION_COLUMNS``."""


def only_id(release_id: int) -> str:
    """The details of a release the catalog does not have: its id, every other field empty
    (lists) or null, as the site's models expect."""
    lists = {"artists", "genres", "styles", "formats"}
    return document_json(
        {
            name: release_id if name == "release_id" else [] if name in lists else None
            for name in tables.RELEASE_FIELDS
        }
    )


@functools.cache
def _key(name: str) -> str:
    return document_json(name) + ":"


def render_answers(
    batches: Iterator[pa.RecordBatch],
    run_id: str,
    generated_at: str,
    details: Mapping[int, str],
    shown: int = tables.RELEASES_SHOWN,
) -> Iterator[pa.RecordBatch]:
    """Each user's run row (:data:`RUN_ROW_SCHEMA`) from batches of user_id, ``friends``
    (the friend picks' JSON texts, the recommended friend first; null: the user has no
    friend, so no recommendation), ``picks`` (a list of rank, release_id, score, reason in
    rank order; null when none) and, if the batches have it, ``genre_profile`` (passed
    through). ``details``: release id -> its JSON (``tables.RELEASE_FIELDS``); a release
    not in it has only its id. The first ``shown`` ranks go in the answer, the rest are its
    spares, and every pick's id is kept in rank order (``tables.packed_release_ids``).

    Column at a time (Arrow's string kernels), not user by user: a pick's text is joined
    from its release's details, score and reason, and a user's lists from their picks'."""
    known_ids = pa.array(list(details), pa.int64())
    known_texts = pa.array(list(details.values()), pa.string())
    fixed = {"run_id": document_json(run_id), "generated_at": document_json(generated_at)}
    for batch in batches:
        friends = batch.column("friends")
        befriended = pc.is_valid(friends)
        offsets, picks = flat_lists(batch.column("picks"))
        ids = picks.field("release_id").cast(pa.int64())
        texts = _joined(
            '{"release":',
            _release_texts(ids, known_ids, known_texts),
            ',"score":',
            pc.cast(picks.field("score"), pa.string()).fill_null("null"),
            ',"reason":',
            _json_texts(picks.field("reason")),
            "}",
        )
        in_answer = pc.less_equal(picks.field("rank"), shown)
        before = np.concatenate([[0], np.cumsum(in_answer.to_numpy(zero_copy_only=False))])
        answer_counts = before[offsets[1:]] - before[offsets[:-1]]
        spare_counts = np.diff(offsets) - answer_counts
        values = {
            **fixed,
            "friend": pc.list_element(friends, 0),
            "other_friends": _json_array(pc.list_slice(friends, 1)),
            "releases": _json_array(_lists(answer_counts, texts.filter(in_answer))),
            "left_out": "[]",
        }
        pieces: list[Any] = []
        for at, name in enumerate(tables.RECOMMENDATION_FIELDS):
            pieces += ["{" if at == 0 else ",", _key(name), values[name]]
        spares = _json_array(_lists(spare_counts, texts.filter(pc.invert(in_answer))))
        columns = {
            "user_id": batch.column("user_id"),
            "run_id": pa.array([run_id] * batch.num_rows, pa.string()),
            "genre_profile": (
                batch.column("genre_profile")
                if "genre_profile" in batch.schema.names
                else pa.nulls(batch.num_rows, pa.string())
            ),
            "recommendation": _joined(*pieces, "}"),
            "spare_picks": pc.if_else(befriended, spares, pa.scalar(None, pa.string())),
            "pick_ids": _packed(offsets, ids, befriended),
        }
        yield pa.record_batch({name: columns[name] for name in tables.RECOMMENDATION_COLUMNS})


def _joined(*parts: Any) -> pa.Array:
    """The parts (string arrays and texts) joined row by row; null where any part is."""
    return pc.binary_join_element_wise(*parts, "", null_handling="emit_null")


def _json_array(lists: pa.Array) -> pa.Array:
    """A JSON array of each row's list of JSON texts."""
    return _joined("[", pc.binary_join(lists, ","), "]")


def _lists(counts: np.ndarray, values: pa.Array) -> pa.ListArray:
    """Consecutive runs of ``values``, ``counts[i]`` of them in row i."""
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int32)
    return pa.ListArray.from_arrays(pa.array(offsets), values)


def _release_texts(ids: pa.Array, known_ids: pa.Array, known_texts: pa.Array) -> pa.Array:
    """Each release's details as JSON; a release not among the known has only its id."""
    texts = known_texts.take(pc.index_in(ids, value_set=known_ids))
    missing = pc.is_null(texts)
    if not pc.any(missing).as_py():
        return texts
    unknown = [
        only_id(release) if lost else None
        for release, lost in zip(ids.to_pylist(), missing.to_pylist(), strict=True)
    ]
    return pc.if_else(missing, pa.array(unknown, pa.string()), texts)


def _json_texts(texts: pa.Array) -> pa.Array:
    """Each text as a JSON string (null as null), each distinct text encoded once."""
    encoded = pc.dictionary_encode(texts)
    texts_once = encoded.dictionary.to_pylist()
    rendered = pa.array([document_json(text) for text in texts_once], pa.string())
    return rendered.take(encoded.indices).fill_null("null")


def _packed(offsets: np.ndarray, ids: pa.Array, valid: pa.Array) -> pa.Array:
    """Each row's release ids as ``tables.packed_release_ids`` packs them (8 bytes
    big-endian each); null where not ``valid``."""
    data = ids.to_numpy(zero_copy_only=False).astype(">i8").tobytes()
    packed = pa.BinaryArray.from_buffers(
        pa.binary(),
        len(offsets) - 1,
        [None, pa.py_buffer((offsets * 8).astype(np.int32).tobytes()), pa.py_buffer(data)],
    )
    return pc.if_else(valid, packed, pa.scalar(None, pa.binary()))
