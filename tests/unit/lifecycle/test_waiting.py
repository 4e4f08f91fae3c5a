"""The error budget of one wait, as a table: which answers, in order, end the wait with an error."""

from __future__ import annotations

import pytest

from airflow_provider_openai_batch.lifecycle.waiting import Looks, WaitTracker
from airflow_provider_openai_batch.statuses import EventStatus

OK = ("b", "in_progress", {})
ERR = ConnectionError("refused")


@pytest.mark.parametrize(
    "answers, errors, ends_in_error",
    [
        ([(ERR, None)] * 2, 2, False),
        ([(ERR, None)] * 3, 3, True),
        ([(ERR, None), (ERR, None), (OK, None), (ERR, None)], 1, False),
        # one answer standing for several looks (the board polled while the trigger was busy)
        ([(ERR, Looks(succeeded=False, failed=3))], 3, True),
        ([(ERR, None), (ERR, Looks(succeeded=True, failed=1))], 1, False),  # a success among the looks
        ([(ERR, None), (ERR, None), (ERR, Looks(succeeded=True, failed=2))], 2, False),
        ([(ERR, None), (ERR, Looks(succeeded=False, failed=1))], 2, False),
        ([(OK, Looks(succeeded=True, failed=0)), (ERR, Looks(succeeded=False, failed=2))], 2, False),
    ],
)
def test_consecutive_failed_looks_exhaust_the_budget(answers, errors, ends_in_error):
    tracker = WaitTracker(["b"], max_consecutive_errors=3)
    for result, looks in answers:
        tracker.record("b", result, looks)
    assert tracker.errors["b"] == errors
    outcome = tracker.outcome()
    assert (outcome is not None and outcome[0] == EventStatus.ERROR) == ends_in_error
