"""Kafka topic names: the producers write them and the stream reads them.

Events are keyed by user id, so one user's events stay ordered within one partition.
"""

COLLECTION_EVENTS = "collection_events"
"""A release added to or removed from a user's collection."""

ACTIVITY_EVENTS = "activity_events"
"""Wantlist adds and removes, and plays."""

ALL_TOPICS: tuple[str, ...] = (COLLECTION_EVENTS, ACTIVITY_EVENTS)
