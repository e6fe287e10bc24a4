"""``discorecs demo`` (``make demo``): the whole pipeline on this machine, in one command.

services up -> catalog (a generated dump, or ``--dump``/``DUMP``) -> users -> nightly batch ->
topics, the stream and both producers (a modest rate) and the site in the background -> the
URL of a user page with recommendations. Each step prints its progress and duration. Running
it again is harmless: services already up stay up, the catalog and users are regenerated in
place (published atomically), a new batch run is published, and background processes already
running are kept.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from discorecs.errors import DiscorecsError
from discorecs.progress import human_duration, say_to_stderr
from discorecs.settings import Settings

DEMO_SEED = 2026


def run_demo(
    settings: Settings,
    *,
    releases: int = 20_000,
    users: int = 2_000,
    dump: str | None = None,
    say: Callable[[str], None] = say_to_stderr,
) -> str:
    """Run every step; returns the URL of a user page with recommendations."""
    from discorecs.catalog.generate import write_dump
    from discorecs.catalog.ingest import ingest_dump
    from discorecs.services.manager import LocalServices
    from discorecs.users.population import generate_users

    started = time.monotonic()
    services = LocalServices(settings, say=say)
    steps: list[tuple[str, float]] = []

    def step(title: str, action: Callable[[], Any]) -> Any:
        say(f"\n== {title}")
        begun = time.monotonic()
        result = action()
        steps.append((title, time.monotonic() - begun))
        say(f"== {title}: done in {human_duration(time.monotonic() - begun)}")
        return result

    if dump is not None and "://" not in dump and not Path(dump).expanduser().is_file():
        raise DiscorecsError(
            f"the dump {dump} does not exist; name a releases dump (path, s3://, https://) or "
            "leave DUMP unset for a generated one. Nothing was started."
        )
    already = {service.key for service in services.all_services if service.record()}
    try:
        step("1/7 local services (broker, Cassandra)", services.up)
        if dump is None:
            generated = settings.home / "demo" / f"demo_{releases}_{DEMO_SEED}_releases.xml.gz"
            if not generated.exists():
                step(
                    f"2/7 generating a Discogs-format dump of {releases:,} releases",
                    lambda: write_dump(generated, releases, seed=DEMO_SEED),
                )
            dump = str(generated)
        step(f"3/7 ingesting {Path(dump).name}", lambda: ingest_dump(settings, dump, say=say))
        step(
            f"4/7 generating {users:,} users",
            lambda: generate_users(settings, users, seed=DEMO_SEED, say=say),
        )
        step("5/7 nightly batch (Spark)", lambda: _batch(settings, say))
        step("6/7 the stream and the producers", lambda: _speed_layer(settings, services, say))
        step("7/7 the site", lambda: _start(services.web, say))
    except BaseException:
        # A failed demo leaves nothing running that it started (what ran before stays).
        for service in reversed(services.all_services):
            if service.key not in already and service.stop():
                say(f"{service.name}: stopped (the demo failed)")
        raise
    user_id = _user_with_recommendations(settings)
    url = f"http://127.0.0.1:{settings.web_port}/users/{user_id}"
    say(f"\nThe demo is ready in {human_duration(time.monotonic() - started)}:")
    for title, seconds in steps:
        say(f"  {title:52s} {human_duration(seconds):>8s}")
    say(f"\n  open {url}\n  stop everything with `make demo-stop` (or `discorecs down`)")
    return url


def _batch(settings: Settings, say: Callable[[str], None]) -> None:
    from discorecs.spark import build_spark_session
    from spark_jobs.nightly import run_batch

    spark = build_spark_session(settings, "discorecs-demo-batch", {"spark.ui.enabled": "false"})
    try:
        run_batch(spark, settings, say=say)
    finally:
        spark.stop()


def _start(service: Any, say: Callable[[str], None]) -> None:
    if service.start():
        say(f"{service.name}: started (log: {service.log_path})")
    else:
        say(f"{service.name}: already running")


def _speed_layer(settings: Settings, services: Any, say: Callable[[str], None]) -> None:
    from kafka_cluster_scripts.topics import create_topics

    create_topics(settings, partitions=2)
    _start(services.stream, say)
    for producer in services.producers:
        _start(producer, say)


def _user_with_recommendations(settings: Settings) -> int:
    from webapp.repository import CassandraRepository

    repository = CassandraRepository(settings)
    try:
        run_id = repository.published_run()
        for user_id in range(1, 50) if run_id else ():
            found = repository.recommendations(user_id, run_id)
            if found and found.friend and found.releases:
                return user_id
    finally:
        repository.close()
    raise RuntimeError("no user with recommendations was found after the batch")
