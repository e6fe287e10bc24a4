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


def test_a_fault_reports_the_rate_around_it_and_when_the_offered_rate_was_back():
    from bench.faults import fault_figures

    start = T0.replace(tzinfo=UTC)
    # 100 events/s offered, one batch a second; nothing applied for 15 s after the kill, then
    # a catch-up batch of what was missed, and the offered rate again.
    rows = [Batch(100, start + timedelta(seconds=s)) for s in range(1, 41)]
    killed, restarted = start + timedelta(seconds=40), start + timedelta(seconds=60)
    rows += [Batch(1500, start + timedelta(seconds=56))]
    rows += [Batch(100, start + timedelta(seconds=s)) for s in range(57, 120)]
    figures = fault_figures(rows, start, killed, restarted, offered=100.0)
    assert figures["applied_per_second_30_s_before"] == pytest.approx(100.0)
    # The batch that ended as the node was killed, the catch-up batch, three more.
    assert figures["applied_per_second_while_down"] == pytest.approx((100 + 1500 + 300) / 20)
    assert figures["applied_per_second_30_s_after_restart"] == pytest.approx(100.0)
    # The first whole 10 s window after the kill at >= 90 % of the offered rate is the one
    # holding the catch-up batch: [47 s, 57 s).
    assert figures["back_to_offered_rate_after_seconds"] == 17
    assert figures["back_to_offered_rate_after_restart_seconds"] == 10
