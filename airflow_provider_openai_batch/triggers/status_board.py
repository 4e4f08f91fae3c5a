"""One status board per event loop and shared client: a single task polls for every trigger and pushes news.

Each :class:`~airflow_provider_openai_batch.triggers.openai_batch.OpenAIBatchTrigger` subscribes its
batch ids and waits on :meth:`Subscription.next`; it never polls on its own clock. The board refreshes on
one cadence (the shortest poll interval of its subscribers; a batch whose triggers all poll less often is
fetched only when its own interval is up), plus early refreshes for new subscribers' first look, and wakes
exactly the triggers with news: a batch whose status changed (so a completion reaches its trigger on the
refresh that saw it), an error (each counts against that trigger's budget), a first answer, or request
counts that moved (at most every ``progress_log_interval``). The requests of a refresh are
:class:`~.refresh.Refresher`'s; the board keeps the subscriptions, the schedule, what each batch last
showed and the summary log. Wake-ups are handed out in chunks so that thousands of triggers finishing on
one refresh do not hold the event loop. The task stops when nobody subscribes.

Logging follows who a line is for. A batch's status lines are written by the trigger waiting on it, in its own
task, so Airflow files them in that trigger's log (the triggerer routes a line by the trigger id bound in the
logging context of the task that writes it). The board's own work (list pages, retrieves, the summary) is done
for every subscriber at once, so its task runs in an empty context: its lines go to the triggerer's own log,
once per refresh, labelled "Shared status board", instead of the log of whichever trigger subscribed first.
"""

from __future__ import annotations

import asyncio
import contextvars
import heapq
import itertools
import logging
import weakref
from collections import Counter
from dataclasses import dataclass, field

import openai

from airflow_provider_openai_batch.lifecycle.queue import RoomRequest
from airflow_provider_openai_batch.lifecycle.waiting import Looks, StatusResult
from airflow_provider_openai_batch.statuses import TERMINAL
from airflow_provider_openai_batch.triggers.list_map import ListMap
from airflow_provider_openai_batch.triggers.refresh import Refresher
from airflow_provider_openai_batch.triggers.room import RoomKeeper
from airflow_provider_openai_batch.triggers.settings import BoardSettings

log = logging.getLogger(__name__)

#: Triggers woken per event-loop turn: a turn stays a few milliseconds even when thousands finish at once.
NOTIFY_CHUNK = 200


@dataclass
class Entry:
    """The board's latest word on one batch, with its failed looks since the last success."""

    generation: int
    result: StatusResult | None = None
    error: Exception | None = None
    failures: int = 0
    ok_generation: int = 0  # the refresh of the last successful look


class Subscription:
    """One trigger's view of the board: :meth:`next` waits until the board has news for its batches."""

    def __init__(
        self,
        board: StatusBoard,
        batch_ids: list[str],
        poll_interval: float,
        first_due: float,
        room: RoomRequest | None = None,
    ):
        self.board = board
        self.batch_ids = list(batch_ids)
        self.poll_interval = poll_interval
        self.first_due = first_due
        #: A shard waiting for room in its model's queue, and whether the board has let it in.
        self.room = room
        self.admitted = False
        self.delivered: dict[str, int] = {}
        self.delivered_failures: dict[str, int] = {}
        self.last_wake = float("-inf")
        self.closed = False
        self._ready = asyncio.Event()

    async def next(self) -> tuple[list[str], list[StatusResult | Exception], list[Looks]]:
        """The batch ids with news and, in the same order, each one's status or the error fetching it, and
        what the board's looks at it came to since the last delivery."""
        while True:
            await self._ready.wait()
            self._ready.clear()
            ids = [b for b in self.batch_ids if self.board.entry_generation(b) > self.delivered.get(b, 0)]
            if ids or self.admitted:
                taken = [self.board.take(self, b) for b in ids]
                return ids, [answer for answer, _ in taken], [looks for _, looks in taken]
            if self.board.closed:
                raise RuntimeError("the status board stopped")

    def unwatch(self, batch_ids: list[str]) -> None:
        """Stop watching some batches (terminal ones): they leave the board when nobody else watches them."""
        gone = set(batch_ids) & set(self.batch_ids)
        self.batch_ids = [b for b in self.batch_ids if b not in gone]
        self.board._drop(self, gone)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.board.room.waiting.discard(self)
            self.unwatch(list(self.batch_ids))

    def _wake(self, now: float) -> None:
        self.last_wake = now
        self._ready.set()


@dataclass(eq=False)
class StatusBoard:
    """The statuses of every batch watched through one shared client in one event loop."""

    client: openai.AsyncOpenAI
    loop: asyncio.AbstractEventLoop
    settings: BoardSettings = field(default_factory=BoardSettings.from_conf)
    refreshes: int = 0
    closed: bool = False

    def __post_init__(self) -> None:
        self.refresher = Refresher(self.client, self.settings)
        self.generation = 0
        self._subs: dict[str, set[Subscription]] = {}
        self._entries: dict[str, Entry] = {}
        self._last_fetch: dict[str, float] = {}
        self._first: list[tuple[float, int, Subscription]] = []
        self._seq = itertools.count()
        self._next_tick: float | None = None
        self._sleeping_until = float("-inf")
        self._cadence_now = float("inf")
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._next_summary = self.loop.time() + self.settings.summary_log_interval
        self._summarized = (0, 0, 0)  # refreshes, pages, retrieves at the last summary
        # Shards waiting for room in a model's queue; who holds each queue; admissions per model.
        self.room: RoomKeeper[Subscription] = (
            RoomKeeper()
        )  # the subscriptions waiting for room in a model's queue

    # The refresher's counters and list map, read here by tests, benchmarks and the summary.
    @property
    def pages(self) -> int:
        return self.refresher.pages

    @property
    def retrieves(self) -> int:
        return self.refresher.retrieves

    @property
    def requests(self) -> int:
        return self.refresher.pages + self.refresher.retrieves

    @property
    def list_unsupported(self) -> bool:
        return self.refresher.list_unsupported

    @property
    def map(self) -> ListMap:
        return self.refresher.map

    @property
    def watched(self) -> dict[str, int]:
        """Batch id to how many subscriptions watch it."""
        return {b: len(s) for b, s in self._subs.items()}

    # -- subscriptions -------------------------------------------------------------------------------

    def subscribe(
        self,
        batch_ids: list[str],
        poll_interval: float,
        first_delay: float = 0.0,
        room: RoomRequest | None = None,
    ) -> Subscription:
        """Watch ``batch_ids``; the first answer comes about ``first_delay`` seconds from now.

        :param batch_ids: the batches to watch.
        :param poll_interval: seconds between refreshes of these batches, at most.
        :param first_delay: seconds until the first look (a jitter that spreads a triggerer restart).
        :param room: a shard waiting for room in its model's queue: the subscription is also woken, with
            ``admitted`` set, when the board lets it in (see :meth:`_admit`).
        """
        if self.closed:
            raise RuntimeError("this status board has stopped; get a new one with board_for()")
        now = self.loop.time()
        sub = Subscription(self, batch_ids, poll_interval, now + first_delay, room)
        for batch_id in sub.batch_ids:
            self._subs.setdefault(batch_id, set()).add(sub)
        if room is not None:
            self.room.waiting.add(sub)
        heapq.heappush(self._first, (sub.first_due, next(self._seq), sub))
        if self._next_tick is not None and now + poll_interval < self._next_tick:
            self._next_tick = now + poll_interval
        self._cadence_now = min(self._cadence_now, poll_interval)
        if min(sub.first_due + self._first_slack(), self._next_tick or sub.first_due) < self._sleeping_until:
            self._wake.set()  # only when the schedule moves: thousands registering must not spin the task
        if self._task is None:
            # Not the subscribing trigger's logging context: the board works for every trigger (module docstring).
            self._task = self.loop.create_task(
                self._run(), name=f"openai-batch-status-board-{id(self):x}", context=contextvars.Context()
            )
        return sub

    def _drop(self, sub: Subscription, batch_ids: set[str]) -> None:
        for batch_id in batch_ids:
            subs = self._subs.get(batch_id)
            if subs is None:
                continue
            subs.discard(sub)
            if not subs:
                del self._subs[batch_id]
                self._entries.pop(batch_id, None)
                self._last_fetch.pop(batch_id, None)
                self.map.forget([batch_id])
        if not self._subs and not self.room.waiting:
            self._wake.set()  # let the task see that it has nothing left to do

    def entry_generation(self, batch_id: str) -> int:
        entry = self._entries.get(batch_id)
        return 0 if entry is None else entry.generation

    def take(self, sub: Subscription, batch_id: str) -> tuple[StatusResult | Exception, Looks]:
        """The latest answer for ``sub``, and the looks since it last took one (a success in between and
        every failed look count, however late the trigger comes)."""
        entry = self._entries[batch_id]
        succeeded = entry.ok_generation > sub.delivered.get(batch_id, 0)
        seen = 0 if succeeded else sub.delivered_failures.get(batch_id, 0)
        sub.delivered[batch_id] = entry.generation
        sub.delivered_failures[batch_id] = entry.failures
        if entry.error is None:
            return entry.result, Looks(succeeded=True, failed=0)  # type: ignore[return-value]
        return entry.error, Looks(succeeded=succeeded, failed=entry.failures - seen)

    # -- the schedule --------------------------------------------------------------------------------

    def _cadence(self) -> float:
        intervals = [s.poll_interval for subs in self._subs.values() for s in subs]
        return min(intervals + [s.poll_interval for s in self.room.waiting], default=60.0)

    def _first_slack(self) -> float:
        """How long a first look may wait for others: a triggerer restart's thousands of registrations
        then share one refresh instead of one per second of their jitter."""
        return min(5.0, self._cadence_now / 2)

    async def _run(self) -> None:
        try:
            while self._subs or self.room.waiting:
                now = self.loop.time()
                while self._first and self._first[0][2].closed:
                    heapq.heappop(self._first)
                first_at = self._first[0][0] + self._first_slack() if self._first else None
                wake_at = min([t for t in (self._next_tick, first_at) if t is not None], default=None)
                if wake_at is None or wake_at > now:
                    self._wake.clear()
                    self._sleeping_until = float("inf") if wake_at is None else wake_at
                    timeout = None if wake_at is None else wake_at - now
                    try:
                        await asyncio.wait_for(self._wake.wait(), timeout)
                    except TimeoutError:
                        pass
                    continue
                await self._cycle(now)
                self._summary()
        finally:
            self._close()

    async def _cycle(self, now: float) -> None:
        """One round: fetch what is due, then wake the subscribers with news."""
        cadence = self._cadence_now = self._cadence()
        first: list[Subscription] = []
        while self._first and self._first[0][0] <= now:
            sub = heapq.heappop(self._first)[2]
            if not sub.closed:
                first.append(sub)
        fetch: set[str] = set()
        if self._next_tick is not None and now >= self._next_tick:
            for batch_id, subs in self._subs.items():
                last = self._last_fetch.get(batch_id)
                if last is None or self._is_terminal(batch_id):
                    continue
                interval = min(s.poll_interval for s in subs)
                if now + cadence > last + interval - 1e-3:  # the next tick would be too late
                    fetch.add(batch_id)
            self._next_tick = max(self._next_tick + cadence, now + cadence / 2)
        for sub in first:
            for batch_id in sub.batch_ids:
                last = self._last_fetch.get(batch_id)
                if not self._is_terminal(batch_id) and (last is None or last < now - sub.poll_interval):
                    fetch.add(batch_id)
        changed: dict[str, str] = {}
        if fetch:
            changed = await self._refresh(fetch, now)
            if self._next_tick is None:
                self._next_tick = now + cadence
        if self.room.waiting:
            if self._next_tick is None:
                self._next_tick = now + cadence
            await self._admit()
        await self._notify(changed, first)

    def _is_terminal(self, batch_id: str) -> bool:
        entry = self._entries.get(batch_id)
        return entry is not None and entry.result is not None and entry.result[1] in TERMINAL

    async def _notify(self, changed: dict[str, str], first: list[Subscription]) -> None:
        """Wake the subscribers with news, a chunk per event-loop turn."""
        now = self.loop.time()
        progress_due = now - self.settings.progress_log_interval
        to_wake: dict[int, Subscription] = {id(s): s for s in first if not s.closed}
        for batch_id, kind in changed.items():
            for sub in self._subs.get(batch_id, ()):
                if kind != "counts" or sub.last_wake <= progress_due or batch_id not in sub.delivered:
                    to_wake[id(sub)] = sub
        for n, sub in enumerate(to_wake.values(), 1):
            sub._wake(now)
            if n % NOTIFY_CHUNK == 0:
                await asyncio.sleep(0)

    # -- room in a model's queue ---------------------------------------------------------------------

    async def _admit(self) -> None:
        """Wake the waiting shards the room keeper lets into their model's queue (see :mod:`.room`)."""
        for sub in await self.room.let_in(self.client, self.settings.list_page_size, self.refresher):
            sub._wake(self.loop.time())

    # -- one refresh ---------------------------------------------------------------------------------

    async def _refresh(self, fetch: set[str], started: float) -> dict[str, str]:
        """Fetch statuses for ``fetch`` (and whatever else the pages hold); what changed, and how."""
        self.generation += 1
        self.refreshes += 1
        changed: dict[str, str] = {}

        def record(batch_id: str, result: StatusResult | None = None, error: Exception | None = None) -> None:
            if batch_id not in self._subs:
                return
            old = self._entries.get(batch_id)
            if error is not None:
                changed[batch_id] = "error"
            elif old is None or old.result is None or old.result[1] != result[1]:  # type: ignore[index]
                changed[batch_id] = "status"
            elif old.result[2] != result[2]:  # type: ignore[index]
                changed.setdefault(batch_id, "counts")
            if error is None:
                self._entries[batch_id] = Entry(self.generation, result, ok_generation=self.generation)
            else:
                failures, ok = (0, 0) if old is None else (old.failures, old.ok_generation)
                self._entries[batch_id] = Entry(self.generation, None, error, failures + 1, ok)
            self._last_fetch[batch_id] = started

        pages, retrieves = self.pages, self.retrieves
        try:
            await self.refresher.fetch(sorted(fetch), record)
        except Exception as exc:  # a bug here must not strand the triggers: each gets the error
            log.exception("Shared status board: refreshing batch statuses failed")
            for batch_id in fetch:
                record(batch_id, error=exc)
        log.info(
            "Shared status board refresh %d: %d batch(es) due, %d list page(s), %d retrieve(s), %d with news",
            self.refreshes,
            len(fetch),
            self.pages - pages,
            self.retrieves - retrieves,
            len(changed),
        )
        return changed

    # -- logging and shutdown ------------------------------------------------------------------------

    def _summary(self) -> None:
        now = self.loop.time()
        if now < self._next_summary:
            return
        self._next_summary = now + self.settings.summary_log_interval
        statuses = Counter(e.result[1] if e.result else "error" for e in self._entries.values())
        n_subs = len({id(s) for subs in self._subs.values() for s in subs})
        totals = (self.refreshes, self.pages, self.retrieves)
        refreshes, pages, retrieves = (t - s for t, s in zip(totals, self._summarized, strict=True))
        self._summarized = totals
        log.info(
            "Shared status board: %d trigger(s) watching %d batch(es) (%s); since the last summary %d refresh(es), "
            "%d list page(s), %d retrieve(s); list positions known for %d batch(es)",
            n_subs,
            len(self._subs),
            ", ".join(f"{k}={v}" for k, v in sorted(statuses.items())) or "none fetched yet",
            refreshes,
            pages,
            retrieves,
            sum(1 for b in self._subs if b in self.map),
        )

    def _close(self) -> None:
        self.closed = True
        per_loop = _boards.get(self.loop)
        if per_loop is not None and per_loop.get(id(self.client)) is self:
            del per_loop[id(self.client)]
            if not per_loop:
                _boards.pop(self.loop, None)
        for subs in list(self._subs.values()):
            for sub in subs:
                sub._ready.set()  # a waiting subscriber sees `closed` and raises


# Boards per event loop, keyed by the identity of the shared client (which the board holds, so the key
# cannot be reused while the board lives). A board removes itself when its task ends.
_boards: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[int, StatusBoard]] = (
    weakref.WeakKeyDictionary()
)


def board_for(client: openai.AsyncOpenAI) -> StatusBoard:
    """The running loop's board for this shared client, made (with the current settings) on first use."""
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
