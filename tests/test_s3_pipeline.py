"""The whole pipeline with its data root in a bucket of a local S3 server: every step reads and
writes s3a:// (Python through pyarrow, Spark through Hadoop's s3a), and no dataset is copied
to the local disk."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pyarrow.dataset as ds
import pytest

from discorecs import paths, storage, tables
from discorecs.cassandra import connect
from discorecs.catalog.generate import write_dump
from discorecs.schema import apply_schema
from discorecs.services.broker import KafkaBroker
from tests.conftest import free_port

pytestmark = [pytest.mark.services, pytest.mark.spark]


def test_a_whole_pipeline_on_an_s3a_data_root(services, s3_server, tmp_path):
    settings = s3_server.settings(tmp_path, "pipeline", base=services).replace(
        kafka_bootstrap_servers=(f"127.0.0.1:{free_port()}",),
        kafka_controller_port=free_port(),
        cassandra_keyspace="s3_pipeline",
        spark_shuffle_partitions=2,
        stream_trigger_seconds=1.0,
    )
    apply_schema(settings)
    dump = write_dump(tmp_path / "discogs_20261101_releases.xml.gz", 1500, seed=3).path
    environment = {**os.environ, **settings.to_environment()}

    def cli(*args: str) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "commands.cli", *args],
            env=environment,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert done.returncode == 0, f"discorecs {' '.join(args)}:\n{done.stderr[-4000:]}"
        return done.stdout

    broker = KafkaBroker(settings)
    broker.start()
    try:
        cli("ingest-dump", str(dump), "--workers", "1")
        cli("generate-users", "--users", "200", "--seed", "2")
        cli("create-topics", "--partitions", "2")
        sent = 0
        for kind, count in (("collection", 300), ("activity", 150)):
            summary = json.loads(
                cli("produce", kind, "--count", str(count), "--rate", "5000", "--json")
            )
            assert summary["failed"] == 0
            sent += summary["sent"]
        cli("stream", "--available-now")
        cli("batch")
    finally:
        broker.stop()

    root = storage.data_root(settings)
    catalog = storage.current(settings, paths.CATALOG_RELEASES)
    users = storage.current(settings, paths.USERS)
    snapshot = storage.current(settings, paths.SNAPSHOTS)
    assert catalog.location.uri.startswith("s3a://pipeline/data/catalog/releases/")
    assert catalog.location.dataset().count_rows() == 1500
    assert users.location.dataset(paths.USER_PROFILES).count_rows() == 200
    # Every event the producers sent is in the event log on S3, once.
    log = ds.dataset(
        root.join(paths.EVENT_LOG).path,
        filesystem=root.filesystem,
        format="parquet",
        partitioning="hive",
    ).to_table(columns=["event_id"])
    assert log.num_rows == sent == len(set(log["event_id"].to_pylist()))
    assert root.join("checkpoints").folders()  # the stream's checkpoint is there too
    with connect(settings, keyspace=settings.cassandra_keyspace) as connection:
        run_id = connection.session.execute(
            f"SELECT run_id FROM {tables.PUBLISHED_RUNS} WHERE scope = %s",
            (tables.BATCH_SCOPE,),
        ).one()[0]
        record = connection.session.execute(
            f"SELECT status, step_counts FROM {tables.BATCH_RUNS} WHERE scope = %s",
            (tables.BATCH_SCOPE,),
        ).one()
        answers = connection.session.execute(
            f"SELECT COUNT(*) FROM {tables.RECOMMENDATIONS} WHERE run_id = %s ALLOW FILTERING",
            (run_id,),
        ).one()[0]
    assert snapshot.id == run_id and snapshot.details["run_id"] == run_id
    assert snapshot.location.dataset(paths.SNAPSHOT_COLLECTIONS).count_rows() > 0
    assert record.status == "succeeded" and record.step_counts["events_read"] == sent
    # Every user has a friend and an answer, but one whose every record the events removed.
    counts = record.step_counts
    assert counts["users_with_friend"] + counts["users_with_empty_collection"] == 200
    assert counts["users_with_friend"] >= 190 and answers == counts["users_with_friend"]
    # Nothing of the datasets on the local disk: no data folder, the staging folder emptied.
    assert not (settings.home / "data").exists()
    assert not list((settings.home / "staging").iterdir())
