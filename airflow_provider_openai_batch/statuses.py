"""Batch statuses, request error codes and the sets every part of the provider decides by (no Airflow import).

One home for what a status or an error code means, so the operator, the trigger, the in-place wait, landing
and resubmission can never disagree about it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from enum import Enum
from typing import Any


class BatchStatus(str, Enum):
    """A batch's ``status`` as the Batch API reports it."""

    VALIDATING = "validating"
    FAILED = "failed"
    IN_PROGRESS = "in_progress"
    FINALIZING = "finalizing"
    COMPLETED = "completed"
    EXPIRED = "expired"
    CANCELLING = "cancelling"
    CANCELLED = "cancelled"


class ErrorCode(str, Enum):
    """``error.code`` of a line in a batch's error file (the ones the provider decides by)."""

    BATCH_EXPIRED = "batch_expired"
    BATCH_CANCELLED = "batch_cancelled"
    RATE_LIMIT_EXCEEDED = "rate_limit_exceeded"
    SERVER_ERROR = "server_error"
    TOKEN_LIMIT_EXCEEDED = "token_limit_exceeded"


class EventStatus(str, Enum):
    """Why a wait (the trigger, or the in-place loop) ended: the ``status`` of its one event."""

    TERMINAL = "terminal"
    TIMEOUT = "timeout"
    ERROR = "error"
    ROOM = "room"  # the model's batch queue has room for the shard that waited


S = BatchStatus
#: Nothing will change any more.
TERMINAL = frozenset({S.COMPLETED.value, S.FAILED.value, S.EXPIRED.value, S.CANCELLED.value})
#: Every status the API documents; anything else is logged and treated as not terminal.
KNOWN = frozenset(s.value for s in BatchStatus)
#: Someone (a person, or our own timeout) stopped the batch.
STOPPED = frozenset({S.CANCELLING.value, S.CANCELLED.value})
#: OpenAI rejected the whole input file: nothing ran and nothing was billed.
REJECTED = frozenset({S.FAILED.value})
#: In the organisation's batch queue: these hold their prompt tokens against the model's enqueued-token limit.
QUEUED = frozenset({S.VALIDATING.value, S.IN_PROGRESS.value, S.FINALIZING.value})
#: Finished without running every request: the unfinished ones can be submitted again.
UNFINISHED = frozenset({S.EXPIRED.value, S.CANCELLED.value})

#: Error lines of requests that did not run through no fault of their own, stopped with their batch.
STOPPED_ERROR_CODES = frozenset({ErrorCode.BATCH_EXPIRED.value, ErrorCode.BATCH_CANCELLED.value})
#: Error codes worth sending again in a follow-up round (a cancelled request is not: someone stopped it).
RETRYABLE_ERROR_CODES = frozenset(
    {ErrorCode.BATCH_EXPIRED.value, ErrorCode.RATE_LIMIT_EXCEEDED.value, ErrorCode.SERVER_ERROR.value}
)
#: HTTP statuses of a request (or of an API call) that a later attempt may well get past.
RETRYABLE_HTTP_STATUSES = frozenset({408, 409, 429})
#: HTTP statuses of ``GET /batches/{id}`` that a later poll will not change: unknown or malformed id.
PERMANENT_POLL_HTTP_STATUSES = frozenset({400, 404, 422})


def is_retryable_http(status_code: Any) -> bool:
    return isinstance(status_code, int) and (status_code in RETRYABLE_HTTP_STATUSES or status_code >= 500)


def error_code(line: Mapping[str, Any]) -> str | None:
    """The ``error.code`` of an error-file line (None for a request that ran and got an HTTP error)."""
    return (line.get("error") or {}).get("code")


def is_stopped_line(line: Mapping[str, Any]) -> bool:
    """A request that never ran because its batch expired or was cancelled."""
    return error_code(line) in STOPPED_ERROR_CODES


def should_resubmit(line: Mapping[str, Any], *, include_cancelled: bool = False) -> bool:
    """Whether an error-file line is worth sending again: rate limits, server errors, expiry.

    :param include_cancelled: also lines a cancel stopped (a new try after a cancelled batch keeps the
        finished part and pays only for the rest).
    """
    code = error_code(line)
    if code in RETRYABLE_ERROR_CODES or (include_cancelled and code == ErrorCode.BATCH_CANCELLED.value):
        return True
    return is_retryable_http((line.get("response") or {}).get("status_code"))


#: Worst first: the status a task reports for several batches.
_PRECEDENCE = (S.FAILED.value, S.EXPIRED.value, S.CANCELLED.value)


def combined_status(statuses: Iterable[str]) -> str:
    """The status of several batches taken together: the worst terminal one, else the first live one."""
    statuses = list(statuses)
    for status in _PRECEDENCE:
        if status in statuses:
            return status
    if statuses and all(s == S.COMPLETED.value for s in statuses):
        return S.COMPLETED.value
    return next((s for s in statuses if s not in TERMINAL), "unknown")
