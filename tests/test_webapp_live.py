"""The real site: gunicorn over the real Cassandra, seen by a real browser; and an outage."""

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings

from discorecs.services.cassandra_node import CassandraNode
from discorecs.settings import load_settings
from tests.conftest import free_port
from tests.serving_fixtures import FRIENDS, RUN, recommendation_document, seed_serving
from webapp import create_app
from webapp.repository import CassandraRepository

pytestmark = pytest.mark.services

ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts" / "screenshots"
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--hide-scrollbars",
]


def env_for(settings) -> dict[str, str]:
    return {
        **os.environ,
        "DISCORECS_HOME": str(settings.home),
        "DISCORECS_KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers[0],
        "DISCORECS_CASSANDRA_PORT": str(settings.cassandra_port),
        "DISCORECS_CASSANDRA_KEYSPACE": settings.cassandra_keyspace,
    }


@pytest.fixture(scope="module")
def site(services, tmp_path_factory):
    seed_serving(services)
    port = free_port()
    log_path = tmp_path_factory.mktemp("site") / "web.log"
    log = log_path.open("w")
    server = subprocess.Popen(
        [sys.executable, "-m", "commands.cli", "web", "--port", str(port), "--workers", "1"],
        env=env_for(services),
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            with urllib.request.urlopen(base + "/api/health", timeout=2):
                break
        except OSError:
            assert server.poll() is None, log_path.read_text()
            assert time.monotonic() < deadline, "the site did not start"
            time.sleep(0.3)
    yield base
    server.terminate()
    server.wait(timeout=20)
    log.close()


def chromium(*args: str, tmp_path: Path) -> str:
    browser = shutil.which("chromium")
    if browser is None:
        pytest.fail("chromium is not installed: `make test` installs it (apt-get install chromium)")
    result = subprocess.run(
        [browser, *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path}", *args],
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


def test_a_browser_sees_friend_release_and_chart_and_follows_the_friend(site, tmp_path):
    dom = chromium("--dump-dom", f"{site}/users/7001", tmp_path=tmp_path / "a")
    assert 'id="genre-chart"' in dom and "<rect" in dom
    assert 'id="friend-link" href="/users/7002"' in dom and "Charles Babbage" in dom
    assert "Head Hunters" in dom and "https://www.discogs.com/release/9102" in dom
    friend = chromium("--dump-dom", f"{site}/users/7002", tmp_path=tmp_path / "b")
    assert "<h1>Charles Babbage" in friend
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    for name, path in (("user-page.png", "/users/7001"), ("leaderboard.png", "/genres/Jazz")):
        target = ARTIFACTS / name
        target.unlink(missing_ok=True)
        chromium(
            f"--screenshot={target}",
            "--window-size=1280,1100",
            f"{site}{path}",
            tmp_path=tmp_path / name,
        )
        assert target.stat().st_size > 10_000


@pytest.mark.parametrize("language", ["ja", "zh-cn"])
def test_the_browser_has_a_font_for_collectors_names_in(language):
    """Without one, Chromium draws a box for every character of a Japanese or Chinese name
    (the screenshots above would show them so)."""
    fonts = subprocess.run(["fc-list", f":lang={language}"], capture_output=True, text=True)
    assert fonts.stdout.strip(), (
        f"no font covers {language}: `make test` installs fonts-noto-cjk (apt-get install "
        "fonts-noto-cjk)"
    )


def test_the_leaderboard_lists_names_in_every_script(site):
    with urllib.request.urlopen(f"{site}/genres/Jazz") as response:
        html = response.read().decode()
    assert "山田 花子" in html and "王 芳" in html and "Zoë Ødegård" in html


def test_api_over_gunicorn(site):
    with urllib.request.urlopen(f"{site}/api/users/7001/recommendations") as response:
        assert response.headers["Content-Type"] == "application/json"
        answer = json.loads(response.read())
    assert answer == json.loads(recommendation_document(RUN, FRIENDS[RUN]))  # sent as stored
    assert answer["friend"]["user"]["name"] == "Charles Babbage"
    try:
        urllib.request.urlopen(f"{site}/api/users/424242")
    except urllib.error.HTTPError as error:
        assert error.code == 404 and error.headers["Content-Type"] == "application/json"
    else:
        raise AssertionError("expected a 404")


def test_the_api_keeps_its_openapi_document(site):
    """Schemathesis against the real site (gunicorn on loopback over the real Cassandra):
    bounded generated requests per operation, within the document and outside it, checked
    for server errors, documented status codes, content types, response schemas and
    headers. (Driven through hypothesis directly: schemathesis' pytest plugin does not run
    on this pytest.)"""
    schema = schemathesis.openapi.from_url(f"{site}/api/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {operation.label for operation in operations} >= {
        "GET /api/users/{user_id}",
        "GET /api/users/{user_id}/recommendations",
        "GET /api/genres/{genre}/leaderboard",
        "GET /api/health",
    }
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(max_examples=100, deadline=None, suppress_health_check=list(HealthCheck))
        def keeps_the_document(case):
            case.call_and_validate(timeout=10)

        keeps_the_document()


def test_cassandra_restart_gives_503_then_recovers(tmp_path):
    """A node of its own (stopping the session's would disturb other tests)."""
    settings = load_settings(
        {
            "DISCORECS_HOME": str(tmp_path),
            "DISCORECS_CASSANDRA_PORT": str(free_port()),
            "DISCORECS_CASSANDRA_STORAGE_PORT": str(free_port()),
            "DISCORECS_CASSANDRA_MAX_HEAP": "512m",
        }
    )
    node = CassandraNode(settings)
    node.start()
    try:
        from discorecs.schema import apply_schema

        apply_schema(settings)
        seed_serving(settings)
        repository = CassandraRepository(settings)
        client = create_app({"TESTING": True}, repository=repository).test_client()
        assert client.get("/users/7001").status_code == 200
        node.stop()
        down = client.get("/users/7001")
        assert down.status_code == 503 and "Back in a moment" in down.get_data(as_text=True)
        assert client.get("/api/users/7001").get_json()["error"]["status"] == 503
        node.start()
        deadline = time.monotonic() + 90
        while client.get("/users/7001").status_code != 200:
            assert time.monotonic() < deadline, "the site did not recover"
            time.sleep(1)
        repository.close()
    finally:
        node.stop()
