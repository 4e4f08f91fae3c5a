"""OpenAIBatchTrigger: waits on the triggerer until every one of its OpenAI batches is terminal.

The trigger does no HTTP of its own: it subscribes its batch ids to the status board of its shared client
(:mod:`.status_board`, one per event loop and connection settings), which refreshes every watched batch
on one schedule with a handful of list pages and wakes each trigger only when one of its batches has news.
What the news means (terminal, the per-batch error budget, a permanent error, the deadline) is decided by
:class:`~airflow_provider_openai_batch.lifecycle.waiting.WaitTracker`, the same tracker the operator's
in-place wait uses, so the two waits cannot disagree. A batch is logged when its status or request counts
change, not on every poll.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from airflow_provider_openai_batch.hooks.openai_batch import OpenAIBatchHook
from airflow_provider_openai_batch.lifecycle.queue import RoomRequest
from airflow_provider_openai_batch.lifecycle.waiting import Looks, StatusResult, WaitTracker, first_poll_delay
from airflow_provider_openai_batch.progress import RateMeter, progress_line
from airflow_provider_openai_batch.statuses import TERMINAL, EventStatus
from airflow_provider_openai_batch.triggers import status_board

#: on_kill's shielded work, referenced until done (a task nobody references may be collected mid-way).
_KILLS: set[asyncio.Future[None]] = set()
#: Upper bound for one cancel call in ``on_kill`` (Airflow gives ``on_kill`` 30 seconds by default).
_CANCEL_TIMEOUT = 20.0


class OpenAIBatchTrigger(BaseTrigger):
    """
    Wait for OpenAI batches until every one is terminal, the deadline passes, or polling keeps failing.

    Fires exactly one event, a dict: ``{"status": "terminal" | "timeout" | "error", "batch_ids": [...],
    "batches": {batch_id: last seen status or None}, "message": str, "context": dict}``.

    :param batch_ids: the batches to watch.
    :param openai_conn_id: connection of type ``openai_batch`` (or ``openai``).
    :param poll_interval: a batch's status is at most this many seconds old when the trigger acts on it.
    :param deadline: absolute unix timestamp after which a ``timeout`` event fires; ``None`` for no deadline.
    :param max_consecutive_errors: consecutive failed polls of one batch tolerated before an ``error`` event.
    :param first_poll_jitter: the first look happens after a random delay in ``[0, first_poll_jitter]``
        seconds; ``None`` means ``min(poll_interval, 5)``, ``0`` looks at once.
    :param context: JSON-safe data of the deferring operator, returned unchanged in the event's ``context``.
    :param cancel_on_kill: the batches ``on_kill`` cancels (those the deferring task created); ``None``
        cancels every batch in ``batch_ids``. A batch adopted from another run must not be listed.
    :param room: a shard waiting for room in its model's batch queue
        (:class:`~airflow_provider_openai_batch.lifecycle.queue.RoomRequest` as JSON): a ``room`` event fires
        when the status board lets it in. ``batch_ids`` may then be empty.
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
        cancel_on_kill: list[str] | None = None,
        room: dict[str, Any] | None = None,
    ) -> None:
        # BaseTrigger.__init__ is unannotated, and untyped_calls_exclude does not reach calls through super().
        super().__init__()  # type: ignore[no-untyped-call]
        if isinstance(batch_ids, str):
            batch_ids = [batch_ids]
        if (not batch_ids and room is None) or not all(isinstance(b, str) and b for b in batch_ids):
            raise ValueError(f"Expected a non-empty list of non-empty batch ids but received {batch_ids!r}")
        if poll_interval <= 0:
            raise ValueError(f"Expected `poll_interval` > 0 seconds but received {poll_interval!r}")
        if max_consecutive_errors < 1:
            raise ValueError(
                f"Expected `max_consecutive_errors` >= 1 but received {max_consecutive_errors!r}"
            )
        if first_poll_jitter is not None and first_poll_jitter < 0:
            raise ValueError(f"Expected `first_poll_jitter` >= 0 or None but received {first_poll_jitter!r}")
        if cancel_on_kill is not None and (
            isinstance(cancel_on_kill, str) or not set(cancel_on_kill) <= set(batch_ids)
        ):
            raise ValueError(
                f"Expected `cancel_on_kill` to be None or a list of ids from `batch_ids` but received "
                f"{cancel_on_kill!r}"
            )
        self.batch_ids = list(dict.fromkeys(batch_ids))
        self.openai_conn_id = openai_conn_id
        self.poll_interval = float(poll_interval)
        self.deadline = None if deadline is None else float(deadline)
        self.max_consecutive_errors = int(max_consecutive_errors)
        self.first_poll_jitter = None if first_poll_jitter is None else float(first_poll_jitter)
        # JSON-safe state of the deferring task, echoed back in the event: deferral kwargs are not kept by
        # every runner (dag.test() replaces them with the event), the event always arrives.
        self.context = dict(context or {})
        self.cancel_on_kill = None if cancel_on_kill is None else list(dict.fromkeys(cancel_on_kill))
        self.room = None if room is None else RoomRequest.from_json(room).to_json()
        # Runtime state only (on_kill runs on this same instance): the last status seen per batch.
        self._tracker = WaitTracker(self.batch_ids, self.deadline, self.max_consecutive_errors)
        self._statuses = self._tracker.statuses
        self._rates = RateMeter()

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
                "cancel_on_kill": None if self.cancel_on_kill is None else list(self.cancel_on_kill),
                "room": self.room,
            },
        )

    @property
    def hook(self) -> OpenAIBatchHook:
        return OpenAIBatchHook(openai_conn_id=self.openai_conn_id)

    async def run(self) -> AsyncIterator[TriggerEvent]:
        tracker = self._tracker
        self.log.info(
            "Watching %d batch(es) every %ss on connection %r: %s",
            len(self.batch_ids),
            self.poll_interval,
            self.openai_conn_id,
            ", ".join(self.batch_ids),
        )
        first_delay = first_poll_delay(self.poll_interval, self.first_poll_jitter)
        sub: status_board.Subscription | None = None
        try:
            while True:
                ids: list[str] = []
                results: list[StatusResult | Exception] = []
                looks: list[Looks] | None = None
                try:
                    if sub is None:
                        sub = await self._subscribe(first_delay)
                        first_delay = 0.0
                    remaining = tracker.remaining()
                    if remaining is None:
                        ids, results, looks = await sub.next()
                    elif remaining > 0:
                        ids, results, looks = await asyncio.wait_for(sub.next(), remaining)
                except TimeoutError:
                    pass  # the deadline: outcome() below says so
                except Exception as exc:  # no client (connection lookup failed) or the board stopped
                    ids = tracker.pending()
                    results, looks = [exc] * len(ids), None
                    if sub is not None:
                        sub.close()
                        sub = None
                self._log_news(ids, results, tracker.record_all(ids, results, looks))
                if sub is not None and sub.admitted:
                    sub.close()
                    sub = None
                    message = f"Room in the {self.room and self.room.get('model')} batch queue"
                    yield TriggerEvent(tracker.event(EventStatus.ROOM, message, context=self.context))
                    return
                if sub is not None and any(isinstance(r, Exception) for r in results):
                    sub = await self._maybe_move(sub)
                if sub is not None:
                    sub.unwatch([b for b in ids if tracker.statuses[b] in TERMINAL])
                outcome = tracker.outcome()
                if outcome is not None:
                    if sub is not None:  # stop watching before handing over the event
                        sub.close()
                        sub = None
                    yield TriggerEvent(tracker.event(*outcome, context=self.context))
                    return
                if sub is None:
                    await self._sleep_before_retry()
        finally:
            if sub is not None:
                sub.close()

    async def _subscribe(self, first_delay: float) -> status_board.Subscription:
        client = await self.hook.get_async_client()
        board = status_board.board_for(client)
        room = None if self.room is None else RoomRequest.from_json(self.room)
        return board.subscribe(self._tracker.pending(), self.poll_interval, first_delay, room)

    async def _maybe_move(self, sub: status_board.Subscription) -> status_board.Subscription | None:
        """After an error look the connection up again: a rotated key or a fixed host means a new board."""
        try:
            client = await self.hook.get_async_client()
        except Exception:
            return sub  # counted already; the board keeps trying with the client it has
        if client is sub.board.client and not sub.board.closed:
            return sub
        sub.close()
        room = None if self.room is None else RoomRequest.from_json(self.room)
        return status_board.board_for(client).subscribe(
            self._tracker.pending(), self.poll_interval, 0.0, room
        )

    async def _sleep_before_retry(self) -> None:
        remaining = self._tracker.remaining()
        delay = self.poll_interval if remaining is None else min(self.poll_interval, max(remaining, 0.0))
        if delay > 0:
            await asyncio.sleep(delay)

    def _log_news(self, ids: list[str], results: list[StatusResult | Exception], changed: list[str]) -> None:
        tracker = self._tracker
        for batch_id in changed:
            if tracker.is_unknown(batch_id):
                self.log.warning(
                    "Batch %s reported an unknown status %r; treating it as not finished",
                    batch_id,
                    tracker.statuses[batch_id],
                )
            counts = tracker.counts.get(batch_id, {})
            rate = self._rates.observe(batch_id, counts, time.time())
            self.log.info("%s", progress_line(batch_id, tracker.statuses[batch_id], counts, rate))
        for batch_id, result in zip(ids, results, strict=True):
            if isinstance(result, Exception) and batch_id not in tracker.permanent:
                self.log.warning(
                    "Poll of batch %s failed (%d of %d consecutive failures tolerated): %s: %s",
                    batch_id,
                    tracker.errors.get(batch_id, 0),
                    self.max_consecutive_errors,
                    type(result).__name__,
                    result,
                )

    async def _still_deferred(self) -> bool:
        """Whether Airflow still has this trigger's task instance deferred; False when that cannot be asked."""
        ti = self.task_instance
        if ti is None:
            return False
        try:
            from airflow.sdk.execution_time import task_runner
            from airflow.sdk.execution_time.comms import GetTaskStates, TaskStatesResult

            map_index = getattr(ti, "map_index", -1)
            map_index = -1 if map_index is None else map_index
            response = await task_runner.SUPERVISOR_COMMS.asend(
                GetTaskStates(
                    dag_id=ti.dag_id, task_ids=[ti.task_id], run_ids=[ti.run_id], map_index=map_index
                )
            )
            if not isinstance(response, TaskStatesResult):  # an ErrorResponse, or no answer
                raise TypeError(f"Expected a TaskStatesResult but received {type(response).__name__}")
            key = ti.task_id if map_index < 0 else f"{ti.task_id}_{map_index}"
            return (response.task_states.get(ti.run_id) or {}).get(key) == "deferred"
        except Exception as err:  # older Airflow, no comms: cancel, as a killed task's trigger should
            self.log.debug("Could not read the task instance's state: %s", type(err).__name__)
            return False

    async def on_kill(self) -> None:
        """Cancel this task's own batches not seen terminal; best effort, never raises (a user killed it).

        The work runs shielded: Airflow may cancel the trigger again while ``on_kill`` still waits for the API,
        and a user's cancel must not be lost halfway.
        """
        work = asyncio.ensure_future(self._cancel_own())
        _KILLS.add(work)
        work.add_done_callback(_KILLS.discard)
        await asyncio.shield(work)

    async def _not_finished(self, hook: OpenAIBatchHook, batch_ids: list[str]) -> list[str]:
        """The batches the API does not report finished now (a batch it cannot be asked about counts).

        What this trigger saw may be old: a triggerer frozen past its heartbeat loses its triggers to another,
        which lands them, and when it wakes Airflow cancels its copies "by user action" while the task has
        already resumed. Cancelling a finished batch changes nothing at OpenAI but a refused call, retried.
        """
        looks = await asyncio.gather(
            *(asyncio.wait_for(hook.aget_batch(batch_id=b), _CANCEL_TIMEOUT) for b in batch_ids),
            return_exceptions=True,
        )
        finished = {
            b: look["status"]
            for b, look in zip(batch_ids, looks, strict=True)
            if not isinstance(look, BaseException) and look.get("status") in TERMINAL
        }
        if finished:
            self.log.info("Not cancelling batches that already finished: %s", finished)
        return [b for b in batch_ids if b not in finished]

    async def _cancel_own(self) -> None:
        mine = self.batch_ids if self.cancel_on_kill is None else self.cancel_on_kill
        to_cancel = [b for b in mine if self._statuses.get(b) not in TERMINAL]
        if not to_cancel:
            return
        if await self._still_deferred():
            # Airflow cancels a trigger it moved to another triggerer the way it cancels a killed one
            # (apache/airflow#73454): the task still waits, on the other triggerer; its batches must live.
            self.log.info("Task instance is still deferred (trigger moved): not cancelling %s", to_cancel)
            return
        try:
            hook = self.hook
            to_cancel = await self._not_finished(hook, to_cancel)
            results = await asyncio.gather(
                *(asyncio.wait_for(hook.acancel_batch(batch_id=b), _CANCEL_TIMEOUT) for b in to_cancel),
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
                self.log.info("Cancelled batch %s on kill; it is now %s", batch_id, result["status"])
