"""One wait behaviour for the trigger (async, on the triggerer) and the in-place loop (sync, on the worker).

:class:`WaitTracker` is the pure part both share: the last status of each batch, a consecutive-error budget
per batch, which errors can never get better, the deadline, and the one event a wait ends with. The callers
only fetch statuses (their own way) and sleep; so the two waits cannot drift apart again.
"""

from __future__ import annotations

import itertools
import logging
import random
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from airflow_provider_openai_batch.lifecycle.queue import Admission, RoomRequest, RoomWatch
from airflow_provider_openai_batch.progress import RateMeter, progress_line
from airflow_provider_openai_batch.statuses import KNOWN, PERMANENT_POLL_HTTP_STATUSES, TERMINAL, EventStatus

log = logging.getLogger(__name__)

#: ``(batch_id, status, request_counts)``: what one poll learns about one batch.
StatusResult = tuple[str, Any, dict[str, Any]]


@dataclass(frozen=True)
class Looks:
    """What the looks at one batch came to since a wait last took an answer for it: whether one succeeded,
    and how many failed after the last success. The status board polls on its own clock, so a trigger may
    take one answer for several looks; its error budget still counts every failed look, and a success in
    between still clears it."""

    succeeded: bool = False
    failed: int = 1


class PermanentPollError(Exception):
    """Polling this batch cannot succeed (unknown or malformed id): a later poll will not change it."""


def is_permanent(error: BaseException) -> bool:
    """An error no later poll gets past: ours, or an HTTP 400/404/422 for the batch."""
    if isinstance(error, PermanentPollError):
        return True
    return getattr(error, "status_code", None) in PERMANENT_POLL_HTTP_STATUSES and hasattr(error, "response")


def first_poll_delay(poll_interval: float, jitter: float | None) -> float:
    """Soon (short batches finish quickly), but spread so a restart does not send every poll at once."""
    spread = min(poll_interval, 5.0) if jitter is None else jitter
    return random.uniform(0, spread) if spread > 0 else 0.0


@dataclass
class WaitTracker:
    """The state of one wait for ``batch_ids``; :meth:`record` what polls return, :meth:`outcome` decides."""

    batch_ids: list[str]
    deadline: float | None = None
    max_consecutive_errors: int = 5
    statuses: dict[str, str | None] = field(default_factory=dict)
    counts: dict[str, dict[str, Any]] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)
    last_error: dict[str, BaseException] = field(default_factory=dict)
    permanent: dict[str, BaseException] = field(default_factory=dict)
    unknown_seen: set[tuple[str, Any]] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.batch_ids = list(dict.fromkeys(self.batch_ids))
        for batch_id in self.batch_ids:
            self.statuses.setdefault(batch_id, None)

    def pending(self) -> list[str]:
        """The batches still worth polling."""
        return [b for b in self.batch_ids if self.statuses[b] not in TERMINAL and b not in self.permanent]

    def record(self, batch_id: str, result: StatusResult | BaseException, looks: Looks | None = None) -> bool:
        """Take one poll's answer for ``batch_id``; True when its status or counts changed (worth a log line).

        :param looks: for an error, the looks it stands for (default: this one failed look).
        """
        if isinstance(result, BaseException):
            if is_permanent(result):
                self.permanent[batch_id] = result
            else:
                looks = looks or Looks()
                before = 0 if looks.succeeded else self.errors.get(batch_id, 0)
                self.errors[batch_id] = before + looks.failed
                self.last_error[batch_id] = result
            return False
        _, status, counts = result
        self.errors[batch_id] = 0
        changed = self.statuses.get(batch_id) != status or self.counts.get(batch_id) != counts
        self.statuses[batch_id] = status if isinstance(status, str) else None
        self.counts[batch_id] = dict(counts or {})
        return changed

    def record_all(
        self,
        batch_ids: Iterable[str],
        results: Iterable[StatusResult | BaseException],
        looks: Iterable[Looks | None] | None = None,
    ) -> list[str]:
        """Record answers in order; returns the ids whose status or counts changed."""
        ids, answers = list(batch_ids), list(results)
        each = [None] * len(ids) if looks is None else list(looks)
        return [b for b, r, k in zip(ids, answers, each, strict=True) if self.record(b, r, k)]

    def is_unknown(self, batch_id: str) -> bool:
        """True once per (batch, status) the API documents no such status for (log it, keep waiting)."""
        key = (batch_id, self.statuses.get(batch_id))
        if key[1] is None or key[1] in KNOWN or key in self.unknown_seen:
            return False
        self.unknown_seen.add(key)
        return True

    def remaining(self, now: float | None = None) -> float | None:
        return None if self.deadline is None else self.deadline - (time.time() if now is None else now)

    def outcome(self, now: float | None = None) -> tuple[EventStatus, str] | None:
        """How the wait ends now, or None to keep waiting: an error beats completion beats the deadline."""
        if self.permanent:
            batch_id, error = next(iter(self.permanent.items()))
            return EventStatus.ERROR, f"Polling cannot succeed for batch {batch_id}: {_describe(error)}"
        exhausted = [b for b, n in self.errors.items() if n >= self.max_consecutive_errors]
        if exhausted:
            batch_id = exhausted[0]
            return (
                EventStatus.ERROR,
                f"Polling batch {batch_id} failed {self.errors[batch_id]} consecutive times; last error "
                f"{_describe(self.last_error[batch_id])}",
            )
        if self.batch_ids and all(self.statuses[b] in TERMINAL for b in self.batch_ids):
            summary = ", ".join(f"{b}={self.statuses[b]}" for b in self.batch_ids)
            return EventStatus.TERMINAL, f"All batches are terminal: {summary}"
        remaining = self.remaining(now)
        if remaining is not None and remaining <= 0:
            unfinished = [b for b in self.batch_ids if self.statuses[b] not in TERMINAL]
            return (
                EventStatus.TIMEOUT,
                f"Deadline passed with {len(unfinished)} batch(es) unfinished: {', '.join(unfinished) or 'none'}",
            )
        return None

    def event(
        self, status: EventStatus, message: str, context: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """The one event a wait ends with (the trigger's payload; the in-place loop returns the same dict)."""
        payload: dict[str, Any] = {
            "status": status.value,
            "batch_ids": list(self.batch_ids),
            "batches": dict(self.statuses),
            "message": message,
        }
        if context is not None:
            payload["context"] = context
        return payload


def _describe(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}"


def batch_status(hook: Any) -> Any:
    """A blocking ``get_status(batch_id)`` for :func:`wait_in_place`, from the hook's ``get_batch``."""

    def get_status(batch_id: str) -> StatusResult:
        batch = hook.get_batch(batch_id)
        return batch_id, batch["status"], batch.get("request_counts") or {}

    return get_status


def wait_in_place(
    get_status: Any,
    batch_ids: list[str],
    *,
    deadline: float | None,
    poll_interval: float,
    max_consecutive_errors: int = 5,
    sleep: Any = time.sleep,
    room: RoomRequest | None = None,
    list_page: Any = None,
) -> dict[str, Any]:
    """The non-deferrable wait on the worker: the trigger's loop, with a blocking ``get_status(batch_id)``.

    :param get_status: returns a :data:`StatusResult` for one batch, or raises.
    :param room: a shard waiting for room in its model's queue: the wait also ends (``room``) when it is let in.
    :param list_page: returns the page of ``GET /batches`` after a batch id (None: the newest) as dicts, and
        whether older ones follow (where departures from the queue show); needed with ``room``.
    :return: the event dict the trigger would have fired.
    """
    tracker = WaitTracker(batch_ids, deadline=deadline, max_consecutive_errors=max_consecutive_errors)
    watch, admission = RoomWatch(), Admission()
    rates = RateMeter()
    sleep(min(first_poll_delay(poll_interval, None), max(tracker.remaining() or 5.0, 0.0)))
    while True:
        if room is not None and _let_in(room, watch, admission, list_page):
            return tracker.event(EventStatus.ROOM, f"Room in the {room.model} batch queue")
        pending = tracker.pending()
        answers: list[StatusResult | BaseException] = []
        for batch_id in pending:
            try:
                answers.append(get_status(batch_id))
            except Exception as err:
                answers.append(err)
        for batch_id in tracker.record_all(pending, answers):
            counts = tracker.counts.get(batch_id) or {}
            rate = rates.observe(batch_id, counts, time.time())
            log.info("%s", progress_line(batch_id, tracker.statuses[batch_id], counts, rate))
        for batch_id in pending:
            if batch_id in tracker.last_error and tracker.errors.get(batch_id):
                log.warning(
                    "Polling batch %s failed (%d in a row): %s",
                    batch_id,
                    tracker.errors[batch_id],
                    type(tracker.last_error[batch_id]).__name__,
                )
        ended = tracker.outcome()
        if ended is not None:
            return tracker.event(*ended)
        remaining = tracker.remaining()
        sleep(poll_interval if remaining is None else max(0.0, min(poll_interval, remaining)))


def _let_in(room: RoomRequest, watch: RoomWatch, admission: Admission, list_page: Any) -> bool:
    """One look at the newest batches (older pages while a queue holder has not shown, as the status board
    looks): is the waiting shard let into its model's queue now?"""
    items: list[dict[str, Any]] = []
    try:
        for pages in itertools.count(1):
            page, more = list_page(items[-1]["id"] if items else None)
            items += page
            if not (page and more and watch.wants_more(page, {item["id"] for item in items}, pages)):
                break
    except Exception as err:  # the batches' own polls decide about errors; room is looked for again next time
        log.warning("Could not list batches to look for room: %s", type(err).__name__)
        return False
    departed = watch.observe(items)
    freed = departed.get(room.model, []) + (departed.get(None, []) if room.model is not None else [])
    return bool(admission.admit([room], freed, watch.holds(room.model), time.time()))
