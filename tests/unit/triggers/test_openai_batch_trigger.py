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
    """A scripted Batch API: each GET of a batch returns the next item of its script (the last one repeats).

    A script item is a status string, an int (an HTTP error status) or an exception to raise.
    """

    def __init__(
        self, monkeypatch, scripts: dict[str, list], cancel_status: dict[str, int] | None = None
    ) -> None:
        self.scripts = scripts
        self.cancel_status = cancel_status or {}
        self.gets: dict[str, int] = defaultdict(int)
        self.cancels: list[str] = []
        monkeypatch.setattr(
            hook_module,
            "_new_async_http_client",
            lambda: httpx2.AsyncClient(transport=httpx2.MockTransport(self.handle)),
        )

    def handle(self, request: httpx2.Request) -> httpx2.Response:
        assert request.headers["authorization"] == f"Bearer {API_KEY}"
        parts = request.url.path.strip("/").split("/")  # v1/batches/<id>[/cancel]
        batch_id = parts[2]
        if request.method == "POST" and parts[-1] == "cancel":
            self.cancels.append(batch_id)
            code = self.cancel_status.get(batch_id, 200)
            if code != 200:
                return httpx2.Response(code, json={"error": {"message": "cancel failed"}})
            return httpx2.Response(200, json=batch_json(batch_id, "cancelling"))
        script = self.scripts[batch_id]
        item = script[min(self.gets[batch_id], len(script) - 1)]
        self.gets[batch_id] += 1
        if isinstance(item, BaseException):
            raise item
        if isinstance(item, int):
            return httpx2.Response(item, json={"error": {"message": f"HTTP {item}"}})
        return httpx2.Response(200, json=batch_json(batch_id, item))


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


def test_polls_through_statuses_to_one_terminal_event(monkeypatch, capsys):
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
