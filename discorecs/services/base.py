"""What every local service shares: install, start, wait until it answers, report, stop."""

from __future__ import annotations

import os
import time
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from discorecs.errors import DiscorecsError
from discorecs.services import process
from discorecs.services.install import InstallError
from discorecs.settings import LOCAL_NODE_HOSTS, Settings


class ServiceError(DiscorecsError):
    """A local service could not be started or checked; the first line names it and the fix."""


@dataclass(frozen=True)
class ServiceStatus:
    name: str
    state: str  # "up", "down", "starting" or "not local"
    ports: tuple[int, ...]
    pid: int | None
    version: str
    log: str


class LocalService(ABC):
    """One local service: subclasses say how to install, run and probe it."""

    name: str = ""
    key: str = ""
    host: str = "127.0.0.1"  # the loopback address it listens on
    start_timeout: float = 60.0
    stop_timeout: float = 30.0  # SIGTERM, then SIGKILL after this many seconds

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.dir = settings.run_dir / self.key
        self.pid_file = settings.run_dir / f"{self.key}.pid"
        self.log_path = settings.run_dir / "logs" / f"{self.key}.log"

    # -- what subclasses define --------------------------------------------------------------
    @abstractmethod
    def ports(self) -> tuple[int, ...]:
        """The ports the service listens on (all on 127.0.0.1)."""

    @abstractmethod
    def install(self) -> None:
        """Fetch and unpack what the service needs (a no-op once installed)."""

    @abstractmethod
    def command(self) -> list[str]:
        """The command that runs the service in the foreground."""

    @abstractmethod
    def probe(self) -> str:
        """Make one real request; return the server's version, raise if it does not answer."""

    def prepare(self) -> None:  # noqa: B027 (an optional hook, empty by default)
        """Write config files and data folders before the first start."""

    def environment(self) -> Mapping[str, str]:
        return os.environ

    def hint(self) -> str:
        return f"see {self.log_path}"

    # -- shared behaviour --------------------------------------------------------------------
    def record(self) -> process.PidRecord | None:
        """The pid record of a running instance we started, else None (stale files removed)."""
        record = process.PidRecord.read(self.pid_file)
        if record is None:
            return None
        if not process.is_running(record):
            self.pid_file.unlink(missing_ok=True)
            return None
        return record

    def start(self) -> bool:
        """Start the service unless ours is already running; True if this call started it.

        Raises :class:`ServiceError` (with the log's tail) if it does not answer in time; the
        half-started process is stopped first.
        """
        record = self.launch()
        if record is None:
            return False
        self.wait(record)
        return True

    def launch(self) -> process.PidRecord | None:
        """Start the process without waiting for it to answer (see :meth:`wait`); None if
        ours is already running."""
        if self.record() is not None:
            return None
        for port in self.ports():
            if not process.port_is_free(port, self.host):
                raise ServiceError(
                    f"{self.name}: port {port} on {self.host} is already in use by a program "
                    f"discorecs did not start; stop that program or {self.port_setting_hint(port)}"
                )
        try:
            self.install()
        except InstallError as error:
            raise ServiceError(str(error)) from error
        self.prepare()
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self.log_path.write_text("")
        record = process.spawn(
            self.command(),
            log_path=self.log_path,
            env=self.environment(),
            cwd=self.dir,
            ports=self.ports(),
        )
        record.write(self.pid_file)
        return record

    def wait(self, record: process.PidRecord) -> str:
        """Wait until the launched service answers; if it does not, stop it and raise."""
        try:
            return self.wait_until_ready(record)
        except ServiceError:
            self.stop()
            raise

    def wait_until_ready(self, record: process.PidRecord) -> str:
        deadline = time.monotonic() + self.start_timeout
        last_error: Exception | None = None
        while time.monotonic() < deadline:
            if not process.is_running(record):
                raise self._start_failure("exited during start")
            if all(process.port_is_open(port, self.host) for port in self.ports()[:1]):
                try:
                    return self.probe()
                except Exception as error:  # not ready yet: keep polling until the deadline
                    last_error = error
            time.sleep(0.25)
        raise self._start_failure(
            f"did not answer within {self.start_timeout:.0f} s (last error: {last_error})"
        )

    def stop(self) -> bool:
        """Stop the instance we started (by pid); True if one was running."""
        record = process.PidRecord.read(self.pid_file)
        stopped = record is not None and process.stop(record, self.stop_timeout)
        self.pid_file.unlink(missing_ok=True)
        return stopped

    def status(self) -> ServiceStatus:
        record = self.record()
        if record is None:
            return ServiceStatus(self.name, "down", self.ports(), None, "", str(self.log_path))
        try:
            version = self.probe()
            state = "up"
        except Exception:
            version, state = "", "starting"
        return ServiceStatus(
            self.name, state, self.ports(), record.pid, version, str(self.log_path)
        )

    def port_setting_hint(self, port: int) -> str:
        return "choose another port in the settings"

    def _start_failure(self, what: str) -> ServiceError:
        log_tail = process.tail(self.log_path, 15)
        return ServiceError(
            f"{self.name} {what}; {self.hint()}\n--- last lines of {self.log_path} ---\n{log_tail}"
        )


class LocalNode(LocalService):
    """Node ``node`` (1-based) of the ``settings.local_nodes`` of a local cluster, on its own
    loopback address. A single node keeps the folder and name its kind always had; those of
    a cluster are numbered, with data of their own, so one home can hold both."""

    kind = ""  # "kafka broker": the service's name when it runs alone
    kind_key = ""  # "broker": its folder, pid file and log name when it runs alone

    def __init__(self, settings: Settings, node: int = 1) -> None:
        self.node = node
        self.nodes = settings.local_nodes
        self.host = LOCAL_NODE_HOSTS[node - 1]
        alone = self.nodes == 1
        self.name = self.kind if alone else f"{self.kind} {node} ({self.host})"
        self.key = self.kind_key if alone else f"{self.kind_key}-{node}"
        super().__init__(settings)


def loopback(host: str) -> bool:
    return host in ("127.0.0.1", "localhost", "::1")


def ensure_dir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path
