"""The requests of one status-board refresh: the reads that answer a set of watched batches, made concurrently.

:class:`Refresher` follows what :class:`~.list_map.ListMap` plans (list pages anchored next to runs of
watched batches, retrieves for batches alone, pages read down from the top only for batches whose place in
the list is not known yet), keeps the map and the request counts between refreshes, and hands every status
or error it gets to the caller's ``record`` callback, so that :mod:`.status_board` alone decides what is
news and whom to wake; it lives apart so that each of the two reads in one sitting. With
``[openai_batch] coalesce = False``, or once ``GET /batches`` answers 403/404/405/501, every batch is
retrieved on its own.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import openai

from airflow_provider_openai_batch.lifecycle.waiting import PermanentPollError, StatusResult
from airflow_provider_openai_batch.statuses import PERMANENT_POLL_HTTP_STATUSES
from airflow_provider_openai_batch.triggers.list_map import ListMap, Window
from airflow_provider_openai_batch.triggers.settings import BoardSettings

__all__ = [
    "CONCURRENCY",
    "LIST_UNSUPPORTED_HTTP_STATUSES",
    "Record",
    "Refresher",
    "list_page",
    "retrieve_status",
]

log = logging.getLogger(__name__)

#: HTTP statuses of ``GET /batches`` meaning this endpoint or key cannot list (a gateway that only routes
#: retrieve, a key without the permission): the board retrieves each batch from then on.
LIST_UNSUPPORTED_HTTP_STATUSES = frozenset({403, 404, 405, 501})
#: Requests one refresh keeps in flight (the shared client pools 50 connections).
CONCURRENCY = 32

#: ``record(batch_id, result=None, error=None)``: where a refresh hands each status (or error) it gets.
Record = Callable[..., None]


async def retrieve_status(client: openai.AsyncOpenAI, batch_id: str) -> StatusResult:
    """One ``GET /batches/{id}``, reading only ``status`` and ``request_counts`` from the raw JSON.

    :param client: the shared async client.
    :param batch_id: the batch to retrieve.
    """
    try:
        raw = await client.batches.with_raw_response.retrieve(batch_id)
    except openai.APIStatusError as exc:
        if exc.status_code in PERMANENT_POLL_HTTP_STATUSES:
            raise PermanentPollError(f"batch {batch_id}: HTTP {exc.status_code} {exc.message}") from exc
        raise
    data = json.loads(raw.content)
    return batch_id, data.get("status"), data.get("request_counts") or {}


async def list_page(
    client: openai.AsyncOpenAI, after: str | None, limit: int
) -> tuple[list[dict[str, Any]], bool]:
    """One ``GET /batches`` page as raw dicts (newest first) and whether more follow.

    :param client: the shared async client.
    :param after: the id the page starts below; None for the top page.
    :param limit: items per page.
    """
    options: dict[str, Any] = {"limit": limit} if after is None else {"limit": limit, "after": after}
    raw = await client.batches.with_raw_response.list(**options)
    data = json.loads(raw.content)
    items = data.get("data")
    if not isinstance(items, list):
        raise ValueError(
            f"Expected a list page with `data` from GET /batches but received keys {sorted(data)}"
        )
    return [i for i in items if isinstance(i, dict) and isinstance(i.get("id"), str)], bool(
        data.get("has_more")
    )


class Refresher:
    """Fetches statuses through one shared client for its board, remembering the list's order between refreshes.

    :param client: the shared async client.
    :param settings: the board's settings (coalescing, list page size, how deep the map reaches).
    """

    def __init__(self, client: openai.AsyncOpenAI, settings: BoardSettings):
        self.client = client
        self.settings = settings
        self.map = ListMap(settings.list_page_size, settings.max_list_pages)
        self.pages = 0
        self.retrieves = 0
        #: ``GET /batches`` answered that it cannot list here: every batch is retrieved from then on.
        self.list_unsupported = False

    async def fetch(self, batch_ids: list[str], record: Record) -> None:
        """Fetch the statuses of ``batch_ids`` (and record whatever else the pages read hold).

        :param batch_ids: the batches due, sorted.
        :param record: called with each batch's status, or with ``error=`` when fetching it failed.
        """
        if not self.settings.coalesce or self.list_unsupported:
            await self._gather([self._retrieve_job(b, record) for b in batch_ids])
            return
        plan = self.map.plan(batch_ids)
        windows = list(plan.windows)
        retrieves = list(plan.retrieves)
        discover = bool(plan.unknown) and self.map.should_discover(0, len(plan.unknown))
        if not discover:
            retrieves += plan.unknown
        top = next((w for w in windows if w.anchor is None), None)
        if discover and top is not None:
            windows.remove(top)  # discovery reads the top page anyway
        jobs = [self._window_job(w, record) for w in windows]
        jobs += [self._retrieve_job(b, record) for b in retrieves]
        if discover:
            jobs.append(self._discover(set(plan.unknown), record, top.expected if top else ()))
        await self._gather(jobs)

    async def _gather(self, jobs: Sequence[Awaitable[None]]) -> None:
        """Run the jobs with at most :data:`CONCURRENCY` in flight (discovery counts as one)."""
        queue = iter(jobs)

        async def worker() -> None:
            for job in queue:
                await job

        await asyncio.gather(*(worker() for _ in range(min(CONCURRENCY, len(jobs)))))

    async def _retrieve_job(self, batch_id: str, record: Record) -> None:
        self.retrieves += 1
        try:
            record(batch_id, await retrieve_status(self.client, batch_id))
        except Exception as exc:
            record(batch_id, error=exc)

    async def _page(self, after: str | None, record: Record) -> tuple[list[str], bool]:
        """One list page; records every batch on it (the board keeps the watched ones) and returns its ids."""
        self.pages += 1
        items, has_more = await list_page(self.client, after, self.settings.list_page_size)
        ids = []
        for item in items:
            batch_id = item["id"]
            ids.append(batch_id)
            record(batch_id, (batch_id, item.get("status"), item.get("request_counts") or {}))
        return ids, has_more

    def _list_failed(self, exc: Exception) -> bool:
        """True when the endpoint cannot list at all: switch to retrieves for good (logged once)."""
        if isinstance(exc, openai.APIStatusError) and exc.status_code in LIST_UNSUPPORTED_HTTP_STATUSES:
            if not self.list_unsupported:
                log.warning(
                    "Shared status board: listing batches is not available here (HTTP %s); retrieving each batch",
                    exc.status_code,
                )
            self.list_unsupported = True
            return True
        log.debug("Shared status board: listing batches failed: %s: %s", type(exc).__name__, exc)
        return False

    async def _window_job(self, window: Window, record: Record) -> None:
        try:
            ids, has_more = await self._page(window.anchor, record)
        except Exception as exc:
            if self._list_failed(exc):
                await self._gather([self._retrieve_job(b, record) for b in window.expected])
            else:
                for batch_id in window.expected:
                    record(batch_id, error=exc)
            return
        missing = set(window.expected) - set(ids)
        if window.anchor is None:
            # The top page moves as batches are created: learn it, and retrieve what moved off it.
            self.map.learn_top(ids, has_more)
            await self._gather([self._retrieve_job(b, record) for b in sorted(missing)])
        elif missing:  # the list is not what the map says: start the map over, and answer these directly
            log.warning(
                "Shared status board: the list page after %s lacked %d expected batch(es); re-reading the list",
                window.anchor,
                len(missing),
            )
            self.map.reset()
            await self._gather([self._retrieve_job(b, record) for b in sorted(missing)])

    async def _discover(self, unknown: set[str], record: Record, top: Sequence[str] = ()) -> None:
        """Find batches whose place is unknown: read down from the top to the known stretch, then below it.

        :param top: known batches expected on the top page (read here anyway).
        """
        judged = set(unknown)  # watched before this refresh started: they existed during every read
        top_left = set(top)  # the top page normally has them; if not, they are retrieved below
        pages, chain, after = 0, [], None
        try:
            while True:  # from the top until the pages reach the known stretch
                ids, has_more = await self._page(after, record)
                pages += 1
                unknown.difference_update(ids)
                top_left.difference_update(ids)
                chain.extend(ids)
                reached = any(b in self.map for b in ids)
                if (
                    reached
                    or not has_more
                    or not ids
                    or len(chain) >= self.map.max_pages * self.map.page_size
                    or (len(self.map) == 0 and not self.map.should_discover(pages, len(unknown)))
                ):
                    break
                after = ids[-1]
            self.map.learn_top(chain, has_more)
            from_top = True
            while not self.map.end_reached and self.map.should_discover(pages, len(unknown)):
                anchor = self.map.tail_id
                if anchor is None:
                    break
                ids, has_more = await self._page(anchor, record)
                pages += 1
                unknown.difference_update(ids)
                if not self.map.learn_after(anchor, ids, has_more):
                    from_top = False
                    break
            self.map.judge_missing(judged & unknown, read_from_top=from_top)
        except Exception as exc:
            if not self._list_failed(exc):
                for batch_id in unknown | top_left:
                    record(batch_id, error=exc)
                return
        # Older than discovery reached this time, not listed, or pushed off the top page: ask for each.
        await self._gather([self._retrieve_job(b, record) for b in sorted(unknown | top_left)])
