"""One exception hierarchy for the provider; the operator picks the class from an event's reason, never from text.

Errors a retry cannot mend (bad input, a person's cancel, a changed input under ``on_input_change="fail"``, a cost
over budget) are also ``AirflowFailException``s: Airflow fails the task without spending its retries on them.
"""

from __future__ import annotations

from typing import Any

from airflow_provider_openai_batch.requests_input.problems import InvalidRequestsError
from airflow_provider_openai_batch.version_compat import AirflowException, AirflowFailException


class OpenAIBatchError(AirflowException):
    """Base class of every error this provider raises."""


class OpenAIBatchInputError(OpenAIBatchError, AirflowFailException, InvalidRequestsError):
    """The requests did not pass pre-flight validation; nothing was uploaded."""


class OpenAIBatchTerminalError(OpenAIBatchError):
    """A batch ended in a state the task does not accept. Results that exist were landed before raising.

    :param result: the BatchResult dict (as returned through XCom) describing what landed.
    """

    def __init__(self, message: str, result: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.result = result


class OpenAIBatchFailed(OpenAIBatchTerminalError):
    """OpenAI rejected the batch (status ``failed``); ``errors.data`` is in the message line by line."""


class OpenAIBatchExpired(OpenAIBatchTerminalError):
    """The completion window passed (status ``expired``); finished requests were landed."""


class OpenAIBatchCancelled(OpenAIBatchTerminalError, AirflowFailException):
    """The batch was cancelled (status ``cancelled``); finished requests were landed. Not retried: a person
    stopped it. A clear lands the finished part again and submits only the requests that did not run."""


class OpenAIBatchTimeout(OpenAIBatchTerminalError):
    """The operator's ``timeout`` passed before the batch finished."""


class OpenAIBatchRequestsFailed(OpenAIBatchTerminalError):
    """The batch completed but more requests failed than ``max_failed_ratio`` allows."""


class OpenAIBatchPollError(OpenAIBatchError):
    """Polling gave up after too many consecutive errors, or the trigger sent no usable event."""


class OpenAIBatchInputChanged(OpenAIBatchError, AirflowFailException):
    """A retry found an earlier batch for this task instance built from different input (``on_input_change='fail'``)."""


class OpenAIBatchFilesDeleted(OpenAIBatchError, AirflowFailException):
    """A finished batch's output or error file is gone on OpenAI (``delete_files=True`` after an earlier run
    landed it): no retry can download it again; the message names that run and ``fresh_run``."""


class OpenAIBatchCostExceeded(OpenAIBatchError, AirflowFailException):
    """The upper-bound cost estimate of the input exceeds ``max_cost_usd``; nothing was uploaded.

    :param estimate: the estimate (a dict with at least ``total_usd``) that was refused.
    """

    def __init__(self, message: str, estimate: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.estimate = estimate


class OpenAIBatchStorageError(OpenAIBatchError):
    """Reading the input or landing results on storage failed; the message names the URL."""


class OpenAIBatchStorageConnectionNotFound(OpenAIBatchStorageError, AirflowFailException):
    """A storage URL names an Airflow connection that does not exist; nothing was read, uploaded or paid.

    Without it the storage provider would fall back to the worker's own credentials, so it is never retried.
    """


class OpenAIBatchOutputOfAnotherTask(OpenAIBatchStorageError, AirflowFailException):
    """``output_path`` holds results another task wrote (its manifest says which); nothing was uploaded or paid.

    Pass ``overwrite_other_results=True`` to replace them.
    """


class OpenAIBatchQueueTimeout(OpenAIBatchError):
    """Shards waited for room in the model's batch queue longer than ``queue_timeout`` (or the task's
    ``timeout``) allows. Nothing was paid for them; a retry waits again and re-attaches to what ran."""


class OpenAIBatchQueueTooSmall(OpenAIBatchError, AirflowFailException):
    """A shard is larger than the model's whole batch queue and can no longer be cut again in this try."""
