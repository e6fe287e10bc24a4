"""``discorecs ingest-dump``: dump -> Parquet catalog (a new published version) -> Cassandra.

The reader (this process) decompresses and cuts the dump into chunks; a pool of worker
processes parses them and writes one Parquet part each into the new version's folder (on a
remote data root, a local folder uploaded whole afterwards). Only when every chunk is in,
duplicates are resolved and the manifest written does the catalog's pointer move to the new
version (:mod:`discorecs.storage`): an ingest that fails or is interrupted leaves the previous
catalog (or none) in place, never a half-written one.
"""

from __future__ import annotations

import json
import os
import time
from collections import Counter, deque
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from discorecs import paths, storage, tables
from discorecs.catalog.chunks import Chunk, DumpReader
from discorecs.catalog.fetch import obtain_dump
from discorecs.catalog.parse import parse_chunk
from discorecs.catalog.schema import RELEASE_COLUMNS, keep_last_duplicates
from discorecs.genres import GENRE_INDEX
from discorecs.progress import Progress, human_bytes, say_to_stderr
from discorecs.settings import Settings
from discorecs.storage import Location

REJECTS = "_rejects.jsonl"


@dataclass
class ChunkResult:
    index: int
    offset: int
    xml_bytes: int
    releases: int
    release_ids: bytes  # int64 array, in row order
    rejects: list[dict[str, Any]]
    repaired: list[dict[str, Any]]
    duplicates_in_chunk: int
    genre_counts: Counter[str]
    part: str


@dataclass
class IngestReport:
    source: str
    catalog: str
    releases: int = 0
    rejected: int = 0
    repaired: int = 0
    duplicates: int = 0
    xml_bytes: int = 0
    compressed_bytes: int = 0
    seconds: float = 0.0
    parts: int = 0
    sha256: str | None = None
    genre_counts: dict[str, int] = field(default_factory=dict)
    unknown_genres: dict[str, int] = field(default_factory=dict)
    cassandra_rows: int = 0

    @property
    def mb_per_second(self) -> float:
        return self.xml_bytes / 1e6 / self.seconds if self.seconds else 0.0


def current_catalog(settings: Settings) -> Location:
    """Where the published catalog's files are (:class:`StorageError` if there is none)."""
    return storage.require_current(settings, paths.CATALOG_RELEASES, *_NO_CATALOG).location


_NO_CATALOG = (
    "catalog",
    "run `discorecs ingest-dump SOURCE` (or `discorecs generate-dump` first for a generated dump)",
)


def ingest_dump(
    settings: Settings,
    source: str,
    *,
    checksum: str | None = None,
    workers: int | None = None,
    load_cassandra: bool = True,
    say: Callable[[str], None] = say_to_stderr,
) -> IngestReport:
    """Fetch, verify, parse and publish the dump at ``source`` as a new version of the
    catalog (:mod:`discorecs.storage`); then load Cassandra."""
    dump = obtain_dump(source, settings.home / "downloads", checksum, say)
    with storage.publishing(settings, paths.CATALOG_RELEASES) as folder:
        report = build_catalog(
            dump.path, folder, workers=workers, say=say, source=source, sha256=dump.sha256
        )
    catalog = current_catalog(settings)
    report.catalog = catalog.uri
    say(f"catalog: published at {catalog.uri}")
    if load_cassandra:
        report.cassandra_rows = load_releases_into_cassandra(settings, catalog, say=say)
    return report


def build_catalog(
    dump: Path,
    catalog: Path,
    *,
    workers: int | None = None,
    chunk_bytes: int = 8 << 20,
    say: Callable[[str], None] = say_to_stderr,
    source: str | None = None,
    sha256: str | None = None,
) -> IngestReport:
    """Parse ``dump`` into Parquet parts and a manifest in the local folder ``catalog``
    (created; :func:`ingest_dump` hands it a new version to publish)."""
    workers = workers or max(1, min(os.cpu_count() or 1, 8))
    report = IngestReport(source=source or str(dump), catalog=str(catalog), sha256=sha256)
    started = time.monotonic()
    catalog.mkdir(parents=True, exist_ok=True)
    _parse_into(dump, catalog, report, workers, chunk_bytes, say)
    report.seconds = time.monotonic() - started
    _write_manifest(catalog, report)
    (catalog / storage.SUCCESS).write_text("")  # complete: readable in place too
    say(
        f"catalog: {report.releases:,} releases written ({report.rejected:,} rejected, "
        f"{report.repaired:,} repaired, {report.duplicates:,} duplicate ids) at "
        f"{report.mb_per_second:.0f} MB/s of XML"
    )
    return report


def _parse_into(
    dump: Path,
    staging: Path,
    report: IngestReport,
    workers: int,
    chunk_bytes: int,
    say: Callable[[str], None],
) -> None:
    reader = DumpReader(dump, chunk_bytes)
    report.compressed_bytes = reader.total_compressed
    progress = Progress(f"parsing {dump.name}", reader.total_compressed, say)
    owner = _ReleaseOwners()
    superseded: dict[int, list[int]] = {}
    genre_counts: Counter[str] = Counter()
    parts: dict[int, str] = {}
    max_in_flight = workers * 2
    # spawn: the workers need none of this process's state, and forking a process that may
    # hold driver threads is unsafe.
    with (
        ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool,
        (staging / REJECTS).open("w") as rejects,
    ):
        pending: deque[Future[ChunkResult]] = deque()

        def collect(result: ChunkResult) -> None:
            report.releases += result.releases
            report.xml_bytes += result.xml_bytes
            report.rejected += len(result.rejects)
            report.repaired += len(result.repaired)
            report.duplicates += result.duplicates_in_chunk
            genre_counts.update(result.genre_counts)
            parts[result.index] = result.part
            for reject in result.rejects:
                rejects.write(json.dumps({"file": str(dump), **reject}) + "\n")
            for earlier_chunk, release_id in owner.claim(result.index, result.release_ids):
                superseded.setdefault(earlier_chunk, []).append(release_id)
            progress.update(reader.compressed_read, _parse_rate(report, progress))

        for chunk in reader.chunks():
            pending.append(pool.submit(parse_and_write_chunk, chunk, str(staging)))
            while len(pending) >= max_in_flight:
                collect(pending.popleft().result())
        while pending:
            collect(pending.popleft().result())
    for chunk_index, release_ids in superseded.items():
        removed = _drop_rows(Path(parts[chunk_index]), release_ids)
        report.releases -= removed
        report.duplicates += removed
    report.parts = len(parts)
    report.genre_counts = dict(genre_counts.most_common())
    report.unknown_genres = {g: n for g, n in genre_counts.items() if g not in GENRE_INDEX}
    progress.finish(reader.compressed_read, _parse_rate(report, progress))


def _parse_rate(report: IngestReport, progress: Progress) -> str:
    seconds = max(time.monotonic() - progress.started, 1e-9)
    return f"{report.releases:,} releases, {report.xml_bytes / 1e6 / seconds:.0f} MB/s of XML"


def parse_and_write_chunk(chunk: Chunk, staging: str) -> ChunkResult:
    """Worker: parse one chunk and write it as one Parquet part (runs in a pool process)."""
    parsed = parse_chunk(chunk.data, chunk.offset)
    table, duplicates = keep_last_duplicates(parsed.table)
    part = Path(staging) / f"part-{chunk.index:06d}.parquet"
    pq.write_table(table, part, compression="snappy")
    ids = table["release_id"].to_numpy().astype(np.int64)
    return ChunkResult(
        index=chunk.index,
        offset=chunk.offset,
        xml_bytes=len(chunk.data),
        releases=len(ids),
        release_ids=ids.tobytes(),
        rejects=[reject.as_dict() for reject in parsed.rejects],
        repaired=parsed.repaired,
        duplicates_in_chunk=duplicates,
        genre_counts=parsed.genre_counts(),
        part=str(part),
    )


class _ReleaseOwners:
    """Which chunk holds each release id so far (4 bytes per id up to the largest id seen), so a
    repeated id across chunks is found without holding the catalog in memory."""

    def __init__(self) -> None:
        self.owner = np.zeros(1 << 20, dtype=np.int32)

    def claim(self, chunk_index: int, release_ids: bytes) -> list[tuple[int, int]]:
        """Record ``release_ids`` as living in ``chunk_index``; returns (earlier chunk, id) for
        every id an earlier chunk already held (the later occurrence wins)."""
        ids = np.frombuffer(release_ids, dtype=np.int64)
        if not len(ids):
            return []
        largest = int(ids.max())
        if largest >= len(self.owner):
            grown = np.zeros(max(largest + 1, 2 * len(self.owner)), dtype=np.int32)
            grown[: len(self.owner)] = self.owner
            self.owner = grown
        previous = self.owner[ids]
        repeated = np.nonzero(previous)[0]
        self.owner[ids] = chunk_index + 1
        return [(int(previous[i]) - 1, int(ids[i])) for i in repeated]


def _drop_rows(part: Path, release_ids: list[int]) -> int:
    table = pq.read_table(part)
    keep = pc.invert(pc.is_in(table["release_id"], value_set=pa.array(release_ids, pa.int64())))
    kept = table.filter(keep)
    pq.write_table(kept, part, compression="snappy")
    return table.num_rows - kept.num_rows


def _write_manifest(folder: Path, report: IngestReport) -> None:
    manifest = {**asdict(report), "published_at": datetime.now(UTC).isoformat()}
    (folder / storage.MANIFEST).write_text(json.dumps(manifest, indent=2))


def read_manifest(catalog: Location | Path) -> dict[str, Any]:
    """The manifest of a catalog (a published version, or a folder :func:`build_catalog`
    wrote); :class:`StorageError` if there is none."""
    return storage.read_manifest(catalog, *_NO_CATALOG)


def load_releases_into_cassandra(
    settings: Settings, catalog: Location | Path, *, say: Callable[[str], None] = say_to_stderr
) -> int:
    """Upsert every release of the catalog into the ``releases`` table."""
    from discorecs.cassandra import connect
    from discorecs.statements import upsert_batched

    catalog = storage.location(catalog)
    total = read_manifest(catalog)["releases"]
    progress = Progress("loading releases into Cassandra", total, say, unit="rows")
    written = 0
    with connect(settings, keyspace=settings.cassandra_keyspace) as connection:
        for part in catalog.parquet_files():
            for batch in catalog.parquet_file(part).iter_batches(
                batch_size=5000, columns=RELEASE_COLUMNS
            ):
                rows = zip(
                    *(batch.column(name).to_pylist() for name in RELEASE_COLUMNS), strict=True
                )
                written += upsert_batched(
                    connection,
                    tables.RELEASES,
                    RELEASE_COLUMNS,
                    rows,
                    batch_rows=settings.cassandra_batch_rows,
                )
                progress.update(written)
    progress.finish(written)
    return written


def report_lines(report: IngestReport) -> list[str]:
    lines = [
        f"source:      {report.source}"
        + (f" (sha256 verified {report.sha256[:12]}…)" if report.sha256 else " (not verified)"),
        f"catalog:     {report.catalog} ({report.parts} parts)",
        f"releases:    {report.releases:,}",
        f"rejected:    {report.rejected:,} (see {Path(report.catalog) / REJECTS})",
        f"repaired:    {report.repaired:,}",
        f"duplicates:  {report.duplicates:,} (the later occurrence kept)",
        f"XML:         {human_bytes(report.xml_bytes)} in {report.seconds:.1f}s "
        f"({report.mb_per_second:.0f} MB/s)",
    ]
    if report.unknown_genres:
        lines.append(f"unknown genres: {report.unknown_genres}")
    if report.cassandra_rows:
        lines.append(f"cassandra:   {report.cassandra_rows:,} rows upserted into releases")
    return lines
