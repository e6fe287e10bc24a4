"""``discorecs generate-users``: catalog -> users, preferences, collections, wantlists.

Read the published catalog, generate users in batches (bounded memory: one batch of users and
their records at a time), write each batch as one Parquet part per dataset into a staging
folder, publish it as a new version of ``<data_root>/users/`` (:mod:`discorecs.storage`),
then load Cassandra.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq

from discorecs import paths, storage, tables
from discorecs.catalog.ingest import current_catalog
from discorecs.errors import DiscorecsError
from discorecs.progress import Progress, say_to_stderr
from discorecs.settings import Settings
from discorecs.storage import Location
from discorecs.tables import name_prefix
from discorecs.users import TASTE_MODELS
from discorecs.users.generate import NamePools, generate_population
from discorecs.users.sampling_catalog import build_sampling_catalog, read_sampling_catalog
from discorecs.users.scenes import SCENE_COLUMNS, build_scene_index

DATASETS = (
    paths.USER_PROFILES,
    paths.USER_PREFERENCES,
    paths.INITIAL_COLLECTIONS,
    paths.INITIAL_WANTLISTS,
)


@dataclass
class PopulationReport:
    users: int = 0
    taste_model: str = "genres"
    collection_items: int = 0
    wantlist_items: int = 0
    seed: int = 0
    seconds: float = 0.0
    collection_size: dict[str, float] = field(default_factory=dict)
    folder: str = ""
    cassandra_rows: dict[str, int] = field(default_factory=dict)

    @property
    def users_per_second(self) -> float:
        return self.users / self.seconds if self.seconds else 0.0


_NO_USERS = ("generated users", "run `discorecs generate-users` first")


def current_users(settings: Settings) -> Location:
    """Where the published users' files are (:class:`StorageError` if there are none)."""
    return storage.require_current(settings, paths.USERS, *_NO_USERS).location


def generate_users(
    settings: Settings,
    count: int,
    *,
    seed: int = 0,
    batch_size: int = 50_000,
    taste_model: str = "genres",
    load_cassandra: bool = True,
    say: Callable[[str], None] = say_to_stderr,
) -> PopulationReport:
    if count <= 0:
        raise DiscorecsError(f"--users must be at least 1, got {count}")
    catalog = current_catalog(settings)
    with storage.publishing(settings, paths.USERS) as folder:
        report = write_population(
            catalog,
            folder,
            count,
            seed=seed,
            batch_size=batch_size,
            taste_model=taste_model,
            say=say,
        )
    users = current_users(settings)
    report.folder = users.uri
    if load_cassandra:
        report.cassandra_rows = load_population_into_cassandra(settings, users, say=say)
    return report


def write_population(
    catalog: Location | Path,
    folder: Path,
    count: int,
    *,
    seed: int = 0,
    batch_size: int = 50_000,
    taste_model: str = "genres",
    say: Callable[[str], None] = say_to_stderr,
) -> PopulationReport:
    """Generate ``count`` users from ``catalog`` into the local folder ``folder`` (created;
    :func:`generate_users` hands it a new version to publish) by ``taste_model`` (one of
    :data:`TASTE_MODELS`). Pure of any service: Parquet only."""
    started = time.monotonic()
    if taste_model not in TASTE_MODELS:
        raise DiscorecsError(
            f"unknown taste model {taste_model!r}; choose one of {', '.join(TASTE_MODELS)}"
        )
    scenes = None
    if taste_model == "scenes":
        table = (
            storage.location(catalog)
            .dataset()
            .to_table(columns=["genres", "styles", *SCENE_COLUMNS])
        )
        index = build_sampling_catalog(table, seed)
        scenes = build_scene_index(table, index)
    else:
        index = read_sampling_catalog(catalog, seed)
    pools = NamePools.build(seed)
    report = PopulationReport(seed=seed, taste_model=taste_model, folder=str(folder))
    progress = Progress("generating users", count, say, unit="users")
    sizes: list[np.ndarray] = []
    folder = Path(folder)
    for name in DATASETS:
        (folder / name).mkdir(parents=True)
    for part, first in enumerate(range(1, count + 1, batch_size)):
        # One generator per batch, seeded by (seed, batch): any batch can be regenerated
        # alone, and the result does not depend on the order batches run in.
        rng = np.random.default_rng([seed, part])
        population = generate_population(
            index, pools, first, min(batch_size, count + 1 - first), rng, scenes
        )
        for name in DATASETS:
            pq.write_table(
                getattr(population, name),
                folder / name / f"part-{part:05d}.parquet",
                compression="snappy",
            )
        report.users += population.users.num_rows
        report.collection_items += population.collections.num_rows
        report.wantlist_items += population.wantlists.num_rows
        sizes.append(pc.value_counts(population.collections["user_id"]).field("counts").to_numpy())
        progress.update(report.users, f"{report.collection_items:,} records")
    report.seconds = time.monotonic() - started
    all_sizes = np.concatenate(sizes)
    report.collection_size = {
        "median": float(np.median(all_sizes)),
        "mean": float(all_sizes.mean()),
        "p90": float(np.percentile(all_sizes, 90)),
        "p99": float(np.percentile(all_sizes, 99)),
        "max": int(all_sizes.max()),
    }
    (folder / storage.MANIFEST).write_text(json.dumps(asdict(report), indent=2))
    (folder / storage.SUCCESS).write_text("")  # complete: readable in place too
    progress.finish(report.users, f"{report.collection_items:,} records")
    return report


def load_population_into_cassandra(
    settings: Settings, folder: Location | Path, *, say: Callable[[str], None] = say_to_stderr
) -> dict[str, int]:
    """Upsert users (and the name-prefix index), collections and wantlists."""
    from discorecs.cassandra import connect
    from discorecs.statements import upsert_batched

    folder = storage.location(folder)
    read_population_manifest(folder)  # a complete population, or a clear error
    written = {}
    with connect(settings, keyspace=settings.cassandra_keyspace) as connection:
        for dataset, table in (
            (paths.USER_PROFILES, tables.USERS),
            (paths.INITIAL_COLLECTIONS, tables.COLLECTIONS),
            (paths.INITIAL_WANTLISTS, tables.WANTLISTS),
        ):
            parts = [folder.parquet_file(path) for path in folder.parquet_files(dataset)]
            total = sum(part.metadata.num_rows for part in parts)
            progress = Progress(f"loading {table} into Cassandra", total, say, unit="rows")
            count = 0
            for part in parts:
                for batch in part.iter_batches(batch_size=20_000):
                    rows = batch.to_pydict()
                    columns = tuple(rows)
                    # Holdings are written as of when they were added, so any later event
                    # the stream applies wins over them (see streaming.job).
                    count += upsert_batched(
                        connection,
                        table,
                        columns,
                        zip(*rows.values(), strict=True),
                        batch_rows=settings.cassandra_batch_rows,
                        write_time_column=None if table == tables.USERS else "added_at",
                    )
                    if table == tables.USERS:
                        upsert_batched(
                            connection,
                            tables.USERS_BY_NAME,
                            ("name_prefix", "name_lower", "user_id", "name"),
                            _name_index_rows(rows["user_id"], rows["name"]),
                            batch_rows=settings.cassandra_batch_rows,
                        )
                    progress.update(count)
            progress.finish(count)
            written[table] = count
    return written


def _name_index_rows(user_ids: list[int], names: list[str]):
    for user_id, name in zip(user_ids, names, strict=True):
        yield name_prefix(name), name.strip().lower(), user_id, name


def read_population_manifest(folder: Location | Path) -> dict:
    """The manifest of generated users (a published version, or a folder
    :func:`write_population` wrote); :class:`StorageError` if there is none."""
    return storage.read_manifest(folder, *_NO_USERS)
