"""The benchmarks' own arithmetic (pure; the benchmarks themselves are run with `make bench`)."""

from collections import namedtuple
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from bench.stream import sustained_rate

Batch = namedtuple("Batch", "input_rows processed_at")
T0 = datetime(2026, 11, 25, 12, 0)


def test_the_sustained_rate_runs_from_the_first_batch_end_to_the_last():
    ends = [
        Batch(300, T0 + timedelta(seconds=40)),
        Batch(100, T0),
        Batch(200, T0 + timedelta(seconds=10)),
    ]
    sustained, completed = sustained_rate(ends, window_seconds=60)
    # 200 + 300 events became durable in the 40 s after the first batch ended.
    assert sustained == pytest.approx(12.5)
    assert completed == pytest.approx(10.0)


def test_one_batch_in_the_window_falls_back_to_the_window_rate():
    assert sustained_rate([Batch(600, T0)], window_seconds=60) == (10.0, 10.0)
    assert sustained_rate([], window_seconds=60) == (0.0, 0.0)


def test_latency_runs_from_event_time_to_the_end_of_the_batch_that_applied_it(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from bench.stream import latencies_ms
    from discorecs import paths
    from discorecs.settings import load_settings

    settings = load_settings({"DISCORECS_DATA_ROOT": str(tmp_path)})
    log = paths.event_log(settings.data_root)
    seconds = {3: [1.0, 2.5, 9.0], 4: [6.0]}  # event times per batch, seconds after T0
    for batch, offsets in seconds.items():
        folder = Path(log) / "ingest_date=2026-11-25" / f"batch={batch}"
        folder.mkdir(parents=True)
        times = [(T0 + timedelta(seconds=s)).replace(tzinfo=UTC) for s in offsets]
        pq.write_table(
            pa.table({"event_time": pa.array(times, pa.timestamp("us", tz="UTC"))}),
            folder / "part-0.parquet",
        )
    Progress = namedtuple("Progress", "batch_id processed_at")
    batches = [Progress(4, T0 + timedelta(seconds=8)), Progress(3, T0 + timedelta(seconds=4))]
    since, until = T0 + timedelta(seconds=2), T0 + timedelta(seconds=7)  # naive: UTC
    found = latencies_ms(settings, batches, since, until)
    # Events at 2.5 s (batch 3, done at 4 s) and 6 s (batch 4, done at 8 s) are in the window.
    assert sorted(found.tolist()) == [1500.0, 2000.0]
