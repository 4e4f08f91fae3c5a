"""The retry policy of ``batches.create``: openai-python's own retry decisions and delays, never a second bill.

The client would retry a create whose answer was lost (a timeout, a dropped connection, a 5xx) by posting it
again, yet the lost post may have made the batch, and a second post makes a second, billed batch. So the
create runs with the client's retries off, and this module retries it the client's way (same statuses, same
``x-should-retry``, ``retry-after-ms`` and ``retry-after`` handling, same backoff and jitter, same cap above
which a server-directed delay is not waited out) but asks the caller whether the batch exists before posting
again. The decisions and delays come from the client's own methods, so they follow the installed openai.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import httpx2
import openai
from openai._models import FinalRequestOptions

log = logging.getLogger(__name__)


def _sleep(seconds: float) -> None:
    """A seam for tests, which record the delays instead of waiting them out."""
    time.sleep(seconds)


def _response(err: BaseException) -> httpx2.Response | None:
    return err.response if isinstance(err, openai.APIStatusError) else None


def should_retry(client: openai.OpenAI, err: BaseException) -> bool:
    """
    Whether openai-python would retry the request that raised ``err`` (given retries left).

    Connection errors and timeouts are retried, as the client retries them; an HTTP error is retried when the
    client's ``_should_retry`` says so (``x-should-retry``, then 408, 409, 429 and 5xx, and never when the
    server asks for a wait above openai's cap, ``MAX_RETRY_AFTER_DELAY``).

    :param client: the client whose policy decides (its private ``_should_retry``).
    :param err: the error the request raised.
    """
    if isinstance(err, openai.APIConnectionError):  # includes APITimeoutError
        return True
    response = _response(err)
    return response is not None and bool(client._should_retry(response))


def retry_delay(client: openai.OpenAI, err: BaseException, *, retries_taken: int, max_retries: int) -> float:
    """
    Seconds openai-python would wait before the next attempt: the server's ``retry-after-ms`` or
    ``retry-after`` (seconds or an HTTP date) when between 0 and the cap, else exponential backoff from 0.5 s
    up to 8 s, less a random 0-25 % jitter.

    :param client: the client whose policy computes it (its private ``_calculate_retry_timeout``).
    :param err: the error of the attempt that failed.
    :param retries_taken: retries already made before this failure (0 after the first attempt).
    :param max_retries: the retry budget, the client's ``max_retries``.
    """
    response = _response(err)
    options = FinalRequestOptions.construct(method="post", url="/batches", max_retries=max_retries)
    return float(
        client._calculate_retry_timeout(
            max_retries - retries_taken, options, response.headers if response is not None else None
        )
    )


def made_nothing(err: BaseException) -> bool:
    """A failure after which the create surely made no batch: a rate limit is refused before any work."""
    return isinstance(err, openai.RateLimitError)


def create_with_recovery(
    create: Callable[[], dict[str, Any]],
    find_existing: Callable[[], dict[str, Any] | None],
    *,
    client: openai.OpenAI,
) -> dict[str, Any]:
    """
    Call ``create`` (a create with the client's retries off) up to ``client.max_retries + 1`` times.

    After a failure openai-python would retry: wait its delay, then, unless the failure surely made nothing
    (a 429), ask ``find_existing()`` for the batch the lost create may have made and return it when found;
    otherwise post again. An error the client would not retry is raised at once. When ``find_existing``
    itself fails, the create's error is raised: whether the batch was made cannot be told, and a retry of
    the task looks again.

    :param create: posts the batch once; raises an ``openai.APIError`` on failure.
    :param find_existing: returns the batch this create made, or ``None``; called only after a failure.
    :param client: the configured client: its ``max_retries`` and its retry policy apply.
    """
    max_retries = int(client.max_retries)
    for retries_taken in range(max_retries + 1):
        try:
            return create()
        except (openai.APIConnectionError, openai.APIStatusError) as err:
            if not should_retry(client, err):
                raise
            last = retries_taken == max_retries
            if last and made_nothing(err):
                raise
            delay = retry_delay(client, err, retries_taken=retries_taken, max_retries=max_retries)
            log.warning(
                "batches.create failed (%s) on attempt %d of %d; %s in %.1fs",
                _describe(err),
                retries_taken + 1,
                max_retries + 1,
                "retrying" if made_nothing(err) else "looking for the batch it may have made",
                delay,
            )
            _sleep(delay)
            if made_nothing(err):
                continue
            try:
                found = find_existing()
            except Exception as search_err:
                log.warning(
                    "Could not look for the batch (%s); raising the create's error", _describe(search_err)
                )
                raise err from search_err
            if found is not None:
                log.info("batches.create did make batch %s although its answer was lost", found["id"])
                return found
            if last:
                raise
    raise AssertionError("unreachable: the last attempt returns or raises")


def _describe(err: BaseException) -> str:
    status = getattr(err, "status_code", None)
    return f"{type(err).__name__}, HTTP {status}" if status else type(err).__name__
