"""The stream's marking step (pure): every raw Kafka record comes out once, valid or with the
reason it is dead-lettered, whatever it holds."""

import json
from datetime import UTC, datetime, timedelta

import numpy as np
import pyarrow as pa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from discorecs.events import TOPIC_OF_KIND, Event, EventKind
from streaming import transform
from streaming.transform import mark_records

T = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


def event(event_id, user, release, kind, minute=0):
    return Event(event_id, user, release, kind, T.replace(minute=minute)).to_json()


def user_key(payload):
    """The Kafka key a producer gives ``payload``: its user id (b"1" if it has none)."""
    try:
        return str(json.loads(payload)["user_id"]).encode()
    except (TypeError, ValueError, KeyError):
        return b"1"


def kind_topic(payload):
    """The topic a producer sends ``payload`` to: its kind's (collection_events if none)."""
    try:
        return TOPIC_OF_KIND[EventKind(json.loads(payload)["kind"])]
    except (TypeError, ValueError, KeyError):
        return "collection_events"


def raw_records(payloads, keys=None, topics=None, timestamps=None):
    """Raw Kafka records as the source hands them over (one Arrow batch), keyed by user id
    and on their kind's topic unless ``keys`` and ``topics`` are given."""
    count = len(payloads)
    return pa.RecordBatch.from_pydict(
        {
            "topic": topics or [kind_topic(p) for p in payloads],
            "kafka_partition": pa.array([0] * count, pa.int32()),
            "kafka_offset": pa.array(range(count), pa.int64()),
            "key": pa.array(keys or [user_key(p) for p in payloads], pa.binary()),
            "value": pa.array(payloads, pa.binary()),
            "timestamp": pa.array(
                [T] * count if timestamps is None else timestamps, pa.timestamp("us", tz="UTC")
            ),
        }
    )


def test_mark_records_sends_each_kind_of_bad_event_to_the_dead_letters():
    payloads = [
        event("ok", 1, 10, EventKind.COLLECTION_ADD),
        b"{not json",
        json.dumps(
            {"event_id": "m", "user_id": 1, "kind": "play", "event_time": "2026-11-25T12:00:00Z"}
        ).encode(),
        event("u", 99, 10, EventKind.COLLECTION_ADD),
        event("r", 1, 77, EventKind.COLLECTION_ADD),
        json.dumps(
            {
                "event_id": "k",
                "user_id": 1,
                "release_id": 10,
                "kind": "sell",
                "event_time": "2026-11-25T12:00:00Z",
            }
        ).encode(),
        None,
        b"\xff\xfe not utf-8",
    ]
    marked = mark_records(
        raw_records(payloads), np.array([1], np.int64), np.array([10], np.int64)
    ).to_pylist()
    assert [r["kafka_offset"] for r in marked] == list(range(len(payloads)))
    assert marked[0] == {
        "topic": "collection_events",
        "kafka_partition": 0,
        "kafka_offset": 0,
        "payload": None,
        "reason": None,
        "event_id": "ok",
        "user_id": 1,
        "release_id": 10,
        "kind": "collection_add",
        "event_time": T,
        "ingested_at": T,
    }
    reasons = [r["reason"] for r in marked]
    assert reasons[1].startswith("not JSON")
    assert reasons[2] == "missing field(s): release_id"
    assert reasons[3] == "unknown user 99"
    assert reasons[4] == "unknown release 77"
    assert reasons[5].startswith("unknown kind 'sell'")
    assert reasons[6] == "empty payload"
    assert reasons[7] == "not UTF-8: byte 0xff at offset 0 (invalid start byte)"
    assert marked[1]["payload"] == b"{not json"
    assert marked[7]["payload"] == b"\xff\xfe not utf-8"  # kept as received
    assert marked[3]["payload"] == payloads[3]
    assert [r["event_id"] for r in marked if r["reason"] is None] == ["ok"]


def test_mark_records_dead_letters_what_once_stopped_the_stream():
    def raw(**fields):
        values = {
            "event_id": "x",
            "user_id": 1,
            "release_id": 10,
            "kind": "collection_add",
            "event_time": "2026-11-25T12:00:00Z",
            **fields,
        }
        return json.dumps(values).encode()

    deep = b'{"event_id": ' + b"[" * 5000 + b"]" * 5000 + b"}"
    payloads = [
        event("ok", 1, 10, EventKind.COLLECTION_ADD),
        raw(user_id=2**63),
        raw(release_id=2**64 + 3),
        raw(event_time="9999-12-31T23:59:59-01:00"),
        raw(event_time="0001-01-01T00:00:00+01:00"),
        deep,
        b'{"event_id": "\\ud800", "user_id": 1, "release_id": 10, "kind": "collection_add",'
        b' "event_time": "2026-11-25T12:00:00Z"}',
        raw(event_time="2999-01-01T00:00:00Z"),  # from the future
        raw(event_time=(T + timedelta(minutes=4)).isoformat()),  # within the margin
        raw(kind="wantlist_add"),  # on collection_events
        raw(kind="play"),
    ]
    topics = ["collection_events"] * len(payloads)
    marked = mark_records(
        raw_records(payloads, keys=[b"1"] * len(payloads), topics=topics),
        np.array([1], np.int64),
        np.array([10], np.int64),
    ).to_pylist()
    reasons = [r["reason"] for r in marked]
    assert reasons[0] is None and reasons[8] is None
    assert reasons[1] == "user_id must be an integer from 1 to 2^63-1, got 9223372036854775808"
    assert reasons[2].startswith("release_id must be an integer from 1 to 2^63-1")
    assert "outside years 1-9999" in reasons[3] and "outside years 1-9999" in reasons[4]
    assert reasons[5].startswith("unreadable event (RecursionError")
    assert reasons[6].startswith("event_id is not valid Unicode")
    assert reasons[7].startswith("event_time 2999-01-01T00:00:00+00:00 is more than 0:05:00")
    assert reasons[9] == "a wantlist_add event belongs on topic activity_events, not " + (
        "collection_events"
    )
    assert reasons[10].startswith("a play event belongs on topic activity_events")
    assert [r["user_id"] for r in marked if r["reason"]] == [None] * 9  # nothing half-read


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.tuples(
            st.one_of(
                st.none(),
                st.binary(max_size=200),
                st.recursive(
                    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
                    lambda inner: (
                        st.lists(inner, max_size=4)
                        | st.dictionaries(st.text(max_size=12), inner, max_size=5)
                    ),
                    max_leaves=20,
                ).map(lambda value: json.dumps(value).encode()),
                st.fixed_dictionaries(
                    {
                        "event_id": st.text(max_size=70),
                        "user_id": st.integers() | st.text(max_size=5),
                        "release_id": st.integers(),
                        "kind": st.sampled_from([k.value for k in EventKind]) | st.text(),
                        "event_time": st.datetimes(timezones=st.timezones()).map(
                            lambda t: t.isoformat()
                        )
                        | st.text(max_size=30),
                    }
                ).map(lambda value: json.dumps(value).encode()),
            ),
            st.none() | st.binary(max_size=12),
            st.sampled_from(["collection_events", "activity_events", "other"]),
            st.integers(-(2**63) + 1, 2**63 - 1),  # the record's timestamp: a producer sets it
        ),
        max_size=12,
    )
)
def test_marking_never_raises_and_keeps_every_record(records):
    """Whatever the records hold, each comes out once: valid (every field set) or with a
    reason (dead-lettered)."""
    payloads = [payload for payload, _, _, _ in records]
    batch = raw_records(
        payloads,
        keys=[key for _, key, _, _ in records],
        topics=[topic for _, _, topic, _ in records],
        timestamps=pa.array([at for *_, at in records], pa.int64()).cast(
            pa.timestamp("us", tz="UTC")
        ),
    )
    marked = mark_records(batch, np.array([1, 5], np.int64), np.array([10], np.int64))
    rows = marked.to_pylist()
    assert [r["kafka_offset"] for r in rows] == list(range(len(records)))
    for row, payload in zip(rows, payloads, strict=True):
        if row["reason"] is None:
            assert None not in (row["event_id"], row["user_id"], row["kind"], row["event_time"])
            assert TOPIC_OF_KIND[EventKind(row["kind"])] == row["topic"]
        else:
            assert row["reason"] and row["payload"] == payload  # kept as received


def test_mark_records_dead_letters_an_event_not_keyed_by_its_user():
    payloads = [event(f"e{i}", 1, 10, EventKind.COLLECTION_ADD) for i in range(4)]
    payloads.append(event("bad-user", 99, 10, EventKind.COLLECTION_ADD))
    keys = [b"1", b"2", None, b"01", b"99"]
    marked = mark_records(
        raw_records(payloads, keys), np.array([1, 2], np.int64), np.array([10], np.int64)
    ).to_pylist()
    reasons = [r["reason"] for r in marked]
    assert reasons[0] is None
    assert reasons[1].startswith("Kafka key b'2' is not the user id 1: events are keyed by")
    assert reasons[2].startswith("Kafka key None is not the user id 1")
    assert reasons[3].startswith("Kafka key b'01' is not the user id 1")
    assert reasons[4] == "unknown user 99"  # the first reason found is the one given
    assert marked[1]["payload"] == payloads[1]


def test_a_kafka_timestamp_outside_years_1_to_9999_is_dead_lettered():
    """A producer may set any timestamp; one beyond Python's datetime made the batch's
    future-time check raise."""
    payloads = [event(f"e{i}", 1, 10, EventKind.COLLECTION_ADD) for i in range(3)]
    far = pa.scalar(2**63 - 1, pa.int64()).cast(pa.timestamp("us", tz="UTC"))
    batch = raw_records(payloads, timestamps=[T, far, T])
    marked = mark_records(batch, np.array([1], np.int64), np.array([10], np.int64)).to_pylist()
    assert [r["reason"] is None for r in marked] == [True, False, True]
    assert marked[1]["reason"] == (
        "the Kafka record's timestamp (9223372036854775807 us after 1970) is outside years "
        "1-9999: the producer set it wrong"
    )
    assert marked[1]["payload"] == payloads[1] and marked[1]["ingested_at"] is None


def test_a_record_whose_marking_raises_is_dead_lettered_alone(monkeypatch):
    """Whatever defeats the checks (here a lookup that fails on user 666) fails only its
    own record: the batch is marked record by record and the others go on."""
    real = transform.contains

    def contains(known, ids):
        if 666 in ids:
            raise RuntimeError("lookup failed on 666")
        return real(known, ids)

    monkeypatch.setattr(transform, "contains", contains)
    payloads = [event("a", 1, 10, EventKind.COLLECTION_ADD), event("b", 666, 10, EventKind.PLAY)]
    marked = mark_records(
        raw_records(payloads), np.array([1, 666], np.int64), np.array([10], np.int64)
    ).to_pylist()
    assert [r["event_id"] for r in marked] == ["a", None]
    assert marked[0]["reason"] is None
    assert marked[1]["reason"] == "unreadable event (RuntimeError: lookup failed on 666)"
    assert marked[1]["payload"] == payloads[1]
    assert marked[1]["kafka_offset"] == 1 and marked[1]["topic"] == "activity_events"
