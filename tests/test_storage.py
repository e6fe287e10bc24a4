"""Publishing datasets as versions and a pointer, on a local data root and on S3 alike."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from discorecs import storage
from discorecs.settings import load_settings

DATASET = "things/stuff"


@pytest.fixture(params=["local", "s3a"])
def settings(request, tmp_path):
    if request.param == "local":
        return load_settings(
            {"DISCORECS_HOME": str(tmp_path / "home"), "DISCORECS_DATA_ROOT": str(tmp_path / "d")}
        )
    return request.getfixturevalue("s3_server").settings(tmp_path, "versions")


def publish_rows(settings, values: list[int], **details) -> storage.Version:
    with storage.publishing(settings, DATASET, details) as folder:
        pq.write_table(pa.table({"value": values}), folder / "part-0.parquet")
    return storage.current(settings, DATASET)


def values(version: storage.Version) -> list[int]:
    return sorted(version.location.dataset().to_table()["value"].to_pylist())


def old_version(settings, values_: list[int], age: timedelta) -> storage.Version:
    """A version written ``age`` ago (its id carries the time), published."""
    version = storage.begin(settings, DATASET, storage.new_version_id(datetime.now(UTC) - age))
    version.location.filesystem.create_dir(version.location.path)
    with version.location.filesystem.open_output_stream(
        version.location.join("part-0.parquet").path
    ) as out:
        pq.write_table(pa.table({"value": values_}), out)
    storage.publish(settings, version)
    return version


def test_a_published_version_is_what_readers_get(settings):
    assert storage.current(settings, DATASET) is None
    first = publish_rows(settings, [1, 2, 3], watermark="2026-12-01T00:00:00+00:00")
    assert values(first) == [1, 2, 3]
    assert first.details["watermark"] == "2026-12-01T00:00:00+00:00"
    assert first.location.exists(storage.SUCCESS)
    second = publish_rows(settings, [4])
    assert second.id != first.id and values(storage.current(settings, DATASET)) == [4]
    # Within the grace period the previous version is still there for a reader holding it.
    assert values(first) == [1, 2, 3]


def test_a_failed_publish_leaves_the_previous_version(settings):
    first = publish_rows(settings, [1, 2])
    with (
        pytest.raises(RuntimeError, match="half way"),
        storage.publishing(settings, DATASET) as folder,
    ):
        pq.write_table(pa.table({"value": [9]}), folder / "part-0.parquet")
        raise RuntimeError("died half way")
    assert storage.current(settings, DATASET) == first and values(first) == [1, 2]
    folder = storage.data_root(settings).join(DATASET)
    assert folder.folders() == [first.id]  # the failed version's files were removed


def test_old_versions_go_after_the_grace_period(settings):
    stale = old_version(settings, [1], timedelta(hours=30))
    recent = old_version(settings, [2], timedelta(hours=2))
    # A version a run left behind without publishing it (killed before the pointer moved).
    abandoned = storage.begin(
        settings, DATASET, storage.new_version_id(datetime.now(UTC) - timedelta(hours=48))
    )
    abandoned.location.write_text("part-0.parquet", "half")
    newest = publish_rows(settings, [3])
    folder = storage.data_root(settings).join(DATASET)
    assert folder.folders() == sorted([recent.id, newest.id])
    assert stale.id not in folder.folders() and abandoned.id not in folder.folders()
    assert values(storage.current(settings, DATASET)) == [3]


def test_a_missing_dataset_says_what_to_run(settings):
    with pytest.raises(storage.StorageError, match=r"things/stuff holds no published stuff; run"):
        storage.require_current(settings, DATASET, "stuff", "run `make stuff` first")


def test_a_folder_with_its_files_and_success_is_read_in_place(tmp_path):
    settings = load_settings(
        {"DISCORECS_HOME": str(tmp_path / "home"), "DISCORECS_DATA_ROOT": str(tmp_path / "d")}
    )
    folder = tmp_path / "d" / DATASET
    folder.mkdir(parents=True)
    pq.write_table(pa.table({"value": [7]}), folder / "part-0.parquet")
    assert storage.current(settings, DATASET) is None  # not complete until _SUCCESS
    (folder / storage.SUCCESS).write_text("")
    assert values(storage.current(settings, DATASET)) == [7]


def test_a_damaged_pointer_is_reported(tmp_path):
    settings = load_settings(
        {"DISCORECS_HOME": str(tmp_path / "home"), "DISCORECS_DATA_ROOT": str(tmp_path / "d")}
    )
    publish_rows(settings, [1])
    for damaged in ("{not json", '{"published_at": "2026-12-03"}', "[]"):
        (tmp_path / "d" / DATASET / storage.POINTER).write_text(damaged)
        with pytest.raises(storage.StorageError, match="publishing the dataset again"):
            storage.current(settings, DATASET)
