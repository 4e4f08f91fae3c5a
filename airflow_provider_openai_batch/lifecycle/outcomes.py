"""How a try ends, as the exception a user reads: one class per outcome or failure, chosen by reason, never by text.

Every terminal exception carries the BatchResult of what landed; the messages name the batches, where the results
are, and what a retry or a clear does.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from airflow_provider_openai_batch import exceptions as exc
from airflow_provider_openai_batch import results
from airflow_provider_openai_batch.files import describe_files
from airflow_provider_openai_batch.lifecycle.plan import Fail, FailReason, Outcome
from airflow_provider_openai_batch.statuses import EventStatus

_TERMINAL = {
    Outcome.TIMEOUT: (exc.OpenAIBatchTimeout, "were cancelled after the timeout"),
    Outcome.FAILED: (exc.OpenAIBatchFailed, "were rejected by OpenAI"),
    Outcome.EXPIRED: (exc.OpenAIBatchExpired, "expired before finishing"),
    Outcome.CANCELLED: (exc.OpenAIBatchCancelled, "were cancelled"),
    Outcome.REQUESTS_FAILED: (exc.OpenAIBatchRequestsFailed, "completed with failed requests"),
}


def terminal_error(
    outcome: Outcome,
    result: results.BatchResult,
    last_round: Sequence[Mapping[str, Any]],
    max_failed_ratio: float,
) -> exc.OpenAIBatchTerminalError:
    """The exception for a landed result whose outcome is not a success."""
    cls, what = _TERMINAL[outcome]
    where = f"Results landed at {describe_files(result['output_paths'])}" + (
        f" and {describe_files(result['error_paths'])}" if result["error_paths"] else ""
    )
    message = f"Batch(es) {result['batch_ids']} {what}: {result['output_lines']} request(s) finished"
    if outcome is Outcome.FAILED:
        message = "\n".join(
            f"Batch {b['id']} failed:\n{results.failure_details(b)}"
            for b in last_round
            if b["status"] == "failed"
        )
    elif outcome is Outcome.REQUESTS_FAILED:
        total = result["request_counts"]["total"]
        invalid = (result.get("invalid_output") or {}).get("total", 0)
        message = (
            f"{result['error_lines'] + invalid} of {total} request(s) failed"
            + (f" ({invalid} with an invalid answer: {result['invalid_output']})" if invalid else "")
            + f", more than max_failed_ratio={max_failed_ratio} allows"
        )
    elif outcome is Outcome.CANCELLED:
        message += ". A clear of this task lands them again and submits only the requests that did not run"
    else:
        message += f", {result['error_lines']} did not"
    return cls(f"{message}. {where}.", dict(result))


def failure_error(action: Fail, current: list[str]) -> exc.OpenAIBatchError:
    """The exception for a try that ends without landing."""
    if action.reason is FailReason.POLL:
        return exc.OpenAIBatchPollError(
            f"Gave up polling batch(es) {current}: {action.message}. They may still be running; "
            "a retry of this task re-attaches to them instead of creating new ones."
        )
    if action.reason is FailReason.QUEUE_TIMEOUT:
        return exc.OpenAIBatchQueueTimeout(action.message + ".")
    if action.reason is FailReason.QUEUE_TOO_SMALL:
        return exc.OpenAIBatchQueueTooSmall(action.message + ".")
    if action.reason is FailReason.TIMEOUT_KEPT:
        return exc.OpenAIBatchTimeout(
            f"Batch(es) {current} did not finish within the timeout and are still running: "
            "a retry re-attaches to them."
        )
    return exc.OpenAIBatchTimeout(
        f"Batch(es) {current} did not finish within the timeout nor after cancelling."
    )


def check_event(event: Any) -> tuple[EventStatus, dict[str, Any]]:
    """The status of a trigger event, and the event; a missing or malformed event is an error, never a silent
    success."""
    if not isinstance(event, dict) or "status" not in event:
        raise exc.OpenAIBatchPollError(
            f"Expected a trigger event dict with a `status` but received {event!r}"
        )
    try:
        return EventStatus(event["status"]), event
    except ValueError:
        raise exc.OpenAIBatchPollError(f"Unknown trigger event status {event['status']!r}") from None
