"""Benchmark: Discogs releases dump (gzip) -> published Parquet catalog, end to end.

Generates a dump of at least 1 GB of XML once (kept in the bench cache), ingests it several
times as ``discorecs ingest-dump`` does (parse, then publish a new version and its pointer),
and reports releases/s, MB/s of uncompressed XML over the whole ingest, peak RSS of the whole
process tree, and the projected time for the full ~70 GB dump. Target: >= 100 MB/s to a
local data root, peak RSS < 1 GB. ``--data-root s3`` publishes to a bucket of a local S3
server (moto's, in this process) instead: the parse, then the upload.

    .venv/bin/python -m bench.catalog_ingest [--releases 450000] [--runs 3] [--workers N]
        [--data-root local|s3]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from bench.common import PeakMemory, free_port, summary, write_results
from discorecs.catalog.generate import write_dump
from discorecs.catalog.ingest import ingest_dump
from discorecs.settings import Settings, load_settings

FULL_DUMP_XML_BYTES = 70e9
FULL_DUMP_RELEASES = 18e6
CACHE = Path("~/.cache/discorecs/bench").expanduser()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--releases", type=int, default=450_000, help="~2.4 KB of XML each")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--data-root", choices=("local", "s3"), default="local")
    args = parser.parse_args()

    dump = CACHE / f"bench_{args.releases}_{args.seed}_releases.xml.gz"
    if not dump.exists():
        print(f"generating {dump} ({args.releases:,} releases) ...", flush=True)
        started = time.monotonic()
        generated = write_dump(dump, args.releases, seed=args.seed)
        print(f"  {generated.xml_bytes / 1e9:.2f} GB of XML in {time.monotonic() - started:.0f} s")

    rates, release_rates, seconds, peaks = [], [], [], []
    report = None
    for run in range(1, args.runs + 1):
        with tempfile.TemporaryDirectory(prefix="discorecs-bench-") as tmp:
            settings = load_settings({"DISCORECS_HOME": str(Path(tmp) / "home")})
            with data_root(args.data_root, settings, Path(tmp), run) as settings:
                started = time.monotonic()
                with PeakMemory() as memory:
                    report = ingest_dump(
                        settings,
                        str(dump),
                        workers=args.workers,
                        load_cassandra=False,
                        say=lambda m: None,
                    )
                report.seconds = time.monotonic() - started  # parse, publish and upload
        rates.append(report.mb_per_second)
        release_rates.append(report.releases / report.seconds)
        seconds.append(report.seconds)
        peaks.append(memory.peak / 1e6)
        print(
            f"run {run}: {report.releases:,} releases, {report.xml_bytes / 1e9:.2f} GB XML in "
            f"{report.seconds:.1f} s = {report.mb_per_second:.0f} MB/s, "
            f"{report.releases / report.seconds:,.0f} releases/s, "
            f"peak RSS {memory.peak / 1e6:.0f} MB, published to {report.catalog}",
            flush=True,
        )
    assert report is not None
    mb_s = summary(rates)
    figures = {
        "dump": {
            "path": str(dump),
            "releases": report.releases,
            "xml_bytes": report.xml_bytes,
            "gzip_bytes": report.compressed_bytes,
        },
        "xml_mb_per_second": mb_s,
        "releases_per_second": summary(release_rates),
        "seconds": summary(seconds),
        "peak_rss_mb": summary(peaks),
        "projection_full_dump": {
            "xml_bytes": FULL_DUMP_XML_BYTES,
            "minutes_at_median": FULL_DUMP_XML_BYTES / 1e6 / mb_s["median"] / 60,
            "minutes_range": [
                FULL_DUMP_XML_BYTES / 1e6 / mb_s["max"] / 60,
                FULL_DUMP_XML_BYTES / 1e6 / mb_s["min"] / 60,
            ],
        },
        "targets": {"xml_mb_per_second": 100, "peak_rss_mb": 1000},
    }
    name = "catalog_ingest" if args.data_root == "local" else "catalog_ingest_s3"
    figures["data_root"] = args.data_root
    path = write_results(name, figures)
    projection = figures["projection_full_dump"]
    print(
        f"\nXML throughput: median {mb_s['median']:.0f} MB/s (range {mb_s['min']:.0f}-"
        f"{mb_s['max']:.0f}) over {mb_s['runs']} runs; target >= 100\n"
        f"releases/s:     median {figures['releases_per_second']['median']:,.0f}\n"
        f"peak RSS:       max {max(peaks):.0f} MB (process tree); target < 1000\n"
        f"full 70 GB dump: ~{projection['minutes_at_median']:.0f} min "
        f"(range {projection['minutes_range'][0]:.0f}-{projection['minutes_range'][1]:.0f})\n"
        f"written to {path}"
    )


@contextmanager
def data_root(kind: str, settings: Settings, tmp: Path, run: int) -> Iterator[Settings]:
    """``settings`` with a local data root under ``tmp``, or one in a bucket of a local S3
    server started for the run (moto's: the upload goes through loopback to its memory)."""
    if kind == "local":
        yield settings.replace(data_root=str(tmp / "data"))
        return
    import boto3
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    keys = {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench"}
    saved = {name: os.environ.get(name) for name in keys}
    os.environ.update(keys)
    try:
        boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1").create_bucket(
            Bucket=f"bench-{run}"
        )
        yield settings.replace(data_root=f"s3a://bench-{run}/data", s3_endpoint=endpoint)
    finally:
        server.stop()
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


if __name__ == "__main__":
    main()
