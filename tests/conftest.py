"""Shared fixtures.

The real broker and Cassandra are started once per test session, by the project's own service
manager, in a temporary home on free ports: a demo running on the default ports is never
touched, and nothing is left running afterwards.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from discorecs.services.manager import LocalServices
from discorecs.services.process import free_port
from discorecs.settings import Settings, load_settings

SHARED_DISCOGS = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "discogs"


@pytest.fixture(scope="session")
def test_settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """Settings for an isolated home on free ports (shared download cache)."""
    home = tmp_path_factory.mktemp("discorecs-home")
    return load_settings(
        {
            "DISCORECS_HOME": str(home),
            "DISCORECS_KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{free_port()}",
            "DISCORECS_KAFKA_CONTROLLER_PORT": str(free_port()),
            "DISCORECS_CASSANDRA_PORT": str(free_port()),
            "DISCORECS_CASSANDRA_STORAGE_PORT": str(free_port()),
            "DISCORECS_CASSANDRA_KEYSPACE": "discorecs_test",
            "DISCORECS_CASSANDRA_MAX_HEAP": "768m",
            "DISCORECS_SPARK_MASTER": "local[2]",
            "DISCORECS_SPARK_DRIVER_MEMORY": "1g",
            # One shuffle partition: test data is tiny, more partitions only add task overhead.
            "DISCORECS_SPARK_SHUFFLE_PARTITIONS": "1",
        }
    )


@pytest.fixture(scope="session")
def services(test_settings: Settings) -> Iterator[Settings]:
    """The real local broker and Cassandra (schema applied), up for the whole session."""
    manager = LocalServices(test_settings, say=lambda message: None)
    manager.up()
    try:
        yield test_settings
    finally:
        manager.down()


@pytest.fixture(scope="session")
def shared_discogs() -> Path:
    """The real Discogs excerpts beside the project; tests skip where they are absent."""
    if not SHARED_DISCOGS.is_dir():
        pytest.skip(f"the shared Discogs excerpts are not at {SHARED_DISCOGS}")
    return SHARED_DISCOGS


@pytest.fixture(scope="session")
def small_catalog(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A published catalog of 4,000 generated releases (for users, producers, stream, batch)."""
    from discorecs.catalog.generate import write_dump
    from discorecs.catalog.ingest import build_catalog

    folder = tmp_path_factory.mktemp("catalog")
    dump = write_dump(folder / "dump.xml.gz", 4000, seed=21).path
    build_catalog(dump, folder / "catalog" / "releases", workers=1, say=lambda message: None)
    return folder / "catalog" / "releases"


@pytest.fixture(scope="session")
def spark(test_settings: Settings):
    """One local Spark session for the test run (two cores; one shuffle partition, since test
    data is tiny and more partitions only add task overhead)."""
    from discorecs.spark import build_spark_session

    session = build_spark_session(test_settings, "discorecs-tests", {"spark.ui.enabled": "false"})
    yield session
    session.stop()


@dataclass(frozen=True)
class S3Server:
    """A local S3 server (moto's) on 127.0.0.1, for s3:// sources and s3a:// data roots."""

    endpoint: str

    def bucket(self, name: str) -> str:
        """A new bucket; returns a data root in it (``s3a://<name>/data``)."""
        import boto3

        boto3.client("s3", endpoint_url=self.endpoint).create_bucket(Bucket=name)
        return f"s3a://{name}/data"

    def settings(self, tmp_path: Path, bucket: str, base: Settings | None = None) -> Settings:
        """``base`` (default: a home under ``tmp_path``) with its data root in a new bucket."""
        base = base or load_settings({"DISCORECS_HOME": str(tmp_path / "home")})
        return base.replace(
            data_root=self.bucket(bucket), s3_endpoint=self.endpoint, home=tmp_path / "home"
        )


@pytest.fixture
def s3_server(monkeypatch: pytest.MonkeyPatch) -> Iterator[S3Server]:
    """A local S3 server for one test, with the AWS variables every client here reads (the
    credentials moto accepts, its address for boto3)."""
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    try:
        yield S3Server(endpoint)
    finally:
        server.stop()
        # moto keeps its buckets in this process, not in the server: start the next test clean.
        from moto.moto_api._internal.models import moto_api_backend

        moto_api_backend.reset()
