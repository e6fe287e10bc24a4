"""The benchmarks' own arithmetic (pure; the benchmarks themselves are run with `make bench`)."""

from collections import namedtuple
from datetime import datetime, timedelta

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
