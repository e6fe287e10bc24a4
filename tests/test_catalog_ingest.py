"""ingest-dump end to end: fetch (local, HTTP(S), S3), verify, parse, publish, load Cassandra."""

import hashlib
import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from discorecs import tables
from discorecs.catalog.chunks import DumpError
from discorecs.catalog.fetch import FetchError
from discorecs.catalog.generate import write_dump
from discorecs.catalog.ingest import (
    REJECTS,
    build_catalog,
    ingest_dump,
    local_catalog_dir,
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
    catalog = local_catalog_dir(settings)
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


def test_failed_ingest_leaves_the_previous_catalog_in_place(tmp_path):
    catalog = tmp_path / "catalog" / "releases"
    good = small_dump(tmp_path, "good.xml.gz", count=50)
    build_catalog(good, catalog, workers=1, say=quiet)
    before = read_manifest(catalog)
    whole = small_dump(tmp_path, "big.xml.gz", count=3000).read_bytes()
    truncated = tmp_path / "truncated.xml.gz"
    truncated.write_bytes(whole[: len(whole) * 2 // 3])
    with pytest.raises(DumpError, match="truncated"):
        build_catalog(truncated, catalog, workers=2, chunk_bytes=100_000, say=quiet)
    assert read_manifest(catalog) == before
    assert pq.read_table(catalog).num_rows == 50
    assert [p.name for p in catalog.parent.iterdir()] == ["releases"]  # no staging left


def test_a_rerun_replaces_the_catalog(tmp_path):
    catalog = tmp_path / "catalog" / "releases"
    build_catalog(small_dump(tmp_path, "a.xml.gz", count=80), catalog, workers=1, say=quiet)
    build_catalog(small_dump(tmp_path, "b.xml.gz", count=30), catalog, workers=1, say=quiet)
    assert pq.read_table(catalog).num_rows == 30
    assert sorted(p.name for p in catalog.parent.iterdir()) == ["releases"]


def test_missing_catalog_says_what_to_run(tmp_path):
    with pytest.raises(StorageError, match="discorecs ingest-dump"):
        read_manifest(tmp_path / "nothing")


def test_checksum_beside_the_dump_is_verified(tmp_path, settings):
    dump = small_dump(tmp_path)
    checksum_file(tmp_path, dump)
    report = ingest_dump(settings, str(dump), load_cassandra=False, say=quiet)
    assert report.sha256 == hashlib.sha256(dump.read_bytes()).hexdigest()
    assert read_manifest(local_catalog_dir(settings))["sha256"] == report.sha256


def test_checksum_mismatch_stops_before_anything_is_written(tmp_path, settings):
    dump = small_dump(tmp_path)
    listing = checksum_file(tmp_path, dump, "ab" * 32)
    with pytest.raises(
        FetchError,
        match=r"checksum mismatch: sha256 is [0-9a-f]{64}, .* lists "
        "abab",
    ):
        ingest_dump(settings, str(dump), checksum=str(listing), load_cassandra=False, say=quiet)
    assert not local_catalog_dir(settings).parent.exists()


def test_checksum_file_without_the_dump_is_an_error(tmp_path, settings):
    dump = small_dump(tmp_path)
    listing = tmp_path / "other.txt"
    listing.write_text(f"{'1' * 64} discogs_20261101_labels.xml.gz\n")
    with pytest.raises(FetchError, match="has no sha256 for discogs_20261101_releases"):
        ingest_dump(settings, str(dump), checksum=str(listing), load_cassandra=False, say=quiet)


def test_missing_local_dump(settings, tmp_path):
    with pytest.raises(FetchError, match=r"dump not found: .*nope\.xml\.gz"):
        ingest_dump(settings, str(tmp_path / "nope.xml.gz"), load_cassandra=False, say=quiet)


def test_remote_data_root_is_refused_with_a_way_forward(tmp_path):
    remote = load_settings({"DISCORECS_HOME": str(tmp_path), "DISCORECS_DATA_ROOT": "s3a://b/x"})
    with pytest.raises(StorageError, match="needs a local data root"):
        ingest_dump(remote, "dump.xml.gz", load_cassandra=False, say=quiet)


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


@pytest.fixture
def s3_server(monkeypatch):
    from moto.server import ThreadedMotoServer

    from tests.conftest import free_port

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    try:
        yield
    finally:
        server.stop()


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
    expected = {row["release_id"]: row for row in catalog_rows(local_catalog_dir(settings))}
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
