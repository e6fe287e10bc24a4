"""Progress lines for long steps: done, total, rate and ETA, at most every few seconds."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable

# The lines a background job logs once it works: the local service manager
# (discorecs.services.jobs) waits for them in the job's log.
STREAM_STARTED = "stream started"
PRODUCING_AT = "producing at"


def say_to_stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def human_bytes(count: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(count) < 1000 or unit == "TB":
            return f"{count:,.0f} {unit}" if unit == "B" else f"{count:,.1f} {unit}"
        count /= 1000
    raise AssertionError("unreachable")


def human_duration(seconds: float) -> str:
    seconds = int(max(0, seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


class Progress:
    """Reports ``label: done of total (pct), rate, ETA`` through ``say`` every ``every`` s."""

    def __init__(
        self,
        label: str,
        total: float | None,
        say: Callable[[str], None] = say_to_stderr,
        every: float = 2.0,
        unit: str = "bytes",
    ) -> None:
        self.label = label
        self.total = total
        self.say = say
        self.every = every
        self.unit = unit
        self.started = time.monotonic()
        self.last = self.started

    def _format(self, amount: float) -> str:
        return human_bytes(amount) if self.unit == "bytes" else f"{amount:,.0f} {self.unit}"

    def line(self, done: float, extra: str = "") -> str:
        elapsed = max(time.monotonic() - self.started, 1e-9)
        rate = done / elapsed
        parts = [f"{self.label}: {self._format(done)}"]
        if self.total:
            parts[0] += f" of {self._format(self.total)} ({100 * done / self.total:.0f}%)"
        parts.append(f"{self._format(rate)}/s")
        if self.total and rate > 0:
            parts.append(f"ETA {human_duration((self.total - done) / rate)}")
        if extra:
            parts.append(extra)
        return ", ".join(parts)

    def update(self, done: float, extra: str = "") -> None:
        now = time.monotonic()
        if now - self.last >= self.every:
            self.last = now
            self.say(self.line(done, extra))

    def finish(self, done: float, extra: str = "") -> None:
        self.say(self.line(done, extra) + f" in {human_duration(time.monotonic() - self.started)}")
