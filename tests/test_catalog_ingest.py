"""ingest-dump end to end: fetch (local, HTTP(S), S3), verify, parse, publish, load Cassandra."""

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from discorecs import paths, storage, tables
from discorecs.catalog.chunks import DumpError
from discorecs.catalog.fetch import FetchError
from discorecs.catalog.generate import write_dump
from discorecs.catalog.ingest import (
    REJECTS,
    build_catalog,
    current_catalog,
    ingest_dump,
    read_manifest,
)
from discorecs.settings import load_settings
from discorecs.storage import StorageError
from tests.catalog_fixtures import dump_text, release, write
from tests.servers import file_server, self_signed_certificate


def quiet(message: str) -> None:
    pass


@pytest.fixture
def settings(tmp_path):
    return load_settings({"DISCORECS_HOME": str(tmp_path / "home")})


def published(settings) -> Path:
    """The local folder of the catalog's published version."""
    return Path(current_catalog(settings).path)


def truncated_dump(folder: Path) -> str:
    """A dump of 3,000 releases cut a third of the way from its end."""
    whole = small_dump(folder, "big.xml.gz", count=3000).read_bytes()
    truncated = folder / "truncated.xml.gz"
    truncated.write_bytes(whole[: len(whole) * 2 // 3])
    return str(truncated)


def catalog_rows(catalog: Path) -> list[dict]:
    return pq.read_table(catalog).sort_by("release_id").to_pylist()


def checksum_file(folder: Path, dump: Path, digest: str | None = None) -> Path:
    digest = digest or hashlib.sha256(dump.read_bytes()).hexdigest()
    path = folder / "discogs_20261101_CHECKSUM.txt"
    path.write_text(f"{'0' * 64} discogs_20261101_artists.xml.gz\n{digest} {dump.name}\n")
    return path


def small_dump(folder: Path, name: str = "discogs_20261101_releases.xml.gz", count: int = 300):
    return write_dump(folder / name, count, seed=5).path


def test_real_excerpt_ingests_to_1000_releases(shared_discogs, settings):
    report = ingest_dump(
        settings,
        str(shared_discogs / "discogs_20200806_releases.xml.gz"),
        load_cassandra=False,
        say=quiet,
    )
    catalog = published(settings)
    table = pq.read_table(catalog)
    assert report.releases == table.num_rows == 1000
    assert report.genre_counts["Rock"] == 332 and report.genre_counts["Brass & Military"] == 2
    rows = table.to_pylist()
    # 118 releases have no `released`; release 11058868 says "0000", which is no year either.
    assert sum(row["year"] is None for row in rows) == 119
    assert [r["release_id"] for r in rows if r["released"] == "0000"] == [11058868]
    assert read_manifest(catalog)["releases"] == 1000


def test_parallel_parse_writes_every_release_once(tmp_path):
    dump = small_dump(tmp_path, count=2000)
    catalog = tmp_path / "catalog" / "releases"
    report = build_catalog(dump, catalog, workers=2, chunk_bytes=200_000, say=quiet)
    rows = catalog_rows(catalog)
    assert report.parts > 5
    assert report.releases == len(rows) == 2000
    ids = [row["release_id"] for row in rows]
    assert len(set(ids)) == 2000 and ids[0] == 1
    assert (catalog / "_SUCCESS").exists()
    assert read_manifest(catalog)["parts"] == report.parts


def test_bad_releases_go_to_the_rejects_file_and_good_ones_are_kept(tmp_path):
    broken = '<release id="3" status="Accepted"><title>x</titel></release>\n'
    dump = write(tmp_path / "bad.xml", dump_text(release(1), release(None), broken, release(4)))
    catalog = tmp_path / "catalog" / "releases"
    report = build_catalog(dump, catalog, workers=1, say=quiet)
    assert [row["release_id"] for row in catalog_rows(catalog)] == [1, 4]
    assert report.rejected == 2
    rejects = [json.loads(line) for line in (catalog / REJECTS).read_text().splitlines()]
    assert [(r["release_id"], r["file"]) for r in rejects] == [(None, str(dump)), ("3", str(dump))]
    assert rejects[0]["reason"] == "release without id"
    assert rejects[1]["offset"] == len(("<releases>\n" + release(1) + release(None)).encode())


def test_duplicate_ids_across_chunks_keep_the_later(tmp_path):
    releases = [release(n) for n in range(1, 200)]
    releases.append(release(5, title="the later one"))
    dump = write(tmp_path / "dups.xml.gz", dump_text(*releases))
    catalog = tmp_path / "catalog" / "releases"
    report = build_catalog(dump, catalog, workers=2, chunk_bytes=2_000, say=quiet)
    rows = catalog_rows(catalog)
    assert report.duplicates == 1 and report.releases == len(rows) == 199
    assert [row["title"] for row in rows if row["release_id"] == 5] == ["the later one"]


def test_failed_ingest_leaves_the_previous_catalog_in_place(tmp_path, settings):
    ingest_dump(
        settings, str(small_dump(tmp_path, "good.xml.gz", 50)), load_cassandra=False, say=quiet
    )
    before = current_catalog(settings)
    manifest = read_manifest(before)
    with pytest.raises(DumpError, match="truncated"):
        ingest_dump(settings, truncated_dump(tmp_path), workers=2, load_cassandra=False, say=quiet)
    assert current_catalog(settings) == before
    assert read_manifest(before) == manifest
    assert pq.read_table(before.path).num_rows == 50
    # The failed version was removed; only the published one and the pointer are left.
    folder = Path(settings.data_root) / paths.CATALOG_RELEASES
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        [Path(before.path).name, storage.POINTER]
    )


def test_a_rerun_publishes_a_new_version_and_keeps_the_old_one_for_the_grace(tmp_path, settings):
    ingest_dump(
        settings, str(small_dump(tmp_path, "a.xml.gz", 80)), load_cassandra=False, say=quiet
    )
    first = current_catalog(settings)
    ingest_dump(
        settings, str(small_dump(tmp_path, "b.xml.gz", 30)), load_cassandra=False, say=quiet
    )
    assert current_catalog(settings) != first
    assert pq.read_table(published(settings)).num_rows == 30
    assert pq.read_table(first.path).num_rows == 80  # a reader that resolved it may finish
    done = settings.replace(old_versions_grace_hours=0)
    ingest_dump(done, str(small_dump(tmp_path, "c.xml.gz", 20)), load_cassandra=False, say=quiet)
    folder = Path(settings.data_root) / paths.CATALOG_RELEASES
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        [Path(current_catalog(settings).path).name, storage.POINTER]
    )
    assert pq.read_table(published(settings)).num_rows == 20


def test_missing_catalog_says_what_to_run(tmp_path):
    with pytest.raises(StorageError, match="discorecs ingest-dump"):
        read_manifest(tmp_path / "nothing")


def test_checksum_beside_the_dump_is_verified(tmp_path, settings):
    dump = small_dump(tmp_path)
    checksum_file(tmp_path, dump)
    report = ingest_dump(settings, str(dump), load_cassandra=False, say=quiet)
    assert report.sha256 == hashlib.sha256(dump.read_bytes()).hexdigest()
    assert read_manifest(current_catalog(settings))["sha256"] == report.sha256


def test_checksum_mismatch_stops_before_anything_is_written(tmp_path, settings):
    dump = small_dump(tmp_path)
    listing = checksum_file(tmp_path, dump, "ab" * 32)
    with pytest.raises(
        FetchError,
        match=r"checksum mismatch: sha256 is [0-9a-f]{64}, .* lists "
        "abab",
    ):
        ingest_dump(settings, str(dump), checksum=str(listing), load_cassandra=False, say=quiet)
    assert storage.current(settings, paths.CATALOG_RELEASES) is None
    assert not (Path(settings.data_root) / "catalog").exists()


def test_checksum_file_without_the_dump_is_an_error(tmp_path, settings):
    dump = small_dump(tmp_path)
    listing = tmp_path / "other.txt"
    listing.write_text(f"{'1' * 64} discogs_20261101_labels.xml.gz\n")
    with pytest.raises(FetchError, match="has no sha256 for discogs_20261101_releases"):
        ingest_dump(settings, str(dump), checksum=str(listing), load_cassandra=False, say=quiet)


def test_missing_local_dump(settings, tmp_path):
    with pytest.raises(FetchError, match=r"dump not found: .*nope\.xml\.gz"):
        ingest_dump(settings, str(tmp_path / "nope.xml.gz"), load_cassandra=False, say=quiet)


@pytest.mark.parametrize("tls", [False, True])
def test_http_and_https_download_resumes_and_verifies(tmp_path, settings, monkeypatch, tls):
    served = tmp_path / "served"
    served.mkdir()
    dump = small_dump(served, count=400)
    checksum_file(served, dump)
    certificate = None
    if tls:
        certificate = self_signed_certificate(tmp_path)
        monkeypatch.setenv("SSL_CERT_FILE", str(certificate[0]))
    # A previous, interrupted download left the first third behind.
    downloads = settings.home / "downloads"
    downloads.mkdir(parents=True)
    data = dump.read_bytes()
    (downloads / (dump.name + ".part")).write_bytes(data[: len(data) // 3])
    with file_server(served, certificate=certificate) as (base, requests):
        report = ingest_dump(settings, f"{base}/{dump.name}", load_cassandra=False, say=quiet)
    assert f"bytes={len(data) // 3}-" in requests
    assert report.releases == 400
    assert report.sha256 == hashlib.sha256(data).hexdigest()
    assert (downloads / dump.name).read_bytes() == data


def test_download_restarts_cleanly_when_the_server_cannot_resume(tmp_path, settings):
    served = tmp_path / "served"
    served.mkdir()
    dump = small_dump(served, count=100)
    checksum_file(served, dump)
    downloads = settings.home / "downloads"
    downloads.mkdir(parents=True)
    (downloads / (dump.name + ".part")).write_bytes(b"garbage that must not be kept")
    with file_server(served, ranges=False) as (base, _):
        report = ingest_dump(settings, f"{base}/{dump.name}", load_cassandra=False, say=quiet)
    assert report.releases == 100
    assert (downloads / dump.name).read_bytes() == dump.read_bytes()


def test_corrupt_download_is_deleted(tmp_path, settings):
    served = tmp_path / "served"
    served.mkdir()
    dump = small_dump(served, count=50)
    checksum_file(served, dump, "cd" * 32)
    with file_server(served) as (base, _), pytest.raises(FetchError, match="checksum mismatch"):
        ingest_dump(settings, f"{base}/{dump.name}", load_cassandra=False, say=quiet)
    assert not (settings.home / "downloads" / dump.name).exists()


def test_http_404_is_named(tmp_path, settings):
    with file_server(tmp_path) as (base, _), pytest.raises(FetchError, match="HTTP 404"):
        ingest_dump(settings, f"{base}/discogs_x.xml.gz", load_cassandra=False, say=quiet)


def test_s3_source_with_checksum(tmp_path, settings, s3_server):
    import boto3

    dump = small_dump(tmp_path, count=120)
    listing = checksum_file(tmp_path, dump)
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket="dumps")
    s3.upload_file(str(dump), "dumps", f"2026/{dump.name}")
    s3.upload_file(str(listing), "dumps", f"2026/{listing.name}")
    report = ingest_dump(settings, f"s3://dumps/2026/{dump.name}", load_cassandra=False, say=quiet)
    assert report.releases == 120
    assert report.sha256 == hashlib.sha256(dump.read_bytes()).hexdigest()
    with pytest.raises(FetchError, match=r"dump not found: s3://dumps/2026/missing\.xml\.gz"):
        ingest_dump(settings, "s3://dumps/2026/missing.xml.gz", load_cassandra=False, say=quiet)


@pytest.mark.services
def test_releases_are_loaded_into_cassandra_idempotently(services, tmp_path):
    from discorecs.cassandra import connect

    settings = services.replace(data_root=str(tmp_path / "data"))
    dump = small_dump(tmp_path, count=250)
    first = ingest_dump(settings, str(dump), say=quiet)
    second = ingest_dump(settings, str(dump), say=quiet)
    assert first.cassandra_rows == second.cassandra_rows == 250
    expected = {row["release_id"]: row for row in catalog_rows(published(settings))}
    with connect(settings, keyspace=settings.cassandra_keyspace) as connection:
        ids = sorted(expected)[:20]
        found = connection.session.execute(
            f"SELECT release_id, title, genres, styles, year, master_id FROM {tables.RELEASES} "
            f"WHERE release_id IN ({', '.join(map(str, ids))})"
        )
        for row in found:
            source = expected[row.release_id]
            assert row.title == source["title"]
            assert list(row.genres) == source["genres"]
            assert list(row.styles or []) == source["styles"]
            assert row.year == source["year"] and row.master_id == source["master_id"]


def test_a_catalog_on_an_s3a_data_root(tmp_path, s3_server):
    """Published to a bucket of a local S3 server: no local copy kept; a failed ingest leaves
    the previous version readable."""
    settings = s3_server.settings(tmp_path, "catalog-root")
    ingest_dump(
        settings, str(small_dump(tmp_path, "a.xml.gz", 120)), load_cassandra=False, say=quiet
    )
    catalog = current_catalog(settings)
    assert catalog.uri.startswith("s3a://catalog-root/data/catalog/releases/")
    assert catalog.dataset().count_rows() == 120 == read_manifest(catalog)["releases"]
    with pytest.raises(DumpError, match="truncated"):
        ingest_dump(settings, truncated_dump(tmp_path), workers=2, load_cassandra=False, say=quiet)
    assert current_catalog(settings) == catalog
    assert catalog.dataset().count_rows() == 120
    assert not list((settings.home / "staging").iterdir())  # the local staging was removed


def test_an_ingest_killed_mid_run_leaves_the_previous_catalog(tmp_path, s3_server):
    """SIGKILL while parsing into the staging folder (the whole process group: the parse
    workers too): the pointer still names the previous catalog, which reads whole; the next
    publish after the grace period clears what the killed run left."""
    settings = s3_server.settings(tmp_path, "killed-root")
    ingest_dump(
        settings, str(small_dump(tmp_path, "a.xml.gz", 60)), load_cassandra=False, say=quiet
    )
    before = current_catalog(settings)
    big = write_dump(tmp_path / "big.xml.gz", 40_000, seed=6).path
    ingest = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "commands.cli",
            "ingest-dump",
            str(big),
            "--workers",
            "1",
            "--skip-cassandra",
        ],
        env={**os.environ, **settings.to_environment()},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 120
        while not list((settings.home / "staging").glob("*/part-*.parquet")):
            assert ingest.poll() is None, "the ingest ended before it could be killed"
            assert time.monotonic() < deadline, "no part was written within 120 s"
            time.sleep(0.05)
    finally:
        os.killpg(ingest.pid, signal.SIGKILL)
        ingest.wait()
    assert current_catalog(settings) == before
    assert before.dataset().count_rows() == 60
    assert list((settings.home / "staging").iterdir())  # what the killed run left
    later = settings.replace(old_versions_grace_hours=0)
    ingest_dump(later, str(small_dump(tmp_path, "b.xml.gz", 30)), load_cassandra=False, say=quiet)
    assert current_catalog(later).dataset().count_rows() == 30
    assert not list((settings.home / "staging").iterdir())
