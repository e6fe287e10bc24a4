"""The send loop shared by both producers: pace, send, count acknowledgements, report.

``sent`` counts only events the broker acknowledged; an event whose send fails (after the
client's own retries) is counted in ``failed`` with its error, never as sent. Ctrl-C (or
SIGTERM) stops producing, flushes what is in flight, and prints the summary.
"""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from kafka import KafkaProducer
from kafka.errors import KafkaError, KafkaTimeoutError

from discorecs.errors import DiscorecsError
from discorecs.events import Event
from discorecs.progress import say_to_stderr
from discorecs.settings import Settings

REPORT_EVERY = 5.0


class ProducerError(DiscorecsError):
    """The producer cannot start (no broker, bad arguments)."""


@dataclass
class ProducerSummary:
    name: str
    requested: int | None
    sent: int = 0
    failed: int = 0
    seconds: float = 0.0
    target_rate: float = 0.0
    latency_ms: dict[str, float] = field(default_factory=dict)
    last_error: str | None = None
    interrupted: bool = False

    @property
    def rate(self) -> float:
        return self.sent / self.seconds if self.seconds else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "achieved_rate": self.rate}

    def line(self) -> str:
        latency = self.latency_ms
        lat = (
            f", send latency p50 {latency['p50']:.1f} ms p99 {latency['p99']:.1f} ms"
            if (latency)
            else ""
        )
        return (
            f"{self.name}: sent {self.sent:,} (acknowledged), failed {self.failed:,}, "
            f"{self.rate:,.0f} events/s over {self.seconds:.1f} s{lat}"
            + (f"; last error: {self.last_error}" if self.last_error else "")
        )


class _Acks:
    """Acknowledgement bookkeeping, updated from the client's I/O thread."""

    def __init__(self) -> None:
        self.sent = 0
        self.failed = 0
        self.latencies: list[float] = []
        self.last_error: str | None = None
        self.lock = threading.Lock()

    def ok(self, started: float, _metadata: object) -> None:
        latency = time.perf_counter() - started
        with self.lock:
            self.sent += 1
            self.latencies.append(latency)

    def error(self, error: BaseException) -> None:
        with self.lock:
            self.failed += 1
            self.last_error = f"{type(error).__name__}: {error}"


def make_producer(settings: Settings, **overrides: Any) -> KafkaProducer:
    options: dict[str, Any] = {
        "bootstrap_servers": list(settings.kafka_bootstrap_servers),
        "acks": 1,
        "linger_ms": 5,
        "batch_size": 64 * 1024,
        "retries": 10,
        "retry_backoff_ms": 200,
        "request_timeout_ms": 10_000,
        # An event not acknowledged within this is failed (and counted), not kept forever.
        "delivery_timeout_ms": 30_000,
        "max_block_ms": 10_000,
        "client_id": "discorecs-producer",
    }
    options.update(overrides)
    try:
        return KafkaProducer(**options)
    except KafkaError:  # kafka-python 3: a KafkaTimeoutError after max_block_ms
        raise ProducerError(
            f"cannot reach a Kafka broker at {','.join(settings.kafka_bootstrap_servers)}; start "
            "one with `discorecs up` or fix DISCORECS_KAFKA_BOOTSTRAP_SERVERS"
        ) from None


def produce(
    name: str,
    events: Iterable[Event],
    producer: KafkaProducer,
    *,
    rate: float,
    count: int | None = None,
    duration: float | None = None,
    say: Callable[[str], None] = say_to_stderr,
    stop: threading.Event | None = None,
    flush_timeout: float = 30.0,
) -> ProducerSummary:
    """Send ``events`` at ``rate`` per second until ``count`` are sent, ``duration`` seconds
    pass, ``stop`` is set, or SIGINT/SIGTERM arrives. Returns what was acknowledged."""
    if rate <= 0:
        raise ProducerError(f"--rate must be positive, got {rate}")
    if count is not None and count <= 0:
        raise ProducerError(f"--count must be positive, got {count}")
    if duration is not None and duration <= 0:
        raise ProducerError(f"--duration must be positive, got {duration}")
    stop = stop or threading.Event()
    restore = _stop_on_signals(stop)
    acks = _Acks()
    summary = ProducerSummary(name, count, target_rate=rate)
    limit = f", {count:,} events" if count else (f", {duration:g} s" if duration else "")
    say(f"{name}: producing at {rate:,.0f} events/s{limit}")
    started = time.perf_counter()
    last_report = started
    submitted = 0
    iterator = iter(events)
    try:
        while not stop.is_set():
            now = time.perf_counter()
            elapsed = now - started
            if duration is not None and elapsed >= duration:
                break
            due = int(rate * elapsed) + 1 - submitted  # token bucket: sends owed by now
            if count is not None:
                due = min(due, count - submitted)
                if due <= 0 and submitted >= count:
                    break
            if due <= 0:
                time.sleep(min(0.002, 1 / rate))
                continue
            for _ in range(min(due, 5000)):
                event = next(iterator)
                try:
                    future = producer.send(event.topic, key=event.key, value=event.to_json())
                except KafkaTimeoutError as error:  # buffer full: the broker is not answering
                    acks.error(error)
                    say(f"{name}: broker not answering ({error}); retrying in 1 s")
                    time.sleep(1)
                    continue
                future.add_callback(acks.ok, time.perf_counter())
                future.add_errback(acks.error)
                submitted += 1
            if now - last_report >= REPORT_EVERY:
                last_report = now
                with acks.lock:
                    sent, failed, recent = acks.sent, acks.failed, acks.latencies[-20_000:]
                p99 = float(np.percentile(recent, 99) * 1000) if recent else 0.0
                say(
                    f"{name}: sent {sent:,}, {sent / elapsed:,.0f} events/s (target "
                    f"{rate:,.0f}), errors {failed:,}, in flight {submitted - sent - failed:,}, "
                    f"p99 send latency {p99:.1f} ms"
                )
    finally:
        summary.interrupted = stop.is_set()
        try:
            producer.flush(timeout=flush_timeout)
        except KafkaError as error:
            acks.error(error)
        summary.seconds = time.perf_counter() - started
        restore()
    with acks.lock:
        summary.sent, summary.failed, summary.last_error = acks.sent, acks.failed, acks.last_error
        unconfirmed = submitted - acks.sent - acks.failed
        if unconfirmed > 0:  # neither acknowledged nor failed within the flush timeout
            summary.failed += unconfirmed
            summary.last_error = summary.last_error or f"{unconfirmed} sends never confirmed"
        if acks.latencies:
            values = np.array(acks.latencies) * 1000
            summary.latency_ms = {
                "p50": float(np.percentile(values, 50)),
                "p99": float(np.percentile(values, 99)),
                "max": float(values.max()),
            }
    say(summary.line())
    return summary


def close_quietly(producer: KafkaProducer, timeout: float = 5.0) -> None:
    """Close the client; events it could not deliver were already counted as failed."""
    with contextlib.suppress(KafkaError):
        producer.close(timeout=timeout)


def _stop_on_signals(stop: threading.Event) -> Callable[[], None]:
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}

    def handler(signum: int, frame: object) -> None:
        stop.set()

    for sig in previous:
        signal.signal(sig, handler)

    def restore() -> None:
        for sig, old in previous.items():
            signal.signal(sig, old)

    return restore
