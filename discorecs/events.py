"""The event contract between the producers and the stream.

An event is one JSON object, keyed in Kafka by its user id::

    {"event_id": "3f0c…", "user_id": 42, "release_id": 1234, "kind": "collection_add",
     "event_time": "2026-11-25T07:04:21.123Z"}

``parse_event`` is the single validator: the stream sends anything it rejects to the
dead-letter table with the :class:`InvalidEvent` reason, and the producers' own output is
round-tripped through it in tests.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from discorecs import tables, topics


class EventKind(StrEnum):
    COLLECTION_ADD = "collection_add"
    COLLECTION_REMOVE = "collection_remove"
    WANTLIST_ADD = "wantlist_add"
    WANTLIST_REMOVE = "wantlist_remove"
    PLAY = "play"


TOPIC_OF_KIND: dict[EventKind, str] = {
    EventKind.COLLECTION_ADD: topics.COLLECTION_EVENTS,
    EventKind.COLLECTION_REMOVE: topics.COLLECTION_EVENTS,
    EventKind.WANTLIST_ADD: topics.ACTIVITY_EVENTS,
    EventKind.WANTLIST_REMOVE: topics.ACTIVITY_EVENTS,
    EventKind.PLAY: topics.ACTIVITY_EVENTS,
}


@dataclass(frozen=True)
class Holdings:
    """A kind of user holdings: the table that keeps them and the event kinds that add a
    release to it and remove one. Between two events of one (user, release), the later wins;
    at equal times the remove does (as a Cassandra tombstone beats a write of the same
    timestamp): the stream and the batch apply this one rule."""

    table: str
    add: EventKind
    remove: EventKind


COLLECTION = Holdings(tables.COLLECTIONS, EventKind.COLLECTION_ADD, EventKind.COLLECTION_REMOVE)
WANTLIST = Holdings(tables.WANTLISTS, EventKind.WANTLIST_ADD, EventKind.WANTLIST_REMOVE)
HOLDINGS = (COLLECTION, WANTLIST)
"""Every kind of holdings; a play (the other event kind) changes none: only the event log
keeps it."""

EVENT_FIELDS = ("event_id", "user_id", "release_id", "kind", "event_time")
MAX_EVENT_ID_LENGTH = 64
MAX_ID = 2**63 - 1
"""The largest user or release id: the tables hold ids as CQL ``bigint`` (signed 64 bits)."""


class InvalidEvent(ValueError):
    """An event that breaks the contract; the message is the dead-letter reason."""


@dataclass(frozen=True)
class Event:
    event_id: str
    user_id: int
    release_id: int
    kind: EventKind
    event_time: datetime

    @property
    def topic(self) -> str:
        return TOPIC_OF_KIND[self.kind]

    @property
    def key(self) -> bytes:
        """The Kafka key: the user id, so one user's events stay in one partition, in order."""
        return str(self.user_id).encode()

    def to_json(self) -> bytes:
        """The compact JSON object (``EVENT_FIELDS`` in order). Written out rather than
        through ``json.dumps``: the producers encode every event they send, and this is a
        fifth of the cost (only the event id can need escaping; the ids are ints)."""
        return (
            f'{{"event_id":{_json_string(self.event_id)},"user_id":{self.user_id:d},'
            f'"release_id":{self.release_id:d},"kind":"{self.kind.value}",'
            f'"event_time":"{format_event_time(self.event_time)}"}}'
        ).encode()


_json_string = json.encoder.encode_basestring_ascii
"""A str as a JSON string literal, quotes included (what ``json.dumps`` writes)."""


def format_event_time(moment: datetime) -> str:
    """ISO 8601 in UTC with milliseconds and a ``Z``."""
    return moment.astimezone(UTC).replace(tzinfo=None).isoformat(timespec="milliseconds") + "Z"


def parse_event(payload: bytes | str | None) -> Event:
    """Validate one raw payload against the contract, or raise :class:`InvalidEvent`."""
    return Event(*parse_event_fields(payload))


EventFields = tuple[str, int, int, EventKind, datetime]
"""An event's fields in ``EVENT_FIELDS`` order."""

_KIND_OF_VALUE: dict[str, EventKind] = {kind.value: kind for kind in EventKind}


def parse_event_fields(payload: bytes | str | None) -> EventFields:
    """:func:`parse_event` without building the :class:`Event`: the stream validates every
    event it reads and only needs the fields."""
    if payload is None:
        raise InvalidEvent("empty payload")
    if isinstance(payload, bytes):
        payload = _utf8_text(payload)
    try:
        data = json.loads(payload)
    except ValueError as error:
        raise InvalidEvent(f"not JSON: {error}") from None
    if not isinstance(data, dict):
        raise InvalidEvent(f"not a JSON object but {type(data).__name__}")
    missing = [name for name in EVENT_FIELDS if data.get(name) is None]
    if missing:
        raise InvalidEvent(f"missing field(s): {', '.join(missing)}")
    event_id = data["event_id"]
    if not isinstance(event_id, str) or not 0 < len(event_id) <= MAX_EVENT_ID_LENGTH:
        raise InvalidEvent(f"event_id must be a string of 1-{MAX_EVENT_ID_LENGTH} characters")
    if not event_id.isascii():
        try:
            event_id.encode("utf-8")
        except UnicodeEncodeError:
            raise InvalidEvent(
                "event_id is not valid Unicode (it holds a lone surrogate escape such as \\ud800)"
            ) from None
    kind = data["kind"]
    kind = _KIND_OF_VALUE.get(kind) if isinstance(kind, str) else None
    if kind is None:
        kinds = ", ".join(kind.value for kind in EventKind)
        raise InvalidEvent(f"unknown kind {_shown(data['kind'])}; expected one of {kinds}")
    return (
        event_id,
        _positive_id(data, "user_id"),
        _positive_id(data, "release_id"),
        kind,
        parse_event_time(data["event_time"]),
    )


def _utf8_text(payload: bytes) -> str:
    """The payload as text: events are UTF-8 JSON. Decoded here rather than by ``json.loads``,
    which would guess UTF-16 or UTF-32 from the first bytes and blame that codec."""
    try:
        return payload.decode("utf-8")
    except UnicodeDecodeError as error:
        byte = payload[error.start]
        raise InvalidEvent(
            f"not UTF-8: byte 0x{byte:02x} at offset {error.start} ({error.reason})"
        ) from None


def parse_event_time(value: Any) -> datetime:
    """An ISO 8601 timestamp with a zone (``Z`` or an offset), as an aware UTC datetime."""
    if not isinstance(value, str):
        raise InvalidEvent(f"event_time must be an ISO 8601 string, got {_shown(value)}")
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise InvalidEvent(f"event_time {_shown(value)} is not ISO 8601") from None
    if moment.tzinfo is None:
        raise InvalidEvent(f"event_time {value!r} has no time zone (add Z or an offset)")
    try:
        return moment.astimezone(UTC)
    except OverflowError:
        raise InvalidEvent(
            f"event_time {value!r} is outside years 1-9999 once converted to UTC"
        ) from None


def _positive_id(data: dict[str, Any], name: str) -> int:
    value = data[name]
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value <= MAX_ID:
        raise InvalidEvent(f"{name} must be an integer from 1 to 2^63-1, got {_shown(value)}")
    return value


def _shown(value: Any, limit: int = 80) -> str:
    """``repr(value)`` for a dead-letter reason, cut short: the payload itself is kept whole."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[: limit - 3]}..."
