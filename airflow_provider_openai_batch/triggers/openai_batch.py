"""
OpenAIBatchTrigger: polls one or more OpenAI batches from the triggerer until all of them are terminal.

What is done for scale:

* Async all the way: the connection is looked up with ``aget_connection`` and polled with the process-wide
  ``AsyncOpenAI`` client shared by every trigger on the same connection settings in the event loop
  (:meth:`OpenAIBatchHook.get_async_client`), so thousands of triggers share one connection pool
  (``ASYNC_MAX_CONNECTIONS``) instead of opening a client each.
* Coalesced polling: triggers do not send their own requests. Each registers the batch ids it still waits
  for with the status board of its shared client (:mod:`.status_board`, one per event loop and connection
  settings), whose single task refreshes every watched batch from ``batches.list(limit=100)`` pages, newest
  first, and retrieves only the batches older than the pages; with a single watched batch it just retrieves
  it. A trigger takes the board's last refresh when it is newer than the one it saw and no older than its
  ``poll_interval``, or waits for the next one: N triggers cost about ``ceil(N / 100)`` requests per poll
  interval instead of N. ``status_board.COALESCE_MIN_BATCHES = None`` turns this off (one retrieve per batch
  per poll, as before).
* Light parsing: only ``id``, ``status`` and ``request_counts`` are read from the raw JSON of a page or a
  retrieve, instead of building pydantic ``Batch`` models (see ``docs/benchmarks.md``).
* The first poll comes soon (short batches finish quickly) but jittered over ``[0, first_poll_jitter]``
  seconds, so a triggerer restart with thousands of deferred tasks does not send every poll at once.
* The deadline is an absolute wall-clock timestamp: a restart of the triggerer does not reset the budget.
* Transient poll errors (connection errors, 5xx, 429 after the client's own retries) are tolerated up to
  ``max_consecutive_errors`` consecutive failed rounds; a failed board refresh is a failed round for every
  trigger waiting on it. After an error the client is fetched again, so a rotated key in the connection is
  picked up (and a changed connection moves the trigger to a new board). A 400/404/422 on a batch (unknown
  or malformed id) cannot get better and ends the trigger at once with an ``error`` event.
* A trigger unregisters a batch as soon as it is terminal, and everything when it fires or is cancelled;
  a board whose triggers are all gone stops its task.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator, Iterable
from contextlib import aclosing
from enum import Enum
from typing import Any

import openai
from airflow.triggers.base import BaseTrigger, TriggerEvent

from airflow_provider_openai_batch.hooks.openai_batch import OpenAIBatchHook
from airflow_provider_openai_batch.results import TERMINAL_STATUSES
from airflow_provider_openai_batch.triggers import status_board
from airflow_provider_openai_batch.triggers.status_board import PermanentPollError, StatusResult

TERMINAL_BATCH_STATUSES = TERMINAL_STATUSES
#: Every status the Batch API documents; anything else is logged and treated as not terminal.
KNOWN_BATCH_STATUSES = TERMINAL_BATCH_STATUSES | {"validating", "in_progress", "finalizing", "cancelling"}

#: Upper bound for one cancel call in ``on_kill`` (Airflow gives ``on_kill`` 30 seconds by default).
_CANCEL_TIMEOUT = 20.0


class TriggerStatus(str, Enum):
    """Why the trigger fired its one event."""

    TERMINAL = "terminal"
    TIMEOUT = "timeout"
    ERROR = "error"


class OpenAIBatchTrigger(BaseTrigger):
    """
    Poll OpenAI batches until every one is terminal, the deadline passes, or polling keeps failing.

    Fires exactly one event, a dict: ``{"status": "terminal" | "timeout" | "error", "batch_ids": [...],
    "batches": {batch_id: last seen status or None}, "message": str}``.

    :param batch_ids: the batches to watch.
    :param openai_conn_id: connection of type ``openai_batch`` (or ``openai``).
    :param poll_interval: seconds between polls.
    :param deadline: absolute unix timestamp after which a ``timeout`` event fires; ``None`` for no deadline.
    :param max_consecutive_errors: consecutive failed poll rounds tolerated before an ``error`` event.
    :param first_poll_jitter: the first poll happens after a random delay in ``[0, first_poll_jitter]``
        seconds; ``None`` means ``min(poll_interval, 5)``, ``0`` polls at once.
    :param context: JSON-safe data of the deferring operator, returned unchanged in the event's ``context``.
    """

    def __init__(
        self,
        batch_ids: list[str],
        openai_conn_id: str = OpenAIBatchHook.default_conn_name,
        poll_interval: float = 60.0,
        deadline: float | None = None,
        max_consecutive_errors: int = 5,
        first_poll_jitter: float | None = None,
        context: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        if isinstance(batch_ids, str):
            batch_ids = [batch_ids]
        if not batch_ids or not all(isinstance(b, str) and b for b in batch_ids):
            raise ValueError(f"Expected a non-empty list of non-empty batch ids but received {batch_ids!r}")
        if poll_interval <= 0:
            raise ValueError(f"Expected `poll_interval` > 0 seconds but received {poll_interval!r}")
        if max_consecutive_errors < 1:
            raise ValueError(
                f"Expected `max_consecutive_errors` >= 1 but received {max_consecutive_errors!r}"
            )
        if first_poll_jitter is not None and first_poll_jitter < 0:
            raise ValueError(f"Expected `first_poll_jitter` >= 0 or None but received {first_poll_jitter!r}")
        self.batch_ids = list(dict.fromkeys(batch_ids))
        self.openai_conn_id = openai_conn_id
        self.poll_interval = float(poll_interval)
        self.deadline = None if deadline is None else float(deadline)
        self.max_consecutive_errors = int(max_consecutive_errors)
        self.first_poll_jitter = None if first_poll_jitter is None else float(first_poll_jitter)
        # JSON-safe state of the deferring task, echoed back in the event: deferral kwargs are not kept by
        # every runner (dag.test() replaces them with the event), the event always arrives.
        self.context = dict(context or {})
        # Last status seen per batch: runtime state only (on_kill runs on this same instance).
        self._statuses: dict[str, str | None] = dict.fromkeys(self.batch_ids)
        # The status board this trigger is registered with, and the ids it registered there.
        self._board: status_board.StatusBoard | None = None
        self._watching: set[str] = set()

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "batch_ids": list(self.batch_ids),
                "openai_conn_id": self.openai_conn_id,
                "poll_interval": self.poll_interval,
                "deadline": self.deadline,
                "max_consecutive_errors": self.max_consecutive_errors,
                "first_poll_jitter": self.first_poll_jitter,
                "context": self.context,
            },
        )

    @property
    def hook(self) -> OpenAIBatchHook:
        return OpenAIBatchHook(openai_conn_id=self.openai_conn_id)

    def _event(self, status: TriggerStatus, message: str) -> TriggerEvent:
        return TriggerEvent(
            {
                "status": status.value,
                "batch_ids": list(self.batch_ids),
                "batches": dict(self._statuses),
                "message": message,
                "context": self.context,
            }
        )

    def _remaining(self) -> float | None:
        return None if self.deadline is None else self.deadline - time.time()

    async def _sleep(self, seconds: float) -> None:
        remaining = self._remaining()
        if remaining is not None:
            seconds = min(seconds, max(remaining, 0.0))
        if seconds > 0:
            await asyncio.sleep(seconds)

    async def _poll(
        self, client: openai.AsyncOpenAI, pending: list[str], seen: dict[str, int]
    ) -> list[StatusResult | Exception]:
        """One poll of ``pending``: through the shared status board, or one retrieve each when it is off."""
        if status_board.COALESCE_MIN_BATCHES is None:
            results = await asyncio.gather(
                *(status_board.retrieve_status(client, b) for b in pending), return_exceptions=True
            )
            for result in results:
                if isinstance(result, BaseException) and not isinstance(result, Exception):
                    raise result
            return results  # type: ignore[return-value]
        board = self._board
        if board is None or board.client is not client or board.closed:
            self._unwatch()
            board = status_board.board_for(client)
            board.watch(pending)
            self._board, self._watching = board, set(pending)
            seen.clear()
        return await board.poll(pending, seen, max_age=self.poll_interval)

    def _unwatch(self, batch_ids: Iterable[str] | None = None) -> None:
        if self._board is None:
            return
        ids = self._watching if batch_ids is None else self._watching & set(batch_ids)
        self._board.unwatch(sorted(ids))
        self._watching -= ids
        if not self._watching:
            self._board = None

    async def run(self) -> AsyncIterator[TriggerEvent]:
        try:
            async with aclosing(self._run()) as events:
                async for event in events:
                    # Stop watching before handing over the event: the triggerer need not resume us.
                    self._unwatch()
                    yield event
        finally:
            self._unwatch()

    async def _run(self) -> AsyncIterator[TriggerEvent]:
        hook = self.hook
        client: openai.AsyncOpenAI | None = None
        errors = 0
        seen: dict[str, int] = {}
        warned_unknown: set[tuple[str, Any]] = set()
        self.log.info(
            "Watching %d batch(es) every %ss on connection %r: %s",
            len(self.batch_ids),
            self.poll_interval,
            self.openai_conn_id,
            ", ".join(self.batch_ids),
        )
        jitter = min(self.poll_interval, 5.0) if self.first_poll_jitter is None else self.first_poll_jitter
        await self._sleep(random.uniform(0, jitter) if jitter > 0 else 0)

        while True:
            pending = [b for b in self.batch_ids if self._statuses[b] not in TERMINAL_BATCH_STATUSES]
            failure: BaseException | None = None
            try:
                if client is None:
                    client = await hook.get_async_client()
                results = await self._poll(client, pending, seen)
            except Exception as exc:
                results = [exc]
            for result in results:
                if isinstance(result, BaseException):
                    if not isinstance(result, Exception):
                        raise result
                    failure = failure or result
                    continue
                batch_id, status, counts = result
                if status not in KNOWN_BATCH_STATUSES and (batch_id, status) not in warned_unknown:
                    warned_unknown.add((batch_id, status))
                    self.log.warning(
                        "Batch %s reported an unknown status %r; treating it as not finished",
                        batch_id,
                        status,
                    )
                self._statuses[batch_id] = status if isinstance(status, str) else None
                self.log.info(
                    "Batch %s %s %s/%s completed, %s failed",
                    batch_id,
                    status,
                    counts.get("completed"),
                    counts.get("total"),
                    counts.get("failed"),
                )
            self._unwatch(b for b in pending if self._statuses[b] in TERMINAL_BATCH_STATUSES)

            if isinstance(failure, PermanentPollError):
                yield self._event(TriggerStatus.ERROR, f"Polling cannot succeed: {failure}")
                return
            if failure is not None:
                errors += 1
                client = None  # look the connection up again: it may have been fixed or rotated
                self.log.warning(
                    "Poll failed (%d of %d consecutive failures tolerated): %s: %s",
                    errors,
                    self.max_consecutive_errors,
                    type(failure).__name__,
                    failure,
                )
                if errors >= self.max_consecutive_errors:
                    yield self._event(
                        TriggerStatus.ERROR,
                        f"Polling failed {errors} consecutive times; last error {type(failure).__name__}: {failure}",
                    )
                    return
            else:
                errors = 0

            if all(self._statuses[b] in TERMINAL_BATCH_STATUSES for b in self.batch_ids):
                summary = ", ".join(f"{b}={self._statuses[b]}" for b in self.batch_ids)
                yield self._event(TriggerStatus.TERMINAL, f"All batches are terminal: {summary}")
                return
            remaining = self._remaining()
            if remaining is not None and remaining <= 0:
                unfinished = [b for b in self.batch_ids if self._statuses[b] not in TERMINAL_BATCH_STATUSES]
                yield self._event(
                    TriggerStatus.TIMEOUT,
                    f"Deadline passed with {len(unfinished)} batch(es) unfinished: {', '.join(unfinished)}",
                )
                return
            await self._sleep(self.poll_interval)

    async def on_kill(self) -> None:
        """Cancel every batch not seen terminal; best effort, never raises (the task was killed by a user)."""
        to_cancel = [b for b in self.batch_ids if self._statuses.get(b) not in TERMINAL_BATCH_STATUSES]
        if not to_cancel:
            return
        try:
            hook = self.hook
            results = await asyncio.gather(
                *(asyncio.wait_for(hook.acancel_batch(b), _CANCEL_TIMEOUT) for b in to_cancel),
                return_exceptions=True,
            )
        except Exception as exc:
            results = [exc] * len(to_cancel)
        for batch_id, result in zip(to_cancel, results, strict=True):
            if isinstance(result, BaseException):
                self.log.warning(
                    "Could not cancel batch %s on kill: %s: %s", batch_id, type(result).__name__, result
                )
            else:
                self.log.info("Cancelled batch %s on kill; it is now %s", batch_id, result.status)
