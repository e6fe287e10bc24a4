"""Processes the local service manager starts, finds again by pid file, and stops.

A pid file records the pid *and* the process's start time (field 22 of ``/proc/<pid>/stat``),
so a pid the kernel has since given to some other program is never mistaken for ours and never
signalled.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path


@dataclass(frozen=True)
class PidRecord:
    """What ``up`` wrote about a process it started."""

    pid: int
    start_ticks: int
    command: str
    ports: tuple[int, ...]
    log: str

    def write(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self)))
        tmp.replace(path)

    @classmethod
    def read(cls, path: Path) -> PidRecord | None:
        try:
            data = json.loads(path.read_text())
            return cls(
                pid=int(data["pid"]),
                start_ticks=int(data["start_ticks"]),
                command=str(data["command"]),
                ports=tuple(int(p) for p in data["ports"]),
                log=str(data["log"]),
            )
        except (FileNotFoundError, ValueError, KeyError, TypeError):
            return None


def start_ticks(pid: int) -> int | None:
    """The start time of ``pid`` in clock ticks since boot, or None if it is gone or a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # The command name (field 2) may contain spaces; fields after it are space-separated.
    fields = stat[stat.rindex(")") + 2 :].split()
    if fields[0] in ("Z", "X"):
        return None
    return int(fields[19])


def is_running(record: PidRecord) -> bool:
    """Whether the process ``record`` describes is still alive (same pid, same start time)."""
    _reap(record.pid)
    return start_ticks(record.pid) == record.start_ticks


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    """Whether nothing listens on ``host:port`` and it can be bound."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.settimeout(0.5)
        if probe.connect_ex((host, port)) == 0:
            return False
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


def free_port(hosts: Sequence[str] = ("127.0.0.1",)) -> int:
    """A port nothing listens on right now at any of ``hosts`` (the kernel's pick on the
    first; tried again until it is free on the others too, e.g. on every local node)."""
    while True:
        with socket.socket() as probe:
            probe.bind((hosts[0], 0))
            port = probe.getsockname()[1]
        if all(port_is_free(port, host) for host in hosts[1:]):
            return port


def port_is_open(port: int, host: str = "127.0.0.1") -> bool:
    """Whether something accepts connections on ``host:port``."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.settimeout(0.5)
        return probe.connect_ex((host, port)) == 0


def spawn(
    command: Sequence[str],
    *,
    log_path: Path,
    env: Mapping[str, str],
    cwd: Path,
    ports: Sequence[int],
) -> PidRecord:
    """Start ``command`` detached from this terminal (its own session), output to ``log_path``."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    # posix_spawn rather than Popen: the service outlives this process, so there is no Popen
    # object to keep; `setsid` gives it its own session and process group.
    log_fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    null_fd = os.open(os.devnull, os.O_RDONLY)
    previous_cwd = os.getcwd()
    try:
        os.chdir(cwd)
        pid = os.posix_spawnp(
            command[0],
            list(command),
            dict(env),
            file_actions=[
                (os.POSIX_SPAWN_DUP2, null_fd, 0),
                (os.POSIX_SPAWN_DUP2, log_fd, 1),
                (os.POSIX_SPAWN_DUP2, log_fd, 2),
            ],
            setsid=True,
        )
    finally:
        os.chdir(previous_cwd)
        os.close(log_fd)
        os.close(null_fd)
    ticks = start_ticks(pid)
    if ticks is None:  # died before we could look: record 0 ticks, which never matches
        ticks = 0
    return PidRecord(pid, ticks, " ".join(command), tuple(ports), str(log_path))


def stop(record: PidRecord, timeout: float = 20.0) -> bool:
    """SIGTERM the process (and its process group), SIGKILL it after ``timeout`` seconds.

    Returns True if it was running. Only a process matching ``record`` is ever signalled.
    """
    if not is_running(record):
        return False
    _signal_group(record.pid, signal.SIGTERM)
    # Wait for the whole process group (e.g. gunicorn's workers), not only its leader.
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not is_running(record) and not group_members(record.pid):
            return True
        time.sleep(0.1)
    _signal_group(record.pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while (is_running(record) or group_members(record.pid)) and time.monotonic() < deadline:
        time.sleep(0.1)
    return True


def group_members(group: int) -> list[int]:
    """Live processes whose process group is ``group`` (the services are group leaders)."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        if fields[0] not in ("Z", "X") and int(fields[2]) == group:
            members.append(int(entry.name))
    return members


def tail(path: Path | str, lines: int = 20) -> str:
    """The last ``lines`` lines of a log file ('' if it does not exist)."""
    try:
        with open(path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            handle.seek(max(0, size - 64 * 1024))
            text = handle.read().decode("utf-8", errors="replace")
    except FileNotFoundError:
        return ""
    # Clip each line: a Java log line can run to kilobytes.
    return "\n".join(line[:400] for line in text.splitlines()[-lines:])


def _signal_group(pid: int, signum: int) -> None:
    # spawn() made the process a session (and group) leader, so its group id is its pid:
    # signalling the group also stops any children it started.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signum)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, signum)


def _reap(pid: int) -> None:
    """Collect the exit status if ``pid`` is our own child, so it does not linger as a zombie."""
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)
