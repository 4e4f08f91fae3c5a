"""outcomes.py as tables: the exception for each outcome and failure reason, and what a trigger event must hold.

What a user reads when a try ends: the class decides whether Airflow retries (an ``AirflowFailException`` does
not), the message names the batches, where the results landed and what a retry or clear does.
"""

from __future__ import annotations

import pytest

from airflow_provider_openai_batch import exceptions as exc
from airflow_provider_openai_batch.lifecycle import outcomes
from airflow_provider_openai_batch.lifecycle.plan import Fail, FailReason, Outcome
from airflow_provider_openai_batch.statuses import EventStatus
from airflow_provider_openai_batch.version_compat import AirflowFailException
from tests.support.builders import batch


def result(*, error_lines=1, error_path="out/errors.jsonl", total=4) -> dict:
    return {
        "batch_ids": ["b0"],
        "output_path": "out/output.jsonl",
        "error_path": error_path,
        "output_paths": ["out/output.jsonl"],
        "error_paths": [error_path] if error_path else [],
        "output_lines": total - error_lines,
        "error_lines": error_lines,
        "request_counts": {"total": total, "completed": total - error_lines, "failed": error_lines},
    }


FAILED_BATCH = batch(
    "b0",
    "failed",
    counts=(0, 0, 0),
    errors={"data": [{"line": 4, "code": "too_many_tasks", "message": "Too many.", "param": None}]},
)

TERMINAL = [
    # (outcome, last round, exception class, retried by Airflow, what the message says)
    (
        Outcome.TIMEOUT,
        [batch("b0", "cancelled")],
        exc.OpenAIBatchTimeout,
        True,
        [
            "['b0'] were cancelled after the timeout: 3 request(s) finished, 1 did not",
            "Results landed at out/",
        ],
    ),
    (
        Outcome.FAILED,
        [FAILED_BATCH],
        exc.OpenAIBatchFailed,
        True,
        ["Batch b0 failed:\n  line 4: [too_many_tasks] Too many."],
    ),
    (Outcome.EXPIRED, [batch("b0", "expired")], exc.OpenAIBatchExpired, True, ["expired before finishing"]),
    (
        Outcome.CANCELLED,
        [batch("b0", "cancelled")],
        exc.OpenAIBatchCancelled,
        False,
        ["were cancelled: 3 request(s) finished", "A clear of this task lands them again"],
    ),
    (
        Outcome.REQUESTS_FAILED,
        [batch("b0", counts=(4, 3, 1))],
        exc.OpenAIBatchRequestsFailed,
        True,
        ["1 of 4 request(s) failed, more than max_failed_ratio=0.1 allows"],
    ),
]


@pytest.mark.parametrize(
    ("outcome", "last_round", "cls", "retried", "says"), TERMINAL, ids=[t[0].value for t in TERMINAL]
)
def test_terminal_error(outcome, last_round, cls, retried, says):
    error = outcomes.terminal_error(outcome, result(), last_round, 0.1)
    assert type(error) is cls and isinstance(error, exc.OpenAIBatchTerminalError)
    assert isinstance(error, AirflowFailException) is not retried
    for fragment in says:
        assert fragment in str(error)
    assert str(error).endswith("Results landed at out/output.jsonl and out/errors.jsonl.")
    assert error.result == result()  # the BatchResult of what landed travels with the exception


def test_without_error_lines_the_message_names_the_output_only():
    error = outcomes.terminal_error(Outcome.EXPIRED, result(error_lines=0, error_path=None), [], 0.0)
    assert str(error).endswith("Results landed at out/output.jsonl.")


FAILURES = [
    # (reason, exception class, retried by Airflow, what the message says)
    (
        FailReason.POLL,
        exc.OpenAIBatchPollError,
        True,
        ["Gave up polling batch(es) ['b0']: why.", "re-attaches"],
    ),
    (FailReason.TIMEOUT_KEPT, exc.OpenAIBatchTimeout, True, ["within the timeout and are still running"]),
    (
        FailReason.CANCEL_UNCONFIRMED,
        exc.OpenAIBatchTimeout,
        True,
        ["within the timeout nor after cancelling"],
    ),
    (FailReason.QUEUE_TIMEOUT, exc.OpenAIBatchQueueTimeout, True, ["why."]),
    (FailReason.QUEUE_TOO_SMALL, exc.OpenAIBatchQueueTooSmall, False, ["why."]),
]


def test_every_fail_reason_has_a_row():
    assert {f[0] for f in FAILURES} == set(FailReason)


@pytest.mark.parametrize(("reason", "cls", "retried", "says"), FAILURES, ids=[f[0].value for f in FAILURES])
def test_failure_error(reason, cls, retried, says):
    error = outcomes.failure_error(Fail(reason, "why"), ["b0"])
    assert type(error) is cls
    assert isinstance(error, AirflowFailException) is not retried
    for fragment in says:
        assert fragment in str(error)


EVENTS = [
    # (event, status or the error it raises)
    ({"status": "terminal", "batch_ids": ["b0"]}, EventStatus.TERMINAL),
    ({"status": "timeout"}, EventStatus.TIMEOUT),
    ({"status": "error", "message": "m"}, EventStatus.ERROR),
    (None, "Expected a trigger event dict with a `status` but received None"),
    ({}, "Expected a trigger event dict with a `status` but received {}"),
    ("terminal", "Expected a trigger event dict with a `status` but received 'terminal'"),
    ({"status": "done"}, "Unknown trigger event status 'done'"),
]


@pytest.mark.parametrize(("event", "expected"), EVENTS, ids=[repr(e[0]) for e in EVENTS])
def test_check_event(event, expected):
    if isinstance(expected, EventStatus):
        assert outcomes.check_event(event) == (expected, event)
    else:
        with pytest.raises(exc.OpenAIBatchPollError) as info:
            outcomes.check_event(event)
        assert str(info.value) == expected
