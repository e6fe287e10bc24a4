"""A nightly run's record: its row in ``batch_runs`` (status, per-step counts, the error of a
failed run) and, once it succeeded, its id in ``published_runs``, the one run the site
serves. The batch's statements for both tables; the site reads them in
:mod:`webapp.repository`."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from discorecs import tables
from discorecs.cassandra import connect
from discorecs.settings import Settings

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

RECORD = (
    f"INSERT INTO {tables.BATCH_RUNS} (scope, started_at, run_id, finished_at, status, "
    "step_counts, message) VALUES (?, ?, ?, ?, ?, ?, ?)"
)
PUBLISH = f"INSERT INTO {tables.PUBLISHED_RUNS} (scope, run_id, published_at) VALUES (?, ?, ?)"
MESSAGE_LENGTH = 2000


@dataclass
class BatchReport:
    """A nightly run: what its record holds, and for the caller its step times and outputs."""

    run_id: str
    started_at: datetime
    status: str = "running"
    finished_at: datetime | None = None
    counts: dict[str, int] = field(default_factory=dict)
    step_seconds: dict[str, float] = field(default_factory=dict)
    message: str = ""
    # The step outputs, for callers in the same session (evaluation, tests); not persisted.
    results: dict[str, DataFrame] = field(default_factory=dict, repr=False)

    @property
    def seconds(self) -> float:
        end = self.finished_at or datetime.now(UTC)
        return (end - self.started_at).total_seconds()


def record_run(settings: Settings, run: BatchReport, publish: bool = False) -> None:
    """Write the run record (and, when ``publish``, point the site at this run)."""
    with connect(settings, keyspace=settings.cassandra_keyspace) as connection:
        connection.session.execute(
            connection.prepare(RECORD),
            (
                tables.BATCH_SCOPE,
                run.started_at,
                run.run_id,
                run.finished_at,
                run.status,
                run.counts,
                run.message[:MESSAGE_LENGTH],
            ),
        )
        if publish:
            connection.session.execute(
                connection.prepare(PUBLISH), (tables.BATCH_SCOPE, run.run_id, datetime.now(UTC))
            )
