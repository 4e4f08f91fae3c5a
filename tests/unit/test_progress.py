"""The progress line: counts, percentage, rate and ETA, as a table of inputs and the exact line."""

from __future__ import annotations

import pytest

from airflow_provider_openai_batch.progress import RateMeter, percent, progress_line


@pytest.mark.parametrize(
    ("status", "counts", "rate", "line"),
    [
        (
            "in_progress",
            {"total": 50000, "completed": 11900, "failed": 100},
            2100.4,
            "Batch b in_progress: 12,000/50,000 requests, 24%, 100 failed, ~2,100/min, ETA 18 min",
        ),
        (
            "in_progress",
            {"total": 50000, "completed": 12000, "failed": 0},
            None,
            "Batch b in_progress: 12,000/50,000 requests, 24%",
        ),
        (
            "validating",
            {"total": 0, "completed": 0, "failed": 0},
            None,
            "Batch b validating: no request counts yet",
        ),
        (None, {}, None, "Batch b None: no request counts yet"),
        (
            "in_progress",
            {"total": 1000, "completed": 999},
            5000.0,
            "Batch b in_progress: 999/1,000 requests, 99%, ~5,000/min, ETA <1 min",
        ),
        (
            "in_progress",
            {"total": 100000, "completed": 1000},
            100.0,
            "Batch b in_progress: 1,000/100,000 requests, 1%, ~100/min, ETA 16.5 h",
        ),
        # Finished: no rate or ETA, whatever the meter says.
        (
            "completed",
            {"total": 10, "completed": 8, "failed": 2},
            50.0,
            "Batch b completed: 10/10 requests, 100%, 2 failed",
        ),
    ],
)
def test_progress_line(status, counts, rate, line):
    assert progress_line("b", status, counts, rate) == line


@pytest.mark.parametrize(
    ("done", "total", "expected"),
    [(0, 0, 0), (0, 10, 0), (1, 3, 33), (999, 1000, 99), (9999, 10000, 99), (10, 10, 100), (12, 10, 100)],
)
def test_percent_reaches_100_only_when_done(done, total, expected):
    assert percent(done, total) == expected


def test_rate_is_measured_from_the_first_sample_of_each_batch():
    meter = RateMeter()
    assert meter.observe("a", {"total": 100, "completed": 10}, now=1000.0) is None  # one sample: no rate
    assert meter.observe("a", {"total": 100, "completed": 10}, now=1030.0) is None  # no progress yet
    assert meter.observe("a", {"total": 100, "completed": 30, "failed": 10}, now=1060.0) == pytest.approx(
        30.0
    )
    assert meter.observe("b", {"total": 5, "completed": 5}, now=1060.0) is None  # its own first sample
