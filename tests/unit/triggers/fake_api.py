"""A scripted Batch API over httpx's mock transport, shared by the trigger and status board tests."""

from __future__ import annotations

import asyncio
import json
from collections import defaultdict

import httpx2
import pytest

from airflow_provider_openai_batch.hooks import clients as clients_module
from tests.support.builders import batch

API_KEY = "sk-trigger-test-DO-NOT-LEAK-42"
CONN_ID = "openai_trigger_test"


@pytest.fixture
def openai_connection(monkeypatch):
    """An ``openai_batch`` connection in the environment, and a fresh shared-client cache."""
    clients_module.clear_async_client_cache()
    conn = {
        "conn_type": "openai_batch",
        "password": API_KEY,
        "host": "http://openai.test/v1",
        # The client's own retries would add seconds of back-off; the trigger's error budget is under test.
        "extra": {"max_retries": 0},
    }
    monkeypatch.setenv(f"AIRFLOW_CONN_{CONN_ID.upper()}", json.dumps(conn))
    yield
    clients_module.clear_async_client_cache()


def batch_json(batch_id: str, status: str, completed: int = 4) -> dict:
    return batch(batch_id, status, counts=(10, completed, 1))


class FakeBatches:
    """A scripted Batch API: each look at a batch returns the next item of its script (the last one repeats).

    A script item is a status string, a ``(status, completed)`` pair, an int (an HTTP error status) or an
    exception to raise. A look is a ``GET /batches/{id}`` (counted in ``gets``) or the batch appearing in a
    ``GET /batches`` page (counted in ``listed``). Pages are newest first; the newest batch is the last key
    of ``scripts``, and ``others`` (in progress, nobody watches them) sit above all of them. Only the newest
    ``list_window`` batches appear in the list (all when None). ``list_script`` scripts the list requests
    themselves: ``None`` serves the page, an int or exception fails it; the last item repeats. While
    ``hold_lists`` is cleared, list requests wait for it (to stage a registration during a refresh).
    """

    def __init__(
        self,
        monkeypatch,
        scripts: dict[str, list],
        cancel_status: dict[str, int] | None = None,
        list_window: int | None = None,
        list_script: list | None = None,
        others: int = 0,
    ) -> None:
        self.scripts = scripts
        self.others = [f"other_{i}" for i in range(others)]
        self.cancel_status = cancel_status or {}
        self.list_window = list_window
        self.list_script = list_script or [None]
        self.looks: dict[str, int] = defaultdict(int)
        self.gets: dict[str, int] = defaultdict(int)
        self.listed: dict[str, int] = defaultdict(int)
        self.lists = 0
        self.list_afters: list[str | None] = []
        self.requests = 0
        self.cancels: list[str] = []
        self.hold_lists: asyncio.Event | None = None
        self.list_asked = asyncio.Event()
        self.ids = self.others + list(reversed(scripts))
        monkeypatch.setattr(
            clients_module,
            "_new_async_http_client",
            lambda: httpx2.AsyncClient(transport=httpx2.MockTransport(self.handle)),
        )

    def create(self, batch_id: str, script: list | None = None) -> None:
        """A batch created now: it goes on top of the list (``None``: someone else's, in progress)."""
        if script is not None:
            self.scripts[batch_id] = script
        self.ids.insert(0, batch_id)

    def order(self) -> list[str]:
        return self.ids[: self.list_window]

    def next_item(self, batch_id: str):
        script = self.scripts[batch_id]
        item = script[min(self.looks[batch_id], len(script) - 1)]
        self.looks[batch_id] += 1
        return item

    async def handle(self, request: httpx2.Request) -> httpx2.Response:
        assert request.headers["authorization"] == f"Bearer {API_KEY}"
        self.requests += 1
        parts = request.url.path.strip("/").split("/")  # v1/batches[/<id>[/cancel]]
        if request.method == "GET" and len(parts) == 2:
            if self.hold_lists is not None:
                self.list_asked.set()
                await self.hold_lists.wait()
            return self.handle_list(request)
        batch_id = parts[2]
        if request.method == "POST" and parts[-1] == "cancel":
            self.cancels.append(batch_id)
            code = self.cancel_status.get(batch_id, 200)
            if code != 200:
                return httpx2.Response(code, json={"error": {"message": "cancel failed"}})
            return httpx2.Response(200, json=batch_json(batch_id, "cancelling"))
        if batch_id not in self.scripts:
            return httpx2.Response(404, json={"error": {"message": f"No batch found with id '{batch_id}'"}})
        item = self.next_item(batch_id)
        self.gets[batch_id] += 1
        if isinstance(item, BaseException):
            raise item
        if isinstance(item, int):
            return httpx2.Response(item, json={"error": {"message": f"HTTP {item}"}})
        return httpx2.Response(
            200, json=batch_json(batch_id, *item) if isinstance(item, tuple) else batch_json(batch_id, item)
        )

    def handle_list(self, request: httpx2.Request) -> httpx2.Response:
        item = self.list_script[min(self.lists, len(self.list_script) - 1)]
        self.lists += 1
        after = request.url.params.get("after")
        self.list_afters.append(after)
        if isinstance(item, BaseException):
            raise item
        if isinstance(item, int):
            return httpx2.Response(item, json={"error": {"message": f"HTTP {item}"}})
        ids = self.order()
        start = ids.index(after) + 1 if after else 0
        limit = int(request.url.params.get("limit", 20))
        page = ids[start : start + limit]
        data = []
        for batch_id in page:
            if batch_id not in self.scripts:
                data.append(batch_json(batch_id, "in_progress"))
                continue
            status = self.next_item(batch_id)
            assert not isinstance(status, int | BaseException), "list pages serve scripted statuses only"
            self.listed[batch_id] += 1
            data.append(
                batch_json(batch_id, *status) if isinstance(status, tuple) else batch_json(batch_id, status)
            )
        body = {"object": "list", "data": data, "has_more": start + limit < len(ids)}
        if page:
            body.update(first_id=page[0], last_id=page[-1])
        return httpx2.Response(200, json=body)
