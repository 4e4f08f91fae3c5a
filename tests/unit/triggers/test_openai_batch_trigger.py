from __future__ import annotations

import asyncio
import json
import time
from collections import defaultdict

import httpx2
import pytest
from airflow.sdk import BaseHook, Connection
from airflow.triggers.base import TriggerEvent

from airflow_provider_openai_batch.hooks import openai_batch as hook_module
from airflow_provider_openai_batch.triggers import status_board
from airflow_provider_openai_batch.triggers.openai_batch import (
    TERMINAL_BATCH_STATUSES,
    OpenAIBatchTrigger,
    TriggerStatus,
)

API_KEY = "sk-trigger-test-DO-NOT-LEAK-42"
CONN_ID = "openai_trigger_test"


@pytest.fixture(autouse=True)
def _connection(monkeypatch):
    hook_module.clear_async_client_cache()
    conn = {
        "conn_type": "openai_batch",
        "password": API_KEY,
        "host": "http://openai.test/v1",
        # The client's own retries would add seconds of back-off; the trigger's error budget is under test.
        "extra": {"max_retries": 0},
    }
    monkeypatch.setenv(f"AIRFLOW_CONN_{CONN_ID.upper()}", json.dumps(conn))
    yield
    hook_module.clear_async_client_cache()


def batch_json(batch_id: str, status: str) -> dict:
    return {
        "id": batch_id,
        "object": "batch",
        "endpoint": "/v1/chat/completions",
        "input_file_id": "file-in",
        "completion_window": "24h",
        "status": status,
        "created_at": 1700000000,
        "request_counts": {"total": 10, "completed": 4, "failed": 1},
    }


class FakeBatches:
    """A scripted Batch API: each look at a batch returns the next item of its script (the last one repeats).

    A script item is a status string, an int (an HTTP error status) or an exception to raise. A look is a
    ``GET /batches/{id}`` (counted in ``gets``) or the batch appearing in a ``GET /batches`` page (counted in
    ``listed``). Pages are newest first; the newest batch is the last key of ``scripts``. Only the newest
    ``list_window`` batches appear in the list (all when None). ``list_script`` scripts the list requests
    themselves: ``None`` serves the page, an int or exception fails it; the last item repeats.
    """

    def __init__(
        self,
        monkeypatch,
        scripts: dict[str, list],
        cancel_status: dict[str, int] | None = None,
        list_window: int | None = None,
        list_script: list | None = None,
    ) -> None:
        self.scripts = scripts
        self.cancel_status = cancel_status or {}
        self.list_window = list_window
        self.list_script = list_script or [None]
        self.looks: dict[str, int] = defaultdict(int)
        self.gets: dict[str, int] = defaultdict(int)
        self.listed: dict[str, int] = defaultdict(int)
        self.lists = 0
        self.requests = 0
        self.cancels: list[str] = []
        monkeypatch.setattr(
            hook_module,
            "_new_async_http_client",
            lambda: httpx2.AsyncClient(transport=httpx2.MockTransport(self.handle)),
        )

    def next_item(self, batch_id: str):
        script = self.scripts[batch_id]
        item = script[min(self.looks[batch_id], len(script) - 1)]
        self.looks[batch_id] += 1
        return item

    def handle(self, request: httpx2.Request) -> httpx2.Response:
        assert request.headers["authorization"] == f"Bearer {API_KEY}"
        self.requests += 1
        parts = request.url.path.strip("/").split("/")  # v1/batches[/<id>[/cancel]]
        if request.method == "GET" and len(parts) == 2:
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
        return httpx2.Response(200, json=batch_json(batch_id, item))

    def handle_list(self, request: httpx2.Request) -> httpx2.Response:
        item = self.list_script[min(self.lists, len(self.list_script) - 1)]
        self.lists += 1
        if isinstance(item, BaseException):
            raise item
        if isinstance(item, int):
            return httpx2.Response(item, json={"error": {"message": f"HTTP {item}"}})
        ids = list(reversed(self.scripts))[: self.list_window]
        after = request.url.params.get("after")
        start = ids.index(after) + 1 if after else 0
        limit = int(request.url.params.get("limit", 20))
        page = ids[start : start + limit]
        data = []
        for batch_id in page:
            status = self.next_item(batch_id)
            assert isinstance(status, str), "list pages serve scripted statuses only"
            self.listed[batch_id] += 1
            data.append(batch_json(batch_id, status))
        body = {"object": "list", "data": data, "has_more": start + limit < len(ids)}
        if page:
            body.update(first_id=page[0], last_id=page[-1])
        return httpx2.Response(200, json=body)


@pytest.fixture
def no_coalescing(monkeypatch):
    """Every trigger retrieves its own batches, as before the status board (the feature switched off)."""
    monkeypatch.setattr(status_board, "COALESCE_MIN_BATCHES", None)


def make_trigger(batch_ids, **kwargs) -> OpenAIBatchTrigger:
    kwargs.setdefault("poll_interval", 0.01)
    kwargs.setdefault("first_poll_jitter", 0)
    return OpenAIBatchTrigger(batch_ids=batch_ids, openai_conn_id=CONN_ID, **kwargs)


def run_trigger(trigger: OpenAIBatchTrigger, timeout: float = 10) -> list[TriggerEvent]:
    async def collect():
        return [event async for event in trigger.run()]

    return asyncio.run(asyncio.wait_for(collect(), timeout))


# -- serialization -------------------------------------------------------------------------------------


def test_serialize_round_trip():
    trigger = OpenAIBatchTrigger(
        batch_ids=["batch_a", "batch_b"],
        openai_conn_id="my_conn",
        poll_interval=30,
        deadline=1_900_000_000.5,
        max_consecutive_errors=7,
        first_poll_jitter=2,
        context={"rounds": [["batch_a", "batch_b"]], "phase": "run"},
    )
    classpath, kwargs = trigger.serialize()
    assert classpath == "airflow_provider_openai_batch.triggers.openai_batch.OpenAIBatchTrigger"
    assert json.loads(json.dumps(kwargs)) == kwargs  # JSON-safe primitives only
    assert kwargs == {
        "batch_ids": ["batch_a", "batch_b"],
        "openai_conn_id": "my_conn",
        "poll_interval": 30.0,
        "deadline": 1_900_000_000.5,
        "max_consecutive_errors": 7,
        "first_poll_jitter": 2.0,
        "context": {"rounds": [["batch_a", "batch_b"]], "phase": "run"},
    }
    assert OpenAIBatchTrigger(**kwargs).serialize() == (classpath, kwargs)


def test_kwargs_from_an_older_serialization_still_load():
    trigger = OpenAIBatchTrigger(batch_ids=["batch_a"], openai_conn_id="c", poll_interval=60)
    _, kwargs = trigger.serialize()
    assert kwargs["deadline"] is None and kwargs["max_consecutive_errors"] == 5


@pytest.mark.parametrize(
    "kwargs",
    [
        {"batch_ids": []},
        {"batch_ids": ["ok", ""]},
        {"batch_ids": ["ok"], "poll_interval": 0},
        {"batch_ids": ["ok"], "max_consecutive_errors": 0},
        {"batch_ids": ["ok"], "first_poll_jitter": -1},
    ],
)
def test_invalid_arguments_are_rejected(kwargs):
    with pytest.raises(ValueError, match="Expected"):
        OpenAIBatchTrigger(**kwargs)


# -- polling -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("coalesce", [True, False], ids=["coalesced", "retrieve"])
def test_polls_through_statuses_to_one_terminal_event(monkeypatch, capsys, coalesce):
    if not coalesce:
        monkeypatch.setattr(status_board, "COALESCE_MIN_BATCHES", None)
    fake = FakeBatches(
        monkeypatch,
        {
            "batch_a": ["validating", "in_progress", "finalizing", "completed"],
            "batch_b": ["in_progress", "expired"],
        },
    )
    trigger = make_trigger(["batch_a", "batch_b"])
    trigger.context = {"phase": "run"}
    events = run_trigger(trigger)
    assert len(events) == 1
    assert events[0].payload == {
        "status": "terminal",
        "batch_ids": ["batch_a", "batch_b"],
        "batches": {"batch_a": "completed", "batch_b": "expired"},
        "message": "All batches are terminal: batch_a=completed, batch_b=expired",
        "context": {"phase": "run"},
    }
    if coalesce:
        # One list page per round while two batches are watched; once batch_b is terminal only batch_a
        # is left, and one batch is retrieved directly.
        assert (fake.lists, dict(fake.gets)) == (2, {"batch_a": 2})
    else:
        # A terminal batch is not polled again.
        assert fake.gets == {"batch_a": 4, "batch_b": 2}
    out = capsys.readouterr().out
    assert "Batch batch_a in_progress 4/10 completed, 1 failed" in out
    assert API_KEY not in out


def test_transient_errors_below_the_budget_are_tolerated(monkeypatch):
    fake = FakeBatches(
        monkeypatch,
        {"batch_a": [500, 429, httpx2.ConnectError("connection refused"), "in_progress", 503, "completed"]},
    )
    events = run_trigger(make_trigger(["batch_a"], max_consecutive_errors=4))
    assert events[0].payload["status"] == TriggerStatus.TERMINAL == "terminal"
    assert events[0].payload["batches"] == {"batch_a": "completed"}
    assert fake.gets["batch_a"] == 6
    assert fake.lists == 0  # a single batch is retrieved directly, never through list pages


def test_too_many_consecutive_errors_give_an_error_event(monkeypatch):
    FakeBatches(monkeypatch, {"batch_a": ["in_progress", 500, 502, 503, "completed"]})
    events = run_trigger(make_trigger(["batch_a"], max_consecutive_errors=3))
    assert len(events) == 1
    payload = events[0].payload
    assert payload["status"] == "error"
    assert payload["batches"] == {"batch_a": "in_progress"}
    assert "failed 3 consecutive times" in payload["message"]
    assert API_KEY not in payload["message"]


def test_unknown_batch_is_an_immediate_error(monkeypatch):
    fake = FakeBatches(monkeypatch, {"batch_a": [404]})
    events = run_trigger(make_trigger(["batch_a"], max_consecutive_errors=5))
    assert events[0].payload["status"] == "error"
    assert "HTTP 404" in events[0].payload["message"]
    assert fake.gets["batch_a"] == 1


def test_unknown_status_is_logged_and_not_terminal(monkeypatch, capsys):
    FakeBatches(monkeypatch, {"batch_a": ["paused", "paused", "completed"]})
    events = run_trigger(make_trigger(["batch_a"]))
    assert events[0].payload["status"] == "terminal"
    assert capsys.readouterr().out.count("unknown status 'paused'") == 1


def test_deadline_passed_gives_a_timeout_event_and_survives_a_restart(monkeypatch):
    FakeBatches(monkeypatch, {"batch_a": ["in_progress"], "batch_b": ["completed"]})
    deadline = time.time() + 0.3
    trigger = make_trigger(["batch_a", "batch_b"], deadline=deadline)
    started = time.monotonic()
    events = run_trigger(trigger)
    assert 0.2 < time.monotonic() - started < 3
    payload = events[0].payload
    assert payload["status"] == "timeout"
    assert payload["batches"] == {"batch_a": "in_progress", "batch_b": "completed"}
    assert "batch_a" in payload["message"]

    # "Restart": the triggerer rebuilds the trigger from its serialized kwargs; the deadline is unchanged
    # and already past, so it times out after one poll instead of starting a fresh budget.
    classpath, kwargs = trigger.serialize()
    rebuilt = OpenAIBatchTrigger(**kwargs)
    assert rebuilt.deadline == deadline
    started = time.monotonic()
    assert run_trigger(rebuilt)[0].payload["status"] == "timeout"
    assert time.monotonic() - started < 1


def test_first_poll_is_jittered(monkeypatch):
    FakeBatches(monkeypatch, {"batch_a": ["completed"]})
    monkeypatch.setattr("random.uniform", lambda a, b: b)
    started = time.monotonic()
    run_trigger(make_trigger(["batch_a"], first_poll_jitter=0.3))
    assert time.monotonic() - started >= 0.3


def test_run_never_uses_the_sync_connection_lookup(monkeypatch):
    def forbidden(*args, **kwargs):
        raise AssertionError("sync connection lookup inside the triggerer's event loop")

    monkeypatch.setattr(BaseHook, "get_connection", classmethod(forbidden))
    monkeypatch.setattr(Connection, "get", classmethod(forbidden))
    monkeypatch.setattr(Connection, "extra_dejson", property(forbidden))
    FakeBatches(monkeypatch, {"batch_a": ["in_progress", "completed"]})
    assert run_trigger(make_trigger(["batch_a"]))[0].payload["status"] == "terminal"


def test_many_triggers_share_one_client(monkeypatch):
    built = []
    real = hook_module._new_async_client

    def counting(kind, kwargs):
        built.append(kind)
        return real(kind, kwargs)

    FakeBatches(monkeypatch, {f"b{i}": ["in_progress", "completed"] for i in range(50)})
    monkeypatch.setattr(hook_module, "_new_async_client", counting)

    async def main():
        triggers = [make_trigger([f"b{i}"]) for i in range(50)]

        async def collect(trigger):
            return [event async for event in trigger.run()]

        return await asyncio.gather(*(collect(t) for t in triggers))

    results = asyncio.run(main())
    assert all(events[0].payload["status"] == "terminal" for events in results)
    assert built == ["openai"]


# -- on_kill -------------------------------------------------------------------------------------------


def test_on_kill_cancels_unfinished_batches_and_swallows_errors(monkeypatch, capsys):
    fake = FakeBatches(
        monkeypatch,
        {"done": ["completed"], "running": ["in_progress"], "broken": ["in_progress"]},
        cancel_status={"broken": 500},
    )
    trigger = make_trigger(["done", "running", "broken", "never_seen"])
    trigger._statuses.update({"done": "completed", "running": "in_progress", "broken": "in_progress"})
    asyncio.run(trigger.on_kill())
    assert sorted(fake.cancels) == ["broken", "never_seen", "running"]
    out = capsys.readouterr().out
    assert "Could not cancel batch broken" in out
    assert "Cancelled batch running" in out


def test_on_kill_never_raises_even_without_a_connection(monkeypatch, capsys):
    trigger = OpenAIBatchTrigger(batch_ids=["b1"], openai_conn_id="no_such_connection_anywhere")
    asyncio.run(trigger.on_kill())
    assert "Could not cancel batch b1" in capsys.readouterr().out


def test_cleanup_does_not_cancel(monkeypatch):
    fake = FakeBatches(monkeypatch, {"b1": ["in_progress"]})
    asyncio.run(make_trigger(["b1"]).cleanup())
    assert fake.cancels == []


def test_terminal_statuses_constant():
    assert TERMINAL_BATCH_STATUSES == frozenset({"completed", "failed", "expired", "cancelled"})


# -- coalesced polling through the status board ----------------------------------------------------------


def run_triggers(triggers: list[OpenAIBatchTrigger], timeout: float = 20) -> list[list[TriggerEvent]]:
    async def collect(trigger):
        return [event async for event in trigger.run()]

    async def main():
        return await asyncio.gather(*(collect(t) for t in triggers))

    return asyncio.run(asyncio.wait_for(main(), timeout))


@pytest.fixture
def refreshes(monkeypatch):
    """Counts board refreshes: each is one coalesced round of HTTP requests."""
    counted: list[int] = []
    real = status_board.StatusBoard._refresh

    async def counting(self, generation, needed):
        counted.append(len(needed))
        return await real(self, generation, needed)

    monkeypatch.setattr(status_board.StatusBoard, "_refresh", counting)
    return counted


def test_many_triggers_poll_through_a_few_list_pages(monkeypatch, refreshes):
    n = 150
    fake = FakeBatches(
        monkeypatch, {f"b{i:03d}": ["in_progress", "finalizing", "completed"] for i in range(n)}
    )
    results = run_triggers([make_trigger([f"b{i:03d}"]) for i in range(n)])
    assert all(events[0].payload["batches"] == {f"b{i:03d}": "completed"} for i, events in enumerate(results))
    # 150 triggers wanted a status at least 3 times each (450 retrieves before); a refresh of 150 watched
    # batches reads 2 pages of 100, and the triggers share each refresh.
    # (The very first trigger may find itself alone on the board, and one batch is just retrieved.)
    assert sum(fake.gets.values()) <= 1
    assert 3 <= len(refreshes) <= 10
    assert fake.lists <= 2 * len(refreshes)
    assert fake.requests <= 20
    assert status_board.live_boards() == []


def test_a_slow_trigger_rides_on_the_refreshes_of_a_fast_one(monkeypatch, refreshes):
    FakeBatches(monkeypatch, {"fast_b": ["in_progress"], "slow_b": ["in_progress"]})
    polls: dict[str, int] = defaultdict(int)
    real = OpenAIBatchTrigger._poll

    async def counting(self, client, pending, seen):
        polls[pending[0]] += 1
        return await real(self, client, pending, seen)

    monkeypatch.setattr(OpenAIBatchTrigger, "_poll", counting)
    deadline = time.time() + 1.0
    results = run_triggers(
        [
            make_trigger(["fast_b"], poll_interval=0.02, deadline=deadline),
            make_trigger(["slow_b"], poll_interval=0.3, deadline=deadline),
        ]
    )
    assert [events[0].payload["status"] for events in results] == ["timeout", "timeout"]
    assert polls["slow_b"] >= 3 and polls["fast_b"] > 10
    # Each refresh is asked for by the fast trigger; the slow one takes the latest (younger than its 0.3 s
    # interval) instead of asking for one of its own.
    assert len(refreshes) <= polls["fast_b"] + 1


def test_a_batch_older_than_the_pages_is_retrieved(monkeypatch, refreshes):
    scripts = {
        "old_1": ["in_progress", "completed"],
        "old_2": ["in_progress", "in_progress", "failed"],
        **{f"new_{i}": ["in_progress", "in_progress", "completed"] for i in range(3)},
    }
    fake = FakeBatches(monkeypatch, scripts, list_window=3)  # the list shows only the three new ones
    results = run_triggers([make_trigger(["old_1", "new_0"]), make_trigger(["old_2", "new_1", "new_2"])])
    assert results[0][0].payload["batches"] == {"old_1": "completed", "new_0": "completed"}
    assert results[1][0].payload["batches"] == {"old_2": "failed", "new_1": "completed", "new_2": "completed"}
    assert set(fake.gets) == {"old_1", "old_2"}  # only the old ones are retrieved
    assert fake.gets["old_2"] == 3 and fake.gets["old_1"] == 2
    # The list is read once per refresh only: once seen missing, old ids are not paged for again.
    assert fake.lists <= len(refreshes)


def test_an_unknown_batch_is_a_permanent_error_with_coalescing(monkeypatch):
    fake = FakeBatches(monkeypatch, {"b1": ["in_progress"], "b2": ["in_progress", "completed"]})
    results = run_triggers(
        [make_trigger(["b1", "batch_gone"], max_consecutive_errors=5), make_trigger(["b2"])]
    )
    payload = results[0][0].payload
    assert payload["status"] == "error" and "HTTP 404" in payload["message"]
    assert results[1][0].payload["status"] == "terminal"
    # b1 came from list pages; batch_gone is not in them, and its retrieve (uncounted: unknown) was a 404.
    assert "b1" not in fake.gets and fake.listed["b1"] >= 1


def test_a_failed_list_refresh_counts_against_every_waiting_trigger(monkeypatch, refreshes):
    # The whole service fails (a retrieve would too).
    fake = FakeBatches(monkeypatch, {f"b{i}": [500] for i in range(20)}, list_script=[500])
    results = run_triggers([make_trigger([f"b{i}"], max_consecutive_errors=3) for i in range(20)])
    for events in results:
        assert len(events) == 1
        assert events[0].payload["status"] == "error"
        assert "failed 3 consecutive times" in events[0].payload["message"]
        assert API_KEY not in events[0].payload["message"]
    # Every trigger spent its budget on shared refreshes: a few list requests, and no retrieve storm (only
    # the first trigger may have been alone on the board for its first poll).
    assert sum(fake.gets.values()) <= 1
    assert fake.lists <= len(refreshes) <= 3 * 3


def test_transient_list_failures_below_the_budget_are_tolerated(monkeypatch):
    fake = FakeBatches(
        monkeypatch,
        {f"b{i}": ["in_progress", "completed"] for i in range(10)},
        list_script=[503, httpx2.ConnectError("connection refused"), None],
    )
    results = run_triggers([make_trigger([f"b{i}"], max_consecutive_errors=3) for i in range(10)])
    assert all(events[0].payload["status"] == "terminal" for events in results)
    assert sum(fake.gets.values()) <= 1  # the first trigger, alone on the board for its first poll


def test_a_service_that_cannot_list_falls_back_to_retrieve(monkeypatch, caplog):
    fake = FakeBatches(
        monkeypatch, {f"b{i}": ["in_progress", "completed"] for i in range(5)}, list_script=[404]
    )
    results = run_triggers([make_trigger([f"b{i}"], max_consecutive_errors=1) for i in range(5)])
    assert all(events[0].payload["status"] == "terminal" for events in results)
    assert fake.lists == 1 and fake.gets == {f"b{i}": 2 for i in range(5)}
    assert caplog.text.count("Listing batches is not available here (HTTP 404)") == 1


def test_a_finished_trigger_unregisters_and_the_board_stops(monkeypatch):
    FakeBatches(monkeypatch, {"fast": ["completed"], "slow": ["in_progress"] * 30 + ["completed"]})
    watched_while_slow_runs: list[dict] = []

    async def main():
        fast, slow = make_trigger(["fast"]), make_trigger(["slow"])
        slow_task = asyncio.create_task(anext(aiter(slow.run())))
        assert (await anext(aiter(fast.run()))).payload["status"] == "terminal"
        [board] = status_board.live_boards()
        watched_while_slow_runs.append(dict(board.watched))
        assert not slow_task.done()
        assert (await slow_task).payload["status"] == "terminal"
        await asyncio.sleep(0)  # the board task notices it has nothing left to watch
        assert board.closed and status_board.live_boards() == []

    asyncio.run(asyncio.wait_for(main(), 10))
    assert watched_while_slow_runs == [{"slow": 1}]


def test_a_cancelled_trigger_unregisters(monkeypatch):
    FakeBatches(monkeypatch, {"b1": ["in_progress"], "b2": ["in_progress"]})

    async def main():
        trigger = make_trigger(["b1", "b2"])
        task = asyncio.create_task(anext(aiter(trigger.run())))
        await asyncio.sleep(0.2)
        [board] = status_board.live_boards()
        assert dict(board.watched) == {"b1": 1, "b2": 1}
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await asyncio.sleep(0)
        assert board.closed and status_board.live_boards() == []
        assert trigger._statuses == {"b1": "in_progress", "b2": "in_progress"}  # on_kill still knows them

    asyncio.run(asyncio.wait_for(main(), 10))


def test_boards_on_different_event_loops_are_independent(monkeypatch):
    import threading

    FakeBatches(monkeypatch, {f"b{i}": ["in_progress", "in_progress", "completed"] for i in range(6)})
    boards: list[tuple[asyncio.AbstractEventLoop, status_board.StatusBoard]] = []
    real = status_board.board_for

    def recording(client):
        board = real(client)
        boards.append((asyncio.get_running_loop(), board))
        return board

    monkeypatch.setattr(status_board, "board_for", recording)
    results: dict[int, list] = {}

    def in_thread(k: int) -> None:
        results[k] = run_triggers([make_trigger([f"b{i}"]) for i in range(3 * k, 3 * k + 3)])

    threads = [threading.Thread(target=in_thread, args=(k,)) for k in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(20)
    assert all(events[0].payload["status"] == "terminal" for k in (0, 1) for events in results[k])
    per_loop = {loop: {id(board) for _, board in boards if _ is loop} for loop, _ in boards}
    assert len(per_loop) == 2 and all(len(ids) == 1 for ids in per_loop.values())
    assert len({id(board) for _, board in boards}) == 2
    assert all(board.loop is loop and board.closed for loop, board in boards)
    assert status_board.live_boards() == [] and len(status_board._boards) == 0


def test_coalescing_can_be_switched_off(monkeypatch, no_coalescing):
    fake = FakeBatches(monkeypatch, {f"b{i}": ["in_progress", "completed"] for i in range(5)})
    results = run_triggers([make_trigger([f"b{i}"]) for i in range(5)])
    assert all(events[0].payload["status"] == "terminal" for events in results)
    assert fake.lists == 0 and fake.gets == {f"b{i}": 2 for i in range(5)}
    assert status_board.live_boards() == []


def test_page_cap_covers_the_watched_set_up_to_a_limit():
    assert [status_board.page_cap(n) for n in (1, 150, 900, 1000, 5000)] == [10, 10, 10, 11, 51]
