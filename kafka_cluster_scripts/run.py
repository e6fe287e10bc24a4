"""The producers' edges: read the users and catalog, build a factory, send."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from discorecs import paths
from discorecs.catalog.ingest import current_catalog
from discorecs.progress import say_to_stderr
from discorecs.settings import Settings
from discorecs.storage import Location, location
from discorecs.users.generate import taste_from_preferences
from discorecs.users.population import current_users, read_population_manifest
from discorecs.users.sampling_catalog import SamplingCatalog, read_sampling_catalog
from kafka_cluster_scripts.event_factory import FACTORIES, UserSample
from kafka_cluster_scripts.producer import (
    ProducerError,
    ProducerSummary,
    close_quietly,
    make_producer,
    produce,
)


def load_user_sample(
    users: Location | Path, index: SamplingCatalog, active_users: int, seed: int
) -> UserSample:
    """``active_users`` users picked at random (seeded), with taste and holdings; checks that
    every release they hold is in the catalog before anything is sent."""
    users = location(users)
    read_population_manifest(users)  # a complete population, or a clear error
    all_ids = users.dataset(paths.USER_PREFERENCES).to_table(columns=["user_id"])["user_id"]
    if len(all_ids) == 0:
        raise ProducerError("the users dataset is empty; run `discorecs generate-users`")
    rng = np.random.default_rng(seed)
    chosen = np.sort(rng.choice(all_ids.to_numpy(), min(active_users, len(all_ids)), replace=False))
    wanted = pc.field("user_id").isin(pa.array(chosen))
    preferences = users.dataset(paths.USER_PREFERENCES).to_table(filter=wanted).sort_by("user_id")
    genres, mixture, styles = taste_from_preferences(index, preferences)
    row_of = {int(user): row for row, user in enumerate(preferences["user_id"].to_pylist())}
    holdings = []
    for dataset in (paths.INITIAL_COLLECTIONS, paths.INITIAL_WANTLISTS):
        table = users.dataset(dataset).to_table(columns=["user_id", "release_id"], filter=wanted)
        releases = table["release_id"].to_numpy()
        unknown = releases[~np.isin(releases, index.release_ids)]
        if len(unknown):
            raise ProducerError(
                f"{len(unknown):,} releases in the users' {dataset} are not in the catalog "
                f"(e.g. release {int(unknown[0])}): the catalog changed after the users were "
                "generated; run `discorecs generate-users` again"
            )
        sets: list[set[int]] = [set() for _ in row_of]
        for user, release in zip(table["user_id"].to_pylist(), releases.tolist(), strict=True):
            sets[row_of[user]].add(release)
        holdings.append(sets)
    return UserSample(
        np.array(sorted(row_of), dtype=np.int64), genres, mixture, styles, holdings[0], holdings[1]
    )


def run_producer(
    kind: str,
    settings: Settings,
    *,
    rate: float,
    count: int | None = None,
    duration: float | None = None,
    seed: int = 0,
    active_users: int = 50_000,
    say: Callable[[str], None] = say_to_stderr,
    **producer_options: object,
) -> ProducerSummary:
    if kind not in FACTORIES:
        raise ProducerError(f"unknown producer {kind!r}; choose one of {', '.join(FACTORIES)}")
    if active_users <= 0:
        raise ProducerError(f"--active-users must be positive, got {active_users}")
    if rate <= 0:
        raise ProducerError(f"--rate must be positive, got {rate}")
    index = read_sampling_catalog(current_catalog(settings), seed=0)
    sample = load_user_sample(current_users(settings), index, active_users, seed)
    factory = FACTORIES[kind](index, sample, seed)
    producer = make_producer(settings, say=say, **producer_options)
    try:
        return produce(
            f"{kind} producer",
            factory,
            producer,
            rate=rate,
            count=count,
            duration=duration,
            say=say,
        )
    finally:
        close_quietly(producer)
