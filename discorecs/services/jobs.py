"""The speed layer's processes as local background services (for the demo and the tests):
the stream and the two producers, started and stopped like the broker and Cassandra, each
with a pid file and a log under the home."""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping

from discorecs.progress import PRODUCING_AT, STREAM_STARTED
from discorecs.services.base import LocalService, ensure_dir
from discorecs.settings import Settings


class _Job(LocalService):
    """A discorecs command run in the background; ready once its log shows ``ready_mark``."""

    ready_mark = ""

    def ports(self) -> tuple[int, ...]:
        return ()

    def install(self) -> None:
        """Nothing to fetch: the job is part of this package."""

    def arguments(self) -> list[str]:
        raise NotImplementedError

    def command(self) -> list[str]:
        ensure_dir(self.dir)
        return [sys.executable, "-m", "commands.cli", *self.arguments()]

    def environment(self) -> Mapping[str, str]:
        # The child reads the same settings as this process, whatever their source.
        return {**os.environ, **self.settings.to_environment()}

    def probe(self) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        if self.ready_mark not in text:
            raise RuntimeError(f"{self.name} has not logged {self.ready_mark!r} yet")
        return f"discorecs {' '.join(self.arguments()[:2])}"


class StreamJob(_Job):
    """``discorecs stream``: Kafka -> Spark -> Cassandra and the event log."""

    name = "stream"
    key = "stream"
    start_timeout = 180.0  # a Spark driver's start, and the reference data read once
    stop_timeout = 30.0  # SIGTERM ends the query; the running micro-batch replays on restart

    def __init__(
        self,
        settings: Settings,
        *,
        max_events: int | None = None,
        trigger_seconds: float | None = None,
    ) -> None:
        super().__init__(settings)
        self.max_events = max_events
        self.trigger_seconds = trigger_seconds

    ready_mark = STREAM_STARTED

    def arguments(self) -> list[str]:
        args = ["stream"]
        if self.max_events:
            args += ["--max-events", str(self.max_events)]
        if self.trigger_seconds:
            args += ["--trigger-seconds", str(self.trigger_seconds)]
        return args


class ProducerJob(_Job):
    """``discorecs produce collection|activity`` at a steady rate, until stopped."""

    start_timeout = 60.0
    stop_timeout = 40.0  # SIGTERM: the producer flushes what it has sent, then exits
    ready_mark = PRODUCING_AT

    def __init__(self, settings: Settings, kind: str, *, rate: float, active_users: int) -> None:
        self.name = f"{kind} producer"
        self.key = f"producer-{kind}"  # before the base class derives the pid and log paths
        super().__init__(settings)
        self.kind, self.rate, self.active_users = kind, rate, active_users

    def arguments(self) -> list[str]:
        return [
            "produce",
            self.kind,
            "--rate",
            f"{self.rate:g}",
            "--active-users",
            str(self.active_users),
        ]
