"""
Coalesced batch status polling: one status board per event loop and shared client, used by every trigger.

Every live :class:`~airflow_provider_openai_batch.triggers.openai_batch.OpenAIBatchTrigger` registers the
batch ids it still waits for with the board of its client. The board is keyed by the shared ``AsyncOpenAI``
itself, and the hook hands out one client per (event loop, connection settings), so a board lives exactly
as long and as wide as the hook's client cache key; a connection whose settings change gets a new board.

One task per board does the HTTP. A trigger that wants statuses calls :meth:`StatusBoard.poll`, which
answers at once from the last refresh when that refresh is newer than what this trigger saw last and
started at most one poll interval (the trigger's own) before the call; otherwise the trigger waits for
the next refresh. So a status is at most one poll interval old when a trigger gets it (a change shows
up at most one interval later than with a retrieve of its own), and triggers polling at different
intervals share the refreshes of the most frequent one. The last refresh's pages
are kept whole, so a trigger that registers (after a triggerer restart, say) finds its batch there
instead of asking for a refresh of its own. A refresh:

* with at least :data:`COALESCE_MIN_BATCHES` distinct watched ids, fetches ``batches.list(limit=100)``
  pages, newest first, until every watched id was seen, fewer than two are left to find (a page would
  cost what retrieving the last one does), or :func:`page_cap` pages were read (:data:`MAX_LIST_PAGES`,
  or enough pages for the whole watched set if that is more); it reads only ``id``, ``status`` and
  ``request_counts`` from the raw JSON;
* retrieves, one request each, the ids a waiting trigger needs that the pages did not contain (batches
  older than the pages). Such an id is remembered as old: ids only move down the list as batches are
  created, so later refreshes retrieve it directly, without paging for it again;
* with fewer watched ids (one batch), just retrieves: a page would cost more than it saves; so does a
  board whose ``GET /batches`` answered 403/404/405/501 (a gateway that only routes retrieve, a key
  without the permission), from then on.

So N triggers polling every ``poll_interval`` cost about one refresh per interval: ``ceil(N / 100)`` list
requests instead of N retrieves. A failed list page fails the refresh for every id it did not reach, and
each waiting trigger counts it as one failed poll against its own error budget; a retrieve error belongs
to its batch alone (a 400/404/422 is permanent, as before). The task stops, and the board leaves the
registry, when no trigger watches anything, so nothing outlives a loop's triggers; boards of different
event loops never share a task, a future or a client. Parsing a page is a ``json.loads`` of at most
100 batches and a loop over them: nothing that blocks the loop.
"""

from __future__ import annotations

import asyncio
import json
import logging
import weakref
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import openai

log = logging.getLogger(__name__)

#: Coalesce through ``batches.list`` when the board watches at least this many distinct batch ids;
#: ``None`` turns coalescing off (every trigger retrieves its own batches, as before the board existed).
COALESCE_MIN_BATCHES: int | None = 2
#: Page size of ``batches.list`` (the API's maximum).
LIST_PAGE_SIZE = 100
#: Pages one refresh may read (more only when the watched set needs more); batches further down the list
#: are retrieved one by one.
MAX_LIST_PAGES = 10

#: HTTP statuses that will not change on a later poll: the batch id is unknown or malformed.
PERMANENT_HTTP_STATUSES = frozenset({400, 404, 422})
#: HTTP statuses of ``GET /batches`` meaning this endpoint or key cannot list (a proxy or gateway that only
#: routes retrieve, a key without the permission): the board falls back to retrieves for good.
LIST_UNSUPPORTED_HTTP_STATUSES = frozenset({403, 404, 405, 501})

#: A batch's status as the trigger logs it: ``(batch_id, status, request_counts)``.
StatusResult = tuple[str, Any, dict[str, Any]]


class PermanentPollError(Exception):
    """Polling this batch cannot succeed (unknown or malformed id)."""


def page_cap(n_listable: int) -> int:
    """
    Most pages one refresh reads for ``n_listable`` watched ids: enough to cover them, and
    :data:`MAX_LIST_PAGES` at least, because newer batches (finished ones, other users') come first.
    """
    return max(MAX_LIST_PAGES, -(-n_listable // LIST_PAGE_SIZE) + 1)


async def retrieve_status(client: openai.AsyncOpenAI, batch_id: str) -> StatusResult:
    """One ``GET /batches/{id}``, reading only ``status`` and ``request_counts`` from the raw JSON."""
    try:
        raw = await client.batches.with_raw_response.retrieve(batch_id)
    except openai.APIStatusError as exc:
        if exc.status_code in PERMANENT_HTTP_STATUSES:
            raise PermanentPollError(f"batch {batch_id}: HTTP {exc.status_code} {exc.message}") from exc
        raise
    data = json.loads(raw.content)
    return batch_id, data.get("status"), data.get("request_counts") or {}


@dataclass
class _Entry:
    generation: int
    started: float  # loop time at which the refresh that produced it started
    result: StatusResult | None = None
    error: Exception | None = None


@dataclass(eq=False)
class _Waiter:
    batch_ids: list[str]
    seen: dict[str, int]
    max_age: float
    future: asyncio.Future[list[StatusResult | Exception]]
    asked: float  # loop time of the request: max_age counts from here, not from when a refresh ends
    generation: int = 0  # the refresh that must answer it (0: not yet taken by a refresh)


@dataclass(eq=False)
class StatusBoard:
    """The statuses of every batch watched through one shared client in one event loop."""

    client: openai.AsyncOpenAI
    loop: asyncio.AbstractEventLoop
    watched: Counter[str] = field(default_factory=Counter)
    generation: int = 0
    refreshes: int = 0
    requests: int = 0
    _entries: dict[str, _Entry] = field(default_factory=dict)
    _old: set[str] = field(default_factory=set)
    _waiters: list[_Waiter] = field(default_factory=list)
    _wake: asyncio.Event = field(default_factory=asyncio.Event)
    _task: asyncio.Task[None] | None = None
    list_unsupported: bool = False
    closed: bool = False

    # -- registration ------------------------------------------------------------------------------

    def watch(self, batch_ids: list[str]) -> None:
        if self.closed:
            raise RuntimeError("this status board has stopped; get a new one with board_for()")
        self.watched.update(batch_ids)
        if self._task is None:
            self._task = self.loop.create_task(self._run(), name=f"openai-batch-status-board-{id(self):x}")

    def unwatch(self, batch_ids: list[str]) -> None:
        for batch_id in batch_ids:
            if self.watched[batch_id] <= 1:
                self.watched.pop(batch_id, None)
                self._entries.pop(batch_id, None)
                self._old.discard(batch_id)
            else:
                self.watched[batch_id] -= 1
        if not self.watched:
            self._wake.set()  # let the task see that it has nothing left to do

    @property
    def coalescing(self) -> bool:
        return (
            COALESCE_MIN_BATCHES is not None
            and not self.list_unsupported
            and len(self.watched) >= COALESCE_MIN_BATCHES
        )

    # -- polling -----------------------------------------------------------------------------------

    def _fresh(self, waiter: _Waiter) -> list[StatusResult | Exception] | None:
        """The waiter's answer from the entries, or None if one of its ids needs a newer refresh."""
        for batch_id in waiter.batch_ids:
            entry = self._entries.get(batch_id)
            if (
                entry is None
                or entry.generation <= waiter.seen.get(batch_id, 0)
                or entry.started < waiter.asked - waiter.max_age
            ):
                return None
        return self._take(waiter)

    def _take(self, waiter: _Waiter) -> list[StatusResult | Exception]:
        answer: list[StatusResult | Exception] = []
        for batch_id in waiter.batch_ids:
            entry = self._entries.get(batch_id)
            if entry is None:
                answer.append(RuntimeError(f"batch {batch_id} is not watched on this status board"))
                continue
            waiter.seen[batch_id] = entry.generation
            answer.append(entry.error if entry.error is not None else entry.result)  # type: ignore[arg-type]
        return answer

    async def poll(
        self, batch_ids: list[str], seen: dict[str, int], max_age: float
    ) -> list[StatusResult | Exception]:
        """
        A status (or the error that prevented it) for each of ``batch_ids``, in order.

        :param batch_ids: watched ids (see :meth:`watch`) to answer for.
        :param seen: per id, the generation this caller saw last; updated in place. Each answer is newer.
        :param max_age: seconds; an answer from a refresh that started longer before this call is not used.
        """
        if self.closed:
            raise RuntimeError("this status board has stopped; get a new one with board_for()")
        waiter = _Waiter(list(batch_ids), seen, max_age, self.loop.create_future(), self.loop.time())
        answer = self._fresh(waiter)
        if answer is not None:
            return answer
        self._waiters.append(waiter)
        self._wake.set()
        try:
            return await waiter.future
        finally:
            if not waiter.future.done():  # cancelled: the trigger was stopped
                waiter.future.cancel()

    # -- the refresh task --------------------------------------------------------------------------

    async def _run(self) -> None:
        try:
            while self.watched:
                self._waiters = [w for w in self._waiters if not w.future.done()]
                due = [w for w in self._waiters if w.generation == 0]
                if not due:
                    self._wake.clear()
                    await self._wake.wait()
                    continue
                self.generation += 1
                for waiter in due:
                    waiter.generation = self.generation
                needed = {b for w in due for b in w.batch_ids if b in self.watched}
                try:
                    await self._refresh(self.generation, needed)
                except Exception as exc:  # a bug here must not strand the waiters: each gets the error
                    log.exception("Refreshing batch statuses failed")
                    for batch_id in needed & self.watched.keys():
                        self._entries[batch_id] = _Entry(self.generation, self.loop.time(), None, exc)
                self._answer()
        finally:
            self.closed = True
            per_loop = _boards.get(self.loop)
            if per_loop is not None and per_loop.get(id(self.client)) is self:
                del per_loop[id(self.client)]
                if not per_loop:
                    _boards.pop(self.loop, None)
            for waiter in self._waiters:
                if not waiter.future.done():
                    waiter.future.set_exception(RuntimeError("the status board stopped"))
            self._waiters.clear()

    def _answer(self) -> None:
        remaining = []
        for waiter in self._waiters:
            if waiter.future.done():
                continue
            answer = self._fresh(waiter)
            if answer is None and waiter.generation == self.generation:
                # Taken by this refresh: its answer is as fresh as it gets, even if the refresh took longer
                # than the waiter's max_age (or an id stopped being watched meanwhile).
                answer = self._take(waiter)
            if answer is None:
                waiter.generation = 0  # came in during the refresh and needs a newer one
                remaining.append(waiter)
            else:
                waiter.future.set_result(answer)
        self._waiters = remaining

    async def _refresh(self, generation: int, needed: set[str]) -> None:
        started = self.loop.time()
        self.refreshes += 1

        def record(batch_id: str, result: StatusResult | None = None, error: Exception | None = None) -> None:
            self._entries[batch_id] = _Entry(generation, started, result, error)

        try:
            await self._fetch(generation, needed, record)
        finally:
            # Keep what the pages said about batches nobody watches yet for one refresh only: a trigger that
            # registers next can use it, and memory stays bounded by the pages of one refresh.
            self._entries = {
                b: e for b, e in self._entries.items() if b in self.watched or e.generation == generation
            }

    async def _fetch(self, generation: int, needed: set[str], record: Callable[..., None]) -> None:
        """List pages (when coalescing), then retrieve the needed ids the pages did not have."""
        to_retrieve = set(needed)
        # Page only when a waiter needs a batch the pages can hold; old ones are retrieved either way.
        if self.coalescing and needed - self._old:
            missing = set(self.watched) - self._old
            after: str | None = None
            complete = True
            for _ in range(page_cap(len(missing))):
                if len(missing) < 2:
                    # One more page costs a request, as retrieving the last one does; do not mark it old.
                    complete = False
                    break
                try:
                    self.requests += 1
                    page = await self._list_page(after)
                except openai.APIStatusError as exc:
                    if exc.status_code not in LIST_UNSUPPORTED_HTTP_STATUSES:
                        for batch_id in to_retrieve:
                            record(batch_id, error=exc)
                        return
                    log.warning(
                        "Listing batches is not available here (HTTP %s); polling each batch with retrieve",
                        exc.status_code,
                    )
                    self.list_unsupported, complete = True, False
                    break
                except Exception as exc:
                    log.debug("Listing batches failed: %s: %s", type(exc).__name__, exc)
                    # The service is failing: every id not seen yet shares the error, no retrieves now.
                    for batch_id in to_retrieve:
                        record(batch_id, error=exc)
                    return
                for item in page["data"]:
                    batch_id = item.get("id")
                    if isinstance(batch_id, str):
                        record(batch_id, (batch_id, item.get("status"), item.get("request_counts") or {}))
                        missing.discard(batch_id)
                        to_retrieve.discard(batch_id)
                if not page["data"] or not page["has_more"]:
                    break
                after = page["data"][-1]["id"]
            if complete:
                # Not in the pages read: older than them, and only getting older as batches are created.
                self._old.update(missing)
        to_retrieve &= set(self.watched)
        if to_retrieve:
            ids = sorted(to_retrieve)
            self.requests += len(ids)
            results = await asyncio.gather(
                *(retrieve_status(self.client, b) for b in ids), return_exceptions=True
            )
            for batch_id, result in zip(ids, results, strict=True):
                if isinstance(result, BaseException) and not isinstance(result, Exception):
                    raise result
                if isinstance(result, Exception):
                    record(batch_id, error=result)
                else:
                    record(batch_id, result)

    async def _list_page(self, after: str | None) -> dict[str, Any]:
        options: dict[str, Any] = {"limit": LIST_PAGE_SIZE}
        if after is not None:
            options["after"] = after
        raw = await self.client.batches.with_raw_response.list(**options)
        data = json.loads(raw.content)
        items = data.get("data")
        if not isinstance(items, list):
            raise ValueError(f"Expected a list page with `data` but received keys {sorted(data)}")
        return {"data": [i for i in items if isinstance(i, dict)], "has_more": bool(data.get("has_more"))}


# Boards per event loop, keyed by the identity of the shared client (which the board holds, so the key
# cannot be reused while the board lives). A board removes itself when its task ends.
_boards: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[int, StatusBoard]] = (
    weakref.WeakKeyDictionary()
)


def board_for(client: openai.AsyncOpenAI) -> StatusBoard:
    """The running loop's board for this shared client, made on first use."""
    loop = asyncio.get_running_loop()
    per_loop = _boards.setdefault(loop, {})
    board = per_loop.get(id(client))
    if board is None or board.closed:
        board = StatusBoard(client=client, loop=loop)
        per_loop[id(client)] = board
    return board


def live_boards() -> list[StatusBoard]:
    """Every board not yet stopped, in every loop (for tests and benchmarks)."""
    return [b for per_loop in list(_boards.values()) for b in per_loop.values() if not b.closed]
