"""The demo end to end, bounded: its own home and free ports, small sizes.

`discorecs demo` must leave a site whose user page and API show a friend and a release, and a
running speed layer: an event produced after the batch shows on that user's page through the
stream. `discorecs down` then stops everything the demo started.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request

import pytest
from kafka import KafkaProducer

from discorecs import paths, storage, topics
from discorecs.catalog.ingest import current_catalog
from discorecs.events import Event, EventKind
from discorecs.services.manager import LocalServices
from discorecs.settings import load_settings
from discorecs.users.population import current_users
from tests.conftest import free_port

pytestmark = [pytest.mark.spark, pytest.mark.services]


def get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.read().decode()


def test_the_demo_serves_recommendations_and_streams_new_events(tmp_path):
    settings = load_settings(
        {
            "DISCORECS_HOME": str(tmp_path / "home"),
            "DISCORECS_KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{free_port()}",
            "DISCORECS_KAFKA_CONTROLLER_PORT": str(free_port()),
            "DISCORECS_CASSANDRA_PORT": str(free_port()),
            "DISCORECS_CASSANDRA_STORAGE_PORT": str(free_port()),
            "DISCORECS_CASSANDRA_MAX_HEAP": "512m",
            "DISCORECS_WEB_PORT": str(free_port()),
            "DISCORECS_SPARK_MASTER": "local[2]",
            "DISCORECS_SPARK_DRIVER_MEMORY": "1g",
            "DISCORECS_SPARK_SHUFFLE_PARTITIONS": "2",
            "DISCORECS_STREAM_TRIGGER_SECONDS": "1",
        }
    )
    services = LocalServices(settings, say=lambda m: None)
    try:
        # As `make demo` runs it: its own process (its Spark session is its own).
        demo = subprocess.run(
            [sys.executable, "-m", "commands.cli", "demo", "--releases", "3000", "--users", "300"],
            env={**os.environ, **settings.to_environment()},
            capture_output=True,
            text=True,
            timeout=900,
        )
        assert demo.returncode == 0, demo.stderr[-3000:]
        url = demo.stdout.strip().splitlines()[-1]
        assert "The demo is ready in" in demo.stderr and "7/7 the site" in demo.stderr
        user_id = int(url.rsplit("/", 1)[1])
        page = get(url)
        assert 'id="genre-chart"' in page and "taste match" in page
        base = f"http://127.0.0.1:{settings.web_port}"
        recs = json.loads(get(f"{base}/api/users/{user_id}/recommendations"))
        assert recs["friend"]["user"]["user_id"] != user_id and recs["releases"]

        owned = {
            r["release_id"]
            for r in current_users(settings)
            .dataset(paths.INITIAL_COLLECTIONS)
            .to_table(columns=["user_id", "release_id"])
            .to_pylist()
            if r["user_id"] == user_id
        }
        catalog = current_catalog(settings).dataset().to_table(columns=["release_id", "title"])
        release, title = next(
            (r["release_id"], r["title"])
            for r in catalog.to_pylist()
            if r["release_id"] not in owned and (r["title"] or "").replace(" ", "").isalnum()
        )
        producer = KafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers[0])
        event = Event("demo-e2e-1", user_id, release, EventKind.COLLECTION_ADD, _now())
        producer.send(topics.COLLECTION_EVENTS, key=event.key, value=event.to_json())
        producer.flush()
        producer.close()
        deadline = time.monotonic() + 180
        # The change shows in the latest changes, and the genre profile becomes the stream's.
        while not (title in (page := get(url)) and 'id="live-note"' in page):
            assert time.monotonic() < deadline, "the streamed event never reached the page"
            time.sleep(2)
    finally:
        services.down()
    assert all(service.record() is None for service in services.all_services)


def _now():
    from datetime import UTC, datetime

    return datetime.now(UTC)


def demo_settings(tmp_path):
    return load_settings(
        {
            "DISCORECS_HOME": str(tmp_path / "home"),
            "DISCORECS_KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{free_port()}",
            "DISCORECS_KAFKA_CONTROLLER_PORT": str(free_port()),
            "DISCORECS_CASSANDRA_PORT": str(free_port()),
            "DISCORECS_CASSANDRA_STORAGE_PORT": str(free_port()),
            "DISCORECS_CASSANDRA_MAX_HEAP": "512m",
            "DISCORECS_WEB_PORT": str(free_port()),
        }
    )


def run_cli(settings, *args):
    return subprocess.run(
        [sys.executable, "-m", "commands.cli", *args],
        env={**os.environ, **settings.to_environment()},
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_a_dump_that_does_not_exist_stops_the_demo_before_anything_starts(tmp_path):
    settings = demo_settings(tmp_path)
    result = run_cli(settings, "demo", "--dump", str(tmp_path / "missing.xml.gz"))
    assert result.returncode != 0
    assert "missing.xml.gz does not exist" in result.stderr and "Traceback" not in result.stderr
    assert not settings.run_dir.exists() or not list(settings.run_dir.glob("*.pid"))


def test_a_corrupt_dump_stops_the_demo_and_leaves_nothing_running(tmp_path):
    settings = demo_settings(tmp_path)
    corrupt = tmp_path / "corrupt_releases.xml.gz"
    corrupt.write_bytes(b"\x1f\x8b\x08\x00" + b"not really gzip" * 100)
    result = run_cli(settings, "demo", "--dump", str(corrupt))
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert "corrupt_releases.xml.gz" in result.stderr
    assert "stopped (the demo failed)" in result.stderr
    services = LocalServices(settings, say=lambda m: None)
    assert all(service.record() is None for service in services.all_services)
    assert storage.current(settings, paths.CATALOG_RELEASES) is None
