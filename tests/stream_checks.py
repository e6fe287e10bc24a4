"""What the stream's recovery and fault tests check: a keyspace and data root of their own
for each run of the same events, the state the stream leaves there, and waiting for it."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pyarrow.dataset as ds

from discorecs import paths
from discorecs.cassandra import connect
from discorecs.schema import apply_schema
from discorecs.services.jobs import StreamJob
from discorecs.settings import Settings
from discorecs.users.population import load_population_into_cassandra

QUIET = lambda message: None  # noqa: E731


def target(world_settings: Settings, base: Path, name: str, **changes) -> Settings:
    """A keyspace and data root of its own, with the same catalog, users and collections."""
    root = base / name
    for dataset in (paths.CATALOG_RELEASES, paths.USERS):
        shutil.copytree(Path(world_settings.data_root) / dataset, root / dataset)
    settings = world_settings.replace(
        data_root=str(root), cassandra_keyspace=f"stream_{name}", home=base / f"{name}-home"
    ).replace(**changes)
    apply_schema(settings)
    load_population_into_cassandra(settings, root / paths.USERS, say=QUIET)
    return settings


def state(settings: Settings) -> dict[str, list]:
    """Everything the stream writes, in a comparable form (times of processing left out)."""
    with connect(settings, keyspace=settings.cassandra_keyspace) as connection:

        def rows(cql: str) -> list:
            return sorted(tuple(row) for row in connection.session.execute(cql))

        found = {
            "collections": rows("SELECT user_id, release_id, added_at FROM collections"),
            "wantlists": rows("SELECT user_id, release_id, added_at FROM wantlists"),
            "dead_letters": rows(
                "SELECT topic, kafka_partition, kafka_offset, payload, reason FROM dead_letters"
            ),
            "live": sorted(
                (user, profile, holdings)
                for user, profile, holdings in rows(
                    "SELECT DISTINCT user_id, profile, holdings FROM recommendations_by_user"
                )
                if profile is not None
            ),
        }
    log = ds.dataset(paths.event_log(settings.data_root), format="parquet", partitioning="hive")
    found["event_log"] = sorted(
        tuple(row.values())
        for row in log.to_table(
            columns=["event_id", "user_id", "release_id", "kind", "event_time", "ingested_at"]
        ).to_pylist()
    )
    return found


def streamed_rows(settings: Settings) -> int:
    """Input rows of every micro-batch the stream recorded (a replayed batch counts once)."""
    with connect(settings, keyspace=settings.cassandra_keyspace) as connection:
        rows = connection.session.execute(
            "SELECT batch_id, input_rows FROM stream_progress WHERE query_name = %s",
            ("discorecs-stream",),
        )
        return sum(row.input_rows for row in rows)


def wait_for(condition, timeout: float, what: str, job: StreamJob | None = None) -> None:
    """Poll ``condition`` (a Cassandra that is busy or restarting may fail a poll: retried)."""
    deadline = time.monotonic() + timeout
    last_error = None
    while True:
        try:
            if condition():
                return
        except Exception as error:
            last_error = error
        if job is not None and job.record() is None:
            raise AssertionError(f"the stream exited while waiting for {what}:\n{job_log(job)}")
        assert time.monotonic() < deadline, f"timed out waiting for {what} ({last_error})"
        time.sleep(0.5)


def assert_same_state(found: dict, reference: dict) -> None:
    """Table by table, so a difference says where it is."""
    for name in reference:
        missing = sorted(set(reference[name]) - set(found[name]))[:5]
        extra = sorted(set(found[name]) - set(reference[name]))[:5]
        assert found[name] == reference[name], f"{name}: missing {missing}, unexpected {extra}"


def job_log(job: StreamJob) -> str:
    return job.log_path.read_text(errors="replace")[-4000:]
