"""statuses.py: what a batch status or an error line means, decided in one place for the whole provider.

Tables of the decisions (which status several batches report together, which error lines are sent again) and
the relations the rest of the provider relies on between the status sets (a rejected batch is never re-used,
every terminal status is a known one, and the known ones are exactly what openai-python documents).
"""

from __future__ import annotations

import itertools
import json
import typing

import pytest
from openai.types import Batch

from airflow_provider_openai_batch.statuses import (
    KNOWN,
    PERMANENT_POLL_HTTP_STATUSES,
    REJECTED,
    RETRYABLE_ERROR_CODES,
    STOPPED,
    STOPPED_ERROR_CODES,
    TERMINAL,
    UNFINISHED,
    BatchStatus,
    ErrorCode,
    EventStatus,
    combined_status,
    is_retryable_http,
    is_stopped_line,
    should_resubmit,
)
from tests.support.builders import batch_error_line, http_error_line

# ------------------------------------------------------------------------------------- combined_status
COMBINED = [
    ([], "unknown"),
    (["completed"], "completed"),
    (["completed", "completed", "completed"], "completed"),
    # The worst terminal status wins: failed, then expired, then cancelled, whatever the order.
    (["completed", "expired", "cancelled"], "expired"),
    (["cancelled", "completed"], "cancelled"),
    (["expired", "failed", "cancelled"], "failed"),
    (["cancelled", "expired"], "expired"),
    # A failed shard fails the task even while others still run: there is no waiting for it to get better.
    (["in_progress", "failed"], "failed"),
    (["validating", "expired"], "expired"),
    # Not all finished and none stopped badly: the first one still running.
    (["completed", "in_progress"], "in_progress"),
    (["validating", "finalizing"], "validating"),
    (["completed", "cancelling"], "cancelling"),
    # A status the API does not document counts as not finished (never as completed).
    (["completed", "paused"], "paused"),
]


@pytest.mark.parametrize(("given", "expected"), COMBINED, ids=[",".join(c[0]) or "none" for c in COMBINED])
def test_combined_status_table(given, expected):
    assert combined_status(given) == expected
    assert combined_status(iter(given)) == expected  # any iterable, consumed once


WORST_FIRST = ["failed", "expired", "cancelled", "completed"]


def test_combined_status_of_terminal_batches_is_the_worst_in_any_order():
    for size in range(1, len(WORST_FIRST) + 1):
        for combo in itertools.permutations(WORST_FIRST, size):
            worst = min(combo, key=WORST_FIRST.index)
            assert combined_status(list(combo)) == worst, combo


# -------------------------------------------------------------------------------------- should_resubmit
def no_response_line(**fields):
    return {"custom_id": "c", **fields}


# (line, resubmitted?, resubmitted with include_cancelled?)
RESUBMIT = [
    (http_error_line(429), True, True),
    (http_error_line(500), True, True),
    (http_error_line(502), True, True),
    (http_error_line(503), True, True),
    (http_error_line(408), True, True),
    (http_error_line(409), True, True),
    (http_error_line(400), False, False),
    (http_error_line(401), False, False),
    (http_error_line(404), False, False),
    (http_error_line(422), False, False),
    (batch_error_line("batch_expired"), True, True),
    (batch_error_line("rate_limit_exceeded"), True, True),
    (batch_error_line("server_error"), True, True),
    # Someone cancelled the batch on purpose: resubmitting would undo that, unless a new try asks for it.
    (batch_error_line("batch_cancelled"), False, True),
    (batch_error_line("token_limit_exceeded"), False, False),
    (batch_error_line("invalid_request"), False, False),
    (no_response_line(response=None, error=None), False, False),
    (no_response_line(response={"status_code": "500"}, error=None), False, False),  # not a number
    (no_response_line(), False, False),
]


@pytest.mark.parametrize(
    ("line", "resubmitted", "with_cancelled"), RESUBMIT, ids=[json.dumps(r[0])[:70] for r in RESUBMIT]
)
def test_should_resubmit_table(line, resubmitted, with_cancelled):
    assert should_resubmit(line) is resubmitted
    assert should_resubmit(line, include_cancelled=True) is with_cancelled


@pytest.mark.parametrize(
    ("status", "retryable"),
    [(408, True), (409, True), (429, True), (500, True), (599, True), (400, False), (404, False)]
    + [(422, False), (200, False), ("500", False), (None, False)],
)
def test_is_retryable_http(status, retryable):
    assert is_retryable_http(status) is retryable


def test_a_poll_error_that_is_permanent_is_never_retryable():
    assert PERMANENT_POLL_HTTP_STATUSES and not any(
        is_retryable_http(s) for s in PERMANENT_POLL_HTTP_STATUSES
    )


def test_stopped_lines_are_the_expired_and_cancelled_ones():
    assert is_stopped_line(batch_error_line("batch_expired")) and is_stopped_line(
        batch_error_line("batch_cancelled")
    )
    assert not is_stopped_line(batch_error_line("server_error"))
    assert not is_stopped_line(http_error_line(500)) and not is_stopped_line(no_response_line())


# ------------------------------------------------------------------------------------------------ sets
def test_known_statuses_are_what_openai_python_documents():
    documented = typing.get_args(Batch.model_fields["status"].annotation)
    assert documented and KNOWN == set(documented) == {s.value for s in BatchStatus}


def test_status_set_relations():
    assert TERMINAL < KNOWN  # some known statuses are still running
    assert REJECTED < TERMINAL and UNFINISHED < TERMINAL
    assert STOPPED < KNOWN and STOPPED - TERMINAL == {"cancelling"}
    assert TERMINAL - REJECTED - UNFINISHED == {"completed"}


def test_error_code_set_relations():
    codes = {c.value for c in ErrorCode}
    assert STOPPED_ERROR_CODES < codes and RETRYABLE_ERROR_CODES < codes
    assert STOPPED_ERROR_CODES == {"batch_expired", "batch_cancelled"}
    # Of the stopped lines only the expired ones are retried by default: a cancel was somebody's decision.
    assert STOPPED_ERROR_CODES & RETRYABLE_ERROR_CODES == {"batch_expired"}


def test_enums_are_their_strings_on_the_wire():
    # Trigger events and the manifest carry them as JSON; the API's strings come back as members.
    assert json.dumps([BatchStatus.COMPLETED, EventStatus.TIMEOUT]) == '["completed", "timeout"]'
    assert BatchStatus("in_progress") is BatchStatus.IN_PROGRESS
    assert {e.value for e in EventStatus} == {"terminal", "timeout", "error", "room"}
