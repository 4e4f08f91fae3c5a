"""Room in the organisation's batch queue, as the status board looks for it for every waiting trigger at once.

A trigger whose shards wait for room subscribes with a :class:`~..lifecycle.queue.RoomRequest`. On each of its
refreshes the board asks :class:`RoomKeeper` to read the newest list page (older ones while a batch holding a
queue has not shown), note which batches left each model's queue, and let waiting shards in per model, in order
(earliest logical date, then shard order), up to the room known to be free. The decisions are the pure
:class:`~..lifecycle.queue.Admission` and :class:`~..lifecycle.queue.RoomWatch`; this module does the reading.
A shard let in is woken and stops waiting; one that then finds the queue full again fails for free and waits anew.
"""

from __future__ import annotations

import itertools
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar

import openai

from airflow_provider_openai_batch.lifecycle.queue import Admission, RoomRequest, RoomWatch
from airflow_provider_openai_batch.triggers.refresh import Refresher, list_page

log = logging.getLogger(__name__)


class Waiter(Protocol):
    """A subscription waiting for room: what it asks, whether it still waits, and the mark of being let in."""

    room: RoomRequest | None
    closed: bool
    admitted: bool


W = TypeVar("W", bound=Waiter)


@dataclass
class RoomKeeper(Generic[W]):
    """The subscriptions waiting for room, what the list pages showed of the queues, and each model's order."""

    waiting: set[W] = field(default_factory=set)
    watch: RoomWatch = field(default_factory=RoomWatch)
    admissions: dict[str | None, Admission] = field(default_factory=dict)

    async def let_in(self, client: openai.AsyncOpenAI, page_size: int, refresher: Refresher) -> list[W]:
        """Read the queues and return the waiters let in now (marked ``admitted``, no longer waiting)."""
        items: list[dict[str, Any]] = []
        try:
            for pages in itertools.count(1):  # older pages while a batch holding a queue has not shown
                page, more = await list_page(client, items[-1]["id"] if items else None, page_size)
                refresher.pages += 1
                items += page
                seen = {item["id"] for item in items}
                if not (page and more and self.watch.wants_more(page, seen, pages)):
                    break
        except Exception as exc:
            log.warning("Could not list batches to look for queue room: %s", type(exc).__name__)
            return []
        departed = self.watch.observe(items)
        now = time.time()
        by_model: dict[str | None, list[W]] = {}
        for sub in self.waiting:
            if sub.room is not None and not sub.closed:
                by_model.setdefault(sub.room.model, []).append(sub)
        admitted: list[W] = []
        for model, subs in by_model.items():
            freed = departed.get(model, []) + (departed.get(None, []) if model is not None else [])
            admission = self.admissions.setdefault(model, Admission())
            requests = {id(s.room): s for s in subs}
            let_in = admission.admit([s.room for s in subs if s.room], freed, self.watch.holds(model), now)
            for request in let_in:
                sub = requests[id(request)]
                sub.admitted = True
                self.waiting.discard(sub)
                admitted.append(sub)
            if let_in:
                log.info(
                    "%s batch queue: letting %d waiting shard(s) in, %d still wait",
                    model,
                    len(let_in),
                    len(subs) - len(let_in),
                )
        return admitted
