"""The nightly batch against the real Cassandra and Spark: state, guarantees, failure, cluster."""

import json
import os
import shutil
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import pyarrow.dataset as ds
import pytest

from discorecs import paths, tables
from discorecs.cassandra import connect
from discorecs.spark_schemas import EVENT_LOG_SCHEMA
from discorecs.users.population import write_population
from spark_jobs import nightly
from tests.conftest import free_port

pytestmark = [pytest.mark.services, pytest.mark.spark]


@pytest.fixture(scope="module")
def batch_root(small_catalog, tmp_path_factory, spark):
    root = tmp_path_factory.mktemp("batch") / "data"
    shutil.copytree(small_catalog, root / "catalog" / "releases")
    write_population(small_catalog, root / "users", 300, seed=12, say=lambda m: None)
    collections = ds.dataset(root / "users" / "collections").to_table().to_pylist()
    first = collections[0]
    catalog_ids = ds.dataset(small_catalog).to_table(columns=["release_id"])["release_id"]
    owned = {row["release_id"] for row in collections if row["user_id"] == first["user_id"]}
    new_release = next(r for r in catalog_ids.to_pylist() if r not in owned)
    t = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
    events = [
        ("ev-1", first["user_id"], new_release, "collection_add", t, t),
        ("ev-1", first["user_id"], new_release, "collection_add", t, t),  # duplicate
        ("ev-2", first["user_id"], first["release_id"], "collection_remove", t, t),
    ]
    # Bad input the run must count, not crash on: a record of a release the catalog lacks,
    # and a user whose every record is removed (an empty collection).
    others = sorted({row["user_id"] for row in collections} - {first["user_id"]})
    events.append(("ev-3", others[0], 999_999_999, "collection_add", t, t))
    emptied = others[1]
    events += [
        (f"ev-empty-{row['release_id']}", emptied, row["release_id"], "collection_remove", t, t)
        for row in collections
        if row["user_id"] == emptied
    ]
    frame = spark.createDataFrame(events, EVENT_LOG_SCHEMA).withColumn(
        "ingest_date", __import__("pyspark.sql.functions", fromlist=["lit"]).lit("2026-11-24")
    )
    frame.write.partitionBy("ingest_date").parquet(str(root / "events"))
    return root, first["user_id"], new_release, first["release_id"]


def published_run(settings):
    with connect(settings, keyspace=settings.cassandra_keyspace) as connection:
        row = connection.session.execute(
            f"SELECT run_id FROM {tables.PUBLISHED_RUNS} WHERE scope = %s",
            (tables.BATCH_SCOPE,),
        ).one()
    return row.run_id if row else None


def recommendations(settings, run_id):
    with connect(settings, keyspace=settings.cassandra_keyspace) as connection:
        rows = connection.session.execute(
            f"SELECT user_id, run_id, recommendation FROM {tables.RECOMMENDATIONS}"
        )
        found = {}
        for row in rows:
            if row.run_id == run_id:
                document = tables.decode_document(tables.RECOMMENDATION_FIELDS, row.recommendation)
                found[row.user_id] = (
                    document["friend"]["user"]["user_id"],
                    [pick["release"]["release_id"] for pick in document["releases"]],
                )
        return found


@pytest.fixture(scope="module")
def first_run(services, spark, batch_root):
    root, *_ = batch_root
    settings = services.replace(data_root=str(root))
    report = nightly.run_batch(spark, settings, say=lambda m: None)
    return settings, report


def test_the_run_is_published_and_recorded(first_run):
    settings, report = first_run
    assert report.status == "succeeded"
    assert published_run(settings) == report.run_id
    assert report.counts["duplicate_events"] == 1
    assert report.counts["missing_releases"] == 1
    assert report.counts["users_with_empty_collection"] == 1
    with connect(settings, keyspace=settings.cassandra_keyspace) as connection:
        record = connection.session.execute(
            f"SELECT status, step_counts FROM {tables.BATCH_RUNS} WHERE scope = %s",
            (tables.BATCH_SCOPE,),
        ).one()
    assert record.status == "succeeded"
    assert record.step_counts["users_with_friend"] == 299  # not the emptied user


def test_events_from_the_log_are_applied_to_the_snapshot(first_run, batch_root):
    _, report = first_run
    root, user, added, removed = batch_root
    snapshot = (
        ds.dataset(
            root / paths.SNAPSHOTS / report.run_id / paths.SNAPSHOT_COLLECTIONS, format="parquet"
        )
        .to_table()
        .to_pylist()
    )
    mine = {row["release_id"] for row in snapshot if row["user_id"] == user}
    assert added in mine and removed not in mine


def test_every_user_gets_a_friend_and_a_release_they_neither_own_nor_want(first_run, batch_root):
    settings, report = first_run
    root, *_ = batch_root
    recs = recommendations(settings, report.run_id)
    base = root / paths.SNAPSHOTS / report.run_id
    held = {}
    for dataset in ("collections", "wantlists"):
        for row in ds.dataset(base / dataset, format="parquet").to_table().to_pylist():
            held.setdefault(row["user_id"], set()).add(row["release_id"])
    owners = {
        row["user_id"]
        for row in ds.dataset(base / "collections", format="parquet")
        .to_table(columns=["user_id"])
        .to_pylist()
    }
    assert set(recs) == owners
    for user, (friend, releases) in recs.items():
        assert friend is not None and friend != user
        assert releases and not set(releases) & held[user]


def test_a_failed_run_leaves_the_previous_recommendations(first_run, spark, monkeypatch):
    settings, report = first_run
    before = recommendations(settings, report.run_id)
    real_write = nightly.write_to_cassandra

    def failing_write(settings_, frame, table, columns, **options):
        if table == tables.RECOMMENDATIONS:
            raise RuntimeError("Cassandra went away during the serving load")
        real_write(settings_, frame, table, columns, **options)

    monkeypatch.setattr(nightly, "write_to_cassandra", failing_write)
    with pytest.raises(RuntimeError, match="went away"):
        nightly.run_batch(spark, settings, say=lambda m: None)
    assert published_run(settings) == report.run_id
    assert recommendations(settings, report.run_id) == before
    with connect(settings, keyspace=settings.cassandra_keyspace) as connection:
        latest = connection.session.execute(
            f"SELECT status, message FROM {tables.BATCH_RUNS} WHERE scope = %s LIMIT 1",
            (tables.BATCH_SCOPE,),
        ).one()
    assert latest.status == "failed" and "went away" in latest.message


def test_a_standalone_cluster_gives_the_same_results(first_run, tmp_path):
    """A real Spark master and worker on 127.0.0.1, the batch submitted with spark-submit."""
    settings, report = first_run
    spark_home = (
        Path(sys.executable).parent.parent / "lib" / "python3.11" / "site-packages" / "pyspark"
    )
    master_port = free_port()
    env = {
        **os.environ,
        "SPARK_LOCAL_IP": "127.0.0.1",
        "SPARK_HOME": str(spark_home),
        "PYSPARK_PYTHON": sys.executable,
        "SPARK_LOG_DIR": str(tmp_path / "logs"),
        "SPARK_WORKER_DIR": str(tmp_path / "work"),
        # The REST submission server would take the fixed port 6066; spark-submit does not need it.
        "SPARK_MASTER_OPTS": "-Dspark.master.rest.enabled=false",
    }
    spark_class = str(spark_home / "bin" / "spark-class")
    logs = {name: (tmp_path / f"{name}.log").open("w") for name in ("master", "worker")}
    master = subprocess.Popen(
        [
            spark_class,
            "org.apache.spark.deploy.master.Master",
            "--host",
            "127.0.0.1",
            "--port",
            str(master_port),
            "--webui-port",
            str(free_port()),
        ],
        env=env,
        stdout=logs["master"],
        stderr=subprocess.STDOUT,
    )
    worker = subprocess.Popen(
        [
            spark_class,
            "org.apache.spark.deploy.worker.Worker",
            f"spark://127.0.0.1:{master_port}",
            "--host",
            "127.0.0.1",
            "--cores",
            "2",
            "--memory",
            "2g",
            "--webui-port",
            str(free_port()),
            "--work-dir",
            str(tmp_path / "work"),
        ],
        env=env,
        stdout=logs["worker"],
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 60
        while "Registering worker" not in (tmp_path / "master.log").read_text():
            assert time.monotonic() < deadline, (tmp_path / "master.log").read_text()[-2000:]
            time.sleep(0.5)
        submit_env = {
            **env,
            "DISCORECS_HOME": str(settings.home),
            "DISCORECS_DATA_ROOT": settings.data_root,
            "DISCORECS_KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers[0],
            "DISCORECS_CASSANDRA_PORT": str(settings.cassandra_port),
            "DISCORECS_CASSANDRA_KEYSPACE": settings.cassandra_keyspace,
            "DISCORECS_SPARK_SHUFFLE_PARTITIONS": "4",
        }
        result = subprocess.run(
            [
                str(spark_home / "bin" / "spark-submit"),
                "--master",
                f"spark://127.0.0.1:{master_port}",
                "--driver-memory",
                "1g",
                "--executor-memory",
                "1g",
                str(Path(nightly.__file__)),
            ],
            env=submit_env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert result.returncode == 0, result.stderr[-3000:]
        summary = json.loads(result.stdout[result.stdout.index("{") :])
        assert summary["status"] == "succeeded"
    finally:
        for process in (worker, master):
            process.terminate()
            process.wait(timeout=30)
        for log in logs.values():
            log.close()
    cluster_run = summary["run_id"]
    assert published_run(settings) == cluster_run != report.run_id
    assert recommendations(settings, cluster_run) == recommendations(settings, report.run_id)


ONE_ALS = ({"rank": 8, "regParam": 0.1, "alpha": 10.0, "maxIter": 5},)


def test_evaluation_reports_every_recommender(first_run, spark, batch_root):
    from collections import Counter

    from spark_jobs.evaluate import Evaluation, evaluate_published, format_table

    settings, report = first_run
    root, *_ = batch_root
    how = Evaluation(holdout=0.2, seed=5, als_users=100, als_grid=ONE_ALS)
    result = evaluate_published(spark, settings, how, say=lambda m: None)
    published = result["populations"]["published"]
    assert set(published["results"]) == {
        "discorecs",
        "top genre",
        "friend's most owned",
        "item-to-item",
        "ALS (implicit, tuned)",
        "discorecs (ALS sample)",
    }
    # Users with a single record keep it: only users with two or more are evaluated.
    snapshot = root / paths.SNAPSHOTS / report.run_id / paths.SNAPSHOT_COLLECTIONS
    sizes = Counter(
        row["user_id"]
        for row in ds.dataset(snapshot, format="parquet").to_table(columns=["user_id"]).to_pylist()
    )
    assert published["evaluated_users"] == sum(size >= 2 for size in sizes.values())
    assert published["als_users"] == 100
    assert [row["params"] for row in published["als_grid"]] == list(ONE_ALS)
    ours = published["results"]["discorecs"]
    assert ours["users_covered"] == 1.0
    for metrics in published["results"].values():
        assert all(0.0 <= value <= 1.0 for value in metrics.values())
        assert metrics["hit_rate_at_1"] <= metrics["hit_rate_at_10"]
    # Hidden records are drawn by taste: the taste model must find some of them.
    assert ours["hit_rate_at_10"] > 0.05
    assert "population: published" in format_table(result)


def test_evaluation_generates_each_taste_model_from_the_catalog(first_run, spark):
    from spark_jobs.evaluate import Evaluation, evaluate

    settings, _ = first_run
    how = Evaluation(holdout=0.2, seed=2, als_grid=ONE_ALS)
    result = evaluate(spark, settings, how, users=300, say=lambda m: None)
    assert set(result["populations"]) == {"genres", "scenes"}
    for population in result["populations"].values():
        # 300 users, less those with a single record (nothing to hide).
        assert 250 <= population["evaluated_users"] <= 300
        assert population["results"]["discorecs"]["users_covered"] == 1.0
    # The populations differ: one model's collections are not the other's.
    genres, scenes = (result["populations"][m]["results"] for m in ("genres", "scenes"))
    assert genres["discorecs"] != scenes["discorecs"]
    assert not (settings.run_dir / "evaluate" / "scenes").exists()  # scratch removed


def test_the_stored_answer_names_friends_and_releases_as_the_inputs_do(first_run, batch_root):
    settings, report = first_run
    root, *_ = batch_root
    names = {
        row["user_id"]: row["name"]
        for row in ds.dataset(root / "users" / "users").to_table().to_pylist()
    }
    titles = {
        row["release_id"]: row["title"]
        for row in ds.dataset(root / "catalog" / "releases")
        .to_table(columns=["release_id", "title"])
        .to_pylist()
    }
    with connect(settings, keyspace=settings.cassandra_keyspace) as connection:
        rows = list(
            connection.session.execute(
                f"SELECT user_id, run_id, recommendation FROM {tables.RECOMMENDATIONS}"
            )
        )
    answers = [json.loads(r.recommendation) for r in rows if r.run_id == report.run_id]
    assert answers
    for answer in answers:
        assert answer["run_id"] == report.run_id
        for pick in [answer["friend"], *answer["other_friends"]]:
            assert pick["user"]["name"] == names[pick["user"]["user_id"]]
        for pick in answer["releases"]:
            assert pick["release"]["title"] == titles[pick["release"]["release_id"]]


def test_each_users_row_holds_their_profile_as_ranked(first_run):
    settings, report = first_run
    ranked = {
        (row.user_id, row.genre): (row.rank, row.percentile)
        for row in report.results["ranks"].collect()
    }
    with connect(settings, keyspace=settings.cassandra_keyspace) as connection:
        rows = connection.session.execute(
            f"SELECT user_id, run_id, genre_profile FROM {tables.RECOMMENDATIONS}"
        )
        profiles = {
            row.user_id: tables.decode_document(tables.PROFILE_FIELDS, row.genre_profile)
            for row in rows
            if row.run_id == report.run_id
        }
    assert len(profiles) == report.counts["users_scored"]
    stored = {
        (user_id, genre): (rank, profile["percentiles"][genre])
        for user_id, profile in profiles.items()
        for genre, rank in profile["ranks"].items()
    }
    assert stored == ranked
