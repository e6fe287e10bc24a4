"""Benchmark: loading the serving tables from the master dataset: the catalog's releases
(``ingest-dump`` with Cassandra on) and the generated users, collections and wantlists
(``generate-users``), into a Cassandra node started for the benchmark on the same 2 cores.

Generates a catalog of ``--releases`` releases and ``--users`` users once per run (not
timed), then times each load and reports rows/s per table group. Both loads send unlogged
batches of ``cassandra_batch_rows`` rows (see ``discorecs.statements.upsert_batched``).

    .venv/bin/python -m bench.cassandra_load [--releases 200000] [--users 100000]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

from bench.common import free_port, write_results
from discorecs import paths
from discorecs.catalog.generate import write_dump
from discorecs.catalog.ingest import build_catalog, load_releases_into_cassandra
from discorecs.schema import apply_schema
from discorecs.services.cassandra_node import CassandraNode
from discorecs.settings import load_settings
from discorecs.users.population import load_population_into_cassandra, write_population

CACHE = Path("~/.cache/discorecs/bench").expanduser()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--releases", type=int, default=200_000)
    parser.add_argument("--users", type=int, default=100_000)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="discorecs-bench-load-"))
    settings = load_settings(
        {
            "DISCORECS_HOME": str(work / "home"),
            "DISCORECS_DATA_ROOT": str(work / "data"),
            "DISCORECS_CASSANDRA_PORT": str(free_port()),
            "DISCORECS_CASSANDRA_STORAGE_PORT": str(free_port()),
            "DISCORECS_CASSANDRA_MAX_HEAP": "1G",
        }
    )
    node = CassandraNode(settings)
    try:
        dump = CACHE / f"bench_catalog_{args.releases}.xml.gz"
        if not dump.exists():
            write_dump(dump, args.releases, seed=7)
        root = Path(settings.data_root)
        catalog = root / paths.CATALOG_RELEASES
        build_catalog(dump, catalog, say=lambda m: None)
        write_population(catalog, root / paths.USERS, args.users, seed=1, say=lambda m: None)
        node.start()
        apply_schema(settings)

        started = time.monotonic()
        releases = load_releases_into_cassandra(settings, catalog, say=lambda m: None)
        release_seconds = time.monotonic() - started
        started = time.monotonic()
        population = load_population_into_cassandra(
            settings, root / paths.USERS, say=lambda m: None
        )
        population_seconds = time.monotonic() - started
        population_rows = sum(population.values())
        figures = {
            "batch_rows": settings.cassandra_batch_rows,
            "releases": {
                "rows": releases,
                "seconds": round(release_seconds, 1),
                "rows_per_second": round(releases / release_seconds),
            },
            "population": {
                "users": args.users,
                "rows": population,
                "seconds": round(population_seconds, 1),
                "rows_per_second": round(population_rows / population_seconds),
            },
        }
        print(
            f"releases:   {releases:,} rows in {release_seconds:.1f} s "
            f"({releases / release_seconds:,.0f} rows/s)\n"
            f"population: {population_rows:,} rows ({args.users:,} users) in "
            f"{population_seconds:.1f} s ({population_rows / population_seconds:,.0f} rows/s)"
        )
        headline = {
            "release_rows_per_second": figures["releases"]["rows_per_second"],
            "population_rows_per_second": figures["population"]["rows_per_second"],
        }
        print(f"written to {write_results('cassandra_load', figures, headline)}")
    finally:
        node.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
