"""The send loop shared by both producers: pace, send, count acknowledgements, report.

The client is librdkafka (``confluent_kafka``): its sends cost a few microseconds of C per
event where a pure-Python client spends ~100, which matters when the producers share two
cores with the broker, the stream and Cassandra. ``sent`` counts only events the broker
acknowledged (a delivery report without error); an event whose delivery fails (after the
client's own retries, within ``message.timeout.ms``) is counted in ``failed`` with its
error, never as sent. Ctrl-C (or SIGTERM) stops producing, flushes what is in flight, and
prints the summary.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from confluent_kafka import KafkaError, KafkaException, Message, Producer

from discorecs.errors import DiscorecsError
from discorecs.events import Event
from discorecs.progress import PRODUCING_AT, say_to_stderr
from discorecs.settings import Settings

REPORT_EVERY = 5.0
PACE_SECONDS = 0.002  # the shortest wait between bursts of sends


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
    """Delivery-report bookkeeping; librdkafka calls :meth:`report` from ``poll``/``flush``
    in the sending thread, so no lock is needed."""

    def __init__(self) -> None:
        self.sent = 0
        self.failed = 0
        self.latencies: list[float] = []
        self.last_error: str | None = None

    def report(self, error: KafkaError | None, message: Message) -> None:
        if error is None:
            self.sent += 1
            self.latencies.append(message.latency() or 0.0)
        else:
            self.failed += 1
            self.last_error = f"{error.name()}: {error.str()}"


# librdkafka settings (see its CONFIGURATION.md); make_producer's keyword arguments override
# them with dots spelt as underscores (message_timeout_ms=3000).
PRODUCER_DEFAULTS: dict[str, Any] = {
    # Production settings: an event counts as sent only once every in-sync replica has it
    # (acks=all), and the idempotent producer's sequence numbers let the broker drop the
    # duplicates a retried request would otherwise write (exactly once per partition).
    "acks": "all",
    "enable.idempotence": True,
    # Up to 20 ms to fill a batch: a few hundred events per request at thousands of events/s,
    # so the broker and the client handle far fewer requests for the same events.
    "linger.ms": 20,
    "batch.size": 256 * 1024,
    "retries": 10,
    "retry.backoff.ms": 200,
    "request.timeout.ms": 10_000,
    # An event not acknowledged within this is failed (and counted), not kept forever.
    "message.timeout.ms": 30_000,
    "queue.buffering.max.messages": 200_000,
    # The Java client's partitioner (murmur2 of the key), so every client puts a user's
    # events in the same partition.
    "partitioner": "murmur2_random",
    "client.id": "discorecs-producer",
    "log_level": 0,  # connection trouble reaches the user through error_cb, once per change
}


def make_producer(
    settings: Settings,
    *,
    connect_timeout: float = 10.0,
    say: Callable[[str], None] = say_to_stderr,
    **overrides: Any,
) -> Producer:
    """A producer for the configured brokers, after checking (within ``connect_timeout``
    seconds) that one answers; connection trouble later is told through ``say``."""
    bootstrap = ",".join(settings.kafka_bootstrap_servers)
    last_said: dict[str, float] = {}

    def broker_trouble(error: KafkaError) -> None:
        text = error.str()
        if time.monotonic() - last_said.get(text, -60.0) >= 5.0:  # not once per reconnect
            last_said[text] = time.monotonic()
            say(f"kafka: {text}; the producer keeps retrying")

    options = {
        **PRODUCER_DEFAULTS,
        **{key.replace("_", "."): value for key, value in overrides.items()},
        "bootstrap.servers": bootstrap,
        "error_cb": broker_trouble,
    }
    try:
        producer = Producer(options)
    except KafkaException as error:
        raise ProducerError(f"bad producer setting: {error.args[0].str()}") from None
    try:
        producer.list_topics(timeout=connect_timeout)
    except KafkaException:
        producer.purge()
        raise ProducerError(
            f"cannot reach a Kafka broker at {bootstrap}; start one with `discorecs up` or fix "
            "DISCORECS_KAFKA_BOOTSTRAP_SERVERS"
        ) from None
    return producer


def produce(
    name: str,
    events: Iterable[Event],
    producer: Producer,
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
    say(f"{name}: {PRODUCING_AT} {rate:,.0f} events/s{limit}")
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
                # Wait for the next send owed (serving delivery reports meanwhile), at least a
                # millisecond: events go out in small bursts instead of a spin per event.
                producer.poll(max(PACE_SECONDS, (submitted + 1 - rate * elapsed) / rate))
                continue
            for _ in range(min(due, 5000)):
                event = next(iterator)
                while True:
                    try:
                        producer.produce(
                            event.topic, event.to_json(), event.key, on_delivery=acks.report
                        )
                        break
                    except BufferError:  # the client's queue is full: the broker lags
                        producer.poll(0.1)
                        if stop.is_set():
                            break
                submitted += 1
            producer.poll(0)
            if now - last_report >= REPORT_EVERY:
                last_report = now
                recent = acks.latencies[-20_000:]
                p99 = float(np.percentile(recent, 99) * 1000) if recent else 0.0
                say(
                    f"{name}: sent {acks.sent:,}, {acks.sent / elapsed:,.0f} events/s (target "
                    f"{rate:,.0f}), errors {acks.failed:,}, in flight "
                    f"{submitted - acks.sent - acks.failed:,}, p99 send latency {p99:.1f} ms"
                )
    finally:
        summary.interrupted = stop.is_set()
        if producer.flush(flush_timeout) > 0:
            # Still unconfirmed: drop them from the client's queue; their delivery reports
            # then come back as failures and are counted as such.
            producer.purge()
            producer.flush(1.0)
        summary.seconds = time.perf_counter() - started
        restore()
    summary.sent, summary.failed, summary.last_error = acks.sent, acks.failed, acks.last_error
    unconfirmed = submitted - acks.sent - acks.failed
    if unconfirmed > 0:  # neither acknowledged nor failed, even after the purge
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


def close_quietly(producer: Producer, timeout: float = 5.0) -> None:
    """Close the client; events it could not deliver were already counted as failed."""
    producer.purge()
    producer.flush(timeout)
    producer.close()


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
