"""The API's answers for the batch pages, cached per connection: one listing per connection per refresh.

A page view never asks the API about one batch: it takes the connection's last listing when it is younger than
``[openai_batch] page_refresh_seconds``, else lists batches newest first (``GET /batches``, 100 per page) until
every batch it needs is seen or the list ends, and keeps that as the connection's snapshot with its time. Views
arriving during a refresh wait for it instead of starting their own. A failed refresh keeps the last snapshot
and says why (the error's type only: a message could hold a URL with a key).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from airflow_provider_openai_batch.hooks.openai_batch import OpenAIBatchHook
from airflow_provider_openai_batch.version_compat import conf

CONFIG_SECTION = "openai_batch"

#: ``lister(conn_id, max_pages)`` yields batches (dicts or ``openai.types.Batch``) newest first.
Lister = Callable[[str, int], Iterable[Any]]


def _hook_lister(conn_id: str, max_pages: int) -> Iterator[dict[str, Any]]:
    yield from OpenAIBatchHook(openai_conn_id=conn_id).iter_batches(max_pages=max_pages)


@dataclass
class Snapshot:
    """What one listing of a connection saw, and when."""

    batches: dict[str, dict[str, Any]] = field(default_factory=dict)
    as_of: float | None = None
    error: str | None = None
    listings: int = 0


class BatchCache:
    """Snapshots of each connection's batches, refreshed at most every ``ttl`` seconds."""

    def __init__(self, lister: Lister = _hook_lister, ttl: float | None = None, max_pages: int | None = None):
        self._lister = lister
        self._ttl = ttl
        self._max_pages = max_pages
        self._snapshots: dict[str, Snapshot] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()

    @property
    def ttl(self) -> float:
        if self._ttl is not None:
            return self._ttl
        return float(conf.getfloat(CONFIG_SECTION, "page_refresh_seconds", fallback=30.0))

    @property
    def max_pages(self) -> int:
        if self._max_pages is not None:
            return self._max_pages
        return int(conf.getint(CONFIG_SECTION, "max_list_pages", fallback=100))

    def snapshot(self, conn_id: str, wanted: Iterable[str], now: float | None = None) -> Snapshot:
        """The connection's batches, refreshed first when the snapshot is older than the TTL.

        :param conn_id: the connection the batches run on.
        :param wanted: batch ids the view shows; a refresh lists until it has seen them all.
        """
        wanted = set(wanted)
        with self._guard:
            lock = self._locks.setdefault(conn_id, threading.Lock())
        with lock:  # one refresh per connection at a time; the others wait and take its result
            current = self._snapshots.get(conn_id) or Snapshot()
            now = time.time() if now is None else now
            if current.as_of is not None and now - current.as_of < self.ttl:
                return current
            fresh = self._refresh(conn_id, wanted, current)
            self._snapshots[conn_id] = fresh
            return fresh

    def _refresh(self, conn_id: str, wanted: set[str], current: Snapshot) -> Snapshot:
        """List until every wanted batch is seen; the snapshot is as of the listing's end (the TTL counts from
        there, so a slow listing is not followed at once by another)."""
        seen: dict[str, dict[str, Any]] = {}
        try:
            for batch in self._lister(conn_id, self.max_pages):
                seen[batch["id"]] = batch
                if wanted <= seen.keys():
                    break
        except Exception as err:  # keep what we had: a page is better stale (and saying so) than empty
            failed = f"listing failed: {type(err).__name__}"
            return Snapshot(current.batches, time.time(), failed, current.listings + 1)
        return Snapshot(seen, time.time(), None, current.listings + 1)


#: The API server's one cache (a process serves every view from it).
CACHE = BatchCache()
