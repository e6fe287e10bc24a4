"""Bring the local services up together, report them, and take them down."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor

from discorecs.schema import apply_schema
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


def _stop_together(services: Iterable[LocalService]) -> list[str]:
    """Stop ``services`` at the same time; the names of those that were running."""
    services = list(services)
    with ThreadPoolExecutor(max_workers=max(1, len(services))) as pool:
        outcomes = list(pool.map(lambda service: service.stop(), services))
    return [service.name for service, stopped in zip(services, outcomes, strict=True) if stopped]


class LocalServices:
    """The local brokers and Cassandra nodes of one discorecs home (``settings.home``), one
    of each or three (``settings.local_nodes``), and the demo's jobs."""

    def __init__(self, settings: Settings, say: Callable[[str], None] = _stderr) -> None:
        self.settings = settings
        self.say = say
        nodes = range(1, settings.local_nodes + 1)
        self.brokers = tuple(KafkaBroker(settings, node) for node in nodes)
        self.cassandra_nodes = tuple(CassandraNode(settings, node) for node in nodes)
        self.web = WebSite(settings)
        self.stream = StreamJob(settings)
        self.producers = tuple(
            ProducerJob(settings, kind, rate=DEMO_RATE, active_users=DEMO_ACTIVE_USERS)
            for kind in ("collection", "activity")
        )
        # `up` starts the brokers and Cassandra nodes; the demo starts the rest (`discorecs
        # down` stops them all, in reverse order: producers, stream, site, Cassandra, brokers).
        self.services: tuple[LocalService, ...] = (*self.brokers, *self.cassandra_nodes)
        self.all_services: tuple[LocalService, ...] = (
            *self.services,
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
            self._start_together(self.brokers, started)
            for node in self.cassandra_nodes:
                self._start_together((node,), started)
            if apply_cassandra_schema:
                tables = apply_schema(self.settings)
                self.say(
                    f"cassandra: schema applied to keyspace {self.settings.cassandra_keyspace} "
                    f"({len(tables)} tables)"
                )
        except BaseException:
            _stop_together(reversed(started))
            raise
        return self.status()

    def _start_together(
        self, services: Sequence[LocalService], started: list[LocalService]
    ) -> None:
        """Launch ``services``, then wait for each until it answers. Brokers start together: a
        controller quorum of three elects a leader only once a majority runs, so none of them
        answers alone. Cassandra nodes join the ring one at a time (one per call)."""
        launched = []
        for service in services:
            record = service.launch()
            if record is None:
                self.say(f"{service.name}: already running")
            else:
                started.append(service)
                launched.append((service, record))
        for service, record in launched:
            service.wait(record)
            self.say(f"{service.name}: started (log: {service.log_path})")

    def down(self) -> list[str]:
        """Stop every service this home started (by pid); returns the names of those stopped.
        The nodes of a cluster stop together: a broker's controlled shutdown needs a
        controller quorum, which stopping them one by one would take away from the last."""
        stopped = []
        for group in (
            self.producers,
            (self.stream,),
            (self.web,),
            self.cassandra_nodes,
            self.brokers,
        ):
            stopped += _stop_together(group)
        return stopped

    def status(self) -> list[ServiceStatus]:
        statuses = []
        for service in self.all_services:
            try:
                statuses.append(service.status())
            except ServiceError as error:
                statuses.append(ServiceStatus(service.name, "not local", (), None, str(error), ""))
        return statuses
