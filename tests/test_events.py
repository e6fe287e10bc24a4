import json
from datetime import UTC, datetime

import pytest

from discorecs import topics
from discorecs.events import Event, EventKind, InvalidEvent, parse_event


def sample_event(**changes) -> Event:
    fields = {
        "event_id": "e-1",
        "user_id": 42,
        "release_id": 1234,
        "kind": EventKind.COLLECTION_ADD,
        "event_time": datetime(2026, 11, 25, 7, 4, 21, 123000, tzinfo=UTC),
    }
    fields.update(changes)
    return Event(**fields)


def test_round_trip_through_json():
    event = sample_event(kind=EventKind.WANTLIST_REMOVE)
    assert parse_event(event.to_json()) == event
    assert event.to_json() == (
        b'{"event_id":"e-1","user_id":42,"release_id":1234,"kind":"wantlist_remove",'
        b'"event_time":"2026-11-25T07:04:21.123Z"}'
    )


def test_the_json_escapes_the_event_id_and_keeps_every_field():
    for event_id in ('quote " and \\ backslash', "é\n\u2028", "plain"):
        event = sample_event(
            event_id=event_id, event_time=datetime(1999, 1, 2, 3, 4, 5, 6000, tzinfo=UTC)
        )
        assert parse_event(event.to_json()) == event
        assert json.loads(event.to_json()) == {
            "event_id": event_id,
            "user_id": 42,
            "release_id": 1234,
            "kind": "collection_add",
            "event_time": "1999-01-02T03:04:05.006Z",
        }


def test_key_and_topic():
    assert sample_event().key == b"42"
    assert sample_event().topic == topics.COLLECTION_EVENTS
    assert sample_event(kind=EventKind.PLAY).topic == topics.ACTIVITY_EVENTS


def test_offsets_are_normalised_to_utc():
    event = parse_event(
        '{"event_id":"x","user_id":1,"release_id":2,"kind":"play",'
        '"event_time":"2026-11-25T09:00:00+02:00"}'
    )
    assert event.event_time == datetime(2026, 11, 25, 7, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (None, "empty payload"),
        (b"{not json", "not JSON"),
        (b"[1, 2]", "not a JSON object"),
        (
            b'{"event_id":"x","user_id":1,"kind":"play","event_time":"2026-01-01T00:00:00Z"}',
            "missing field.*release_id",
        ),
        (
            b'{"event_id":"x","user_id":0,"release_id":2,"kind":"play",'
            b'"event_time":"2026-01-01T00:00:00Z"}',
            "user_id must be an integer from 1 to 2\\^63-1",
        ),
        (
            b'{"event_id":"x","user_id":"7","release_id":2,"kind":"play",'
            b'"event_time":"2026-01-01T00:00:00Z"}',
            "user_id must be an integer from 1 to 2\\^63-1",
        ),
        (
            b'{"event_id":"x","user_id":1,"release_id":true,"kind":"play",'
            b'"event_time":"2026-01-01T00:00:00Z"}',
            "release_id must be an integer from 1 to 2\\^63-1",
        ),
        (
            b'{"event_id":"x","user_id":1,"release_id":2,"kind":"steal",'
            b'"event_time":"2026-01-01T00:00:00Z"}',
            "unknown kind 'steal'",
        ),
        (
            b'{"event_id":"x","user_id":1,"release_id":2,"kind":"play","event_time":"yesterday"}',
            "not ISO 8601",
        ),
        (
            b'{"event_id":"x","user_id":1,"release_id":2,"kind":"play",'
            b'"event_time":"2026-01-01T00:00:00"}',
            "no time zone",
        ),
        (
            b'{"event_id":"","user_id":1,"release_id":2,"kind":"play",'
            b'"event_time":"2026-01-01T00:00:00Z"}',
            "event_id must be a string",
        ),
        (  # one more than a CQL bigint holds
            b'{"event_id":"x","user_id":9223372036854775808,"release_id":2,"kind":"play",'
            b'"event_time":"2026-01-01T00:00:00Z"}',
            "user_id must be an integer from 1 to 2\\^63-1",
        ),
        (
            b'{"event_id":"x","user_id":1,"release_id":2,"kind":"play",'
            b'"event_time":"9999-12-31T23:59:59-01:00"}',
            "outside years 1-9999",
        ),
        (
            b'{"event_id":"x","user_id":1,"release_id":2,"kind":"play",'
            b'"event_time":"0001-01-01T00:00:00+01:00"}',
            "outside years 1-9999",
        ),
        (b"\xff\xfe{}", "not UTF-8: byte 0xff at offset 0"),
        (  # json.loads of bytes would take UTF-16 and blame that codec for a bad byte
            '{"event_id":"x","user_id":1,"release_id":2,"kind":"play",'
            '"event_time":"2026-01-01T00:00:00Z"}'.encode("utf-16"),
            "not UTF-8: byte 0xff at offset 0",
        ),
        (b'{"event_id": "caf\xc3"}', "not UTF-8: byte 0xc3 at offset 17"),
        (
            b'{"event_id":"\\ud800","user_id":1,"release_id":2,"kind":"play",'
            b'"event_time":"2026-01-01T00:00:00Z"}',
            "not valid Unicode",
        ),
    ],
)
def test_invalid_events_say_why(payload, reason):
    with pytest.raises(InvalidEvent, match=reason):
        parse_event(payload)
