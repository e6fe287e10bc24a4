"""Bring the local services up together, report them, and take them down."""

from __future__ import annotations

import sys
from collections.abc import Callable

from discorecs.cassandra import apply_schema
from discorecs.services.base import LocalService, ServiceError, ServiceStatus
from discorecs.services.broker import KafkaBroker
from discorecs.services.cassandra_node import CassandraNode
from discorecs.services.jobs import ProducerJob, StreamJob
from discorecs.services.web import WebSite
from discorecs.settings import Settings

DEMO_RATE = 20.0  # events/s per producer in the demo: a page visibly changes, the box stays calm
DEMO_ACTIVE_USERS = 200


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


class LocalServices:
    """The local broker and Cassandra node of one discorecs home (``settings.home``)."""

    def __init__(self, settings: Settings, say: Callable[[str], None] = _stderr) -> None:
        self.settings = settings
        self.say = say
        self.broker = KafkaBroker(settings)
        self.cassandra = CassandraNode(settings)
        self.web = WebSite(settings)
        self.stream = StreamJob(settings)
        self.producers = tuple(
            ProducerJob(settings, kind, rate=DEMO_RATE, active_users=DEMO_ACTIVE_USERS)
            for kind in ("collection", "activity")
        )
        # `up` starts the first two; the demo starts the rest (`discorecs down` stops them all,
        # in reverse order: producers, stream, site, Cassandra, broker).
        self.services: tuple[LocalService, ...] = (self.broker, self.cassandra)
        self.all_services: tuple[LocalService, ...] = (
            self.broker,
            self.cassandra,
            self.web,
            self.stream,
            *self.producers,
        )

    def up(self, *, apply_cassandra_schema: bool = True) -> list[ServiceStatus]:
        """Start every service not yet running, wait until each answers, apply the schema.

        If any service fails to start, those this call started are stopped again, so a failed
        ``up`` leaves nothing half-started behind; services that were already running stay.
        """
        started: list[LocalService] = []
        try:
            for service in self.services:
                if service.start():
                    started.append(service)
                    self.say(f"{service.name}: started (log: {service.log_path})")
                else:
                    self.say(f"{service.name}: already running")
            if apply_cassandra_schema:
                tables = apply_schema(self.settings)
                self.say(
                    f"cassandra: schema applied to keyspace {self.settings.cassandra_keyspace} "
                    f"({len(tables)} tables)"
                )
        except BaseException:
            for service in reversed(started):
                service.stop()
            raise
        return self.status()

    def down(self) -> list[str]:
        """Stop every service this home started (by pid); returns the names of those stopped."""
        stopped = []
        for service in reversed(self.all_services):
            if service.stop():
                stopped.append(service.name)
        return stopped

    def status(self) -> list[ServiceStatus]:
        statuses = []
        for service in self.all_services:
            try:
                statuses.append(service.status())
            except ServiceError as error:
                statuses.append(ServiceStatus(service.name, "not local", (), None, str(error), ""))
        return statuses
