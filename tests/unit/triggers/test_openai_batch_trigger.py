from __future__ import annotations

import asyncio
import json
import re
import time

import httpx2
import pytest
from airflow.sdk import BaseHook, Connection
from airflow.triggers.base import TriggerEvent

from airflow_provider_openai_batch.hooks import clients as clients_module
from airflow_provider_openai_batch.statuses import EventStatus
from airflow_provider_openai_batch.triggers import status_board
from airflow_provider_openai_batch.triggers.openai_batch import OpenAIBatchTrigger
from tests.unit.triggers.fake_api import API_KEY, CONN_ID, FakeBatches


def make_trigger(batch_ids, **kwargs) -> OpenAIBatchTrigger:
    kwargs.setdefault("poll_interval", 0.01)
    kwargs.setdefault("first_poll_jitter", 0)
    return OpenAIBatchTrigger(batch_ids=batch_ids, openai_conn_id=CONN_ID, **kwargs)


def run_triggers(triggers: list[OpenAIBatchTrigger], timeout: float = 20) -> list[list[TriggerEvent]]:
    async def collect(trigger):
        return [event async for event in trigger.run()]

    async def main():
        return await asyncio.gather(*(collect(t) for t in triggers))

    return asyncio.run(asyncio.wait_for(main(), timeout))


def run_trigger(trigger: OpenAIBatchTrigger, timeout: float = 10) -> list[TriggerEvent]:
    return run_triggers([trigger], timeout)[0]


# -- serialization -------------------------------------------------------------------------------------

KWARGS = {  # every argument but `cancel_on_kill`
    "batch_ids": ["batch_a", "batch_b"],
    "openai_conn_id": "my_conn",
    "poll_interval": 30.0,
    "deadline": 1_900_000_000.5,
    "max_consecutive_errors": 7,
    "first_poll_jitter": 2.0,
    "context": {"rounds": [["batch_a", "batch_b"]], "phase": "run"},
}


def test_serialize_round_trip():
    trigger = OpenAIBatchTrigger(**{**KWARGS, "poll_interval": 30, "cancel_on_kill": ["batch_b"]})
    classpath, kwargs = trigger.serialize()
    assert classpath == "airflow_provider_openai_batch.triggers.openai_batch.OpenAIBatchTrigger"
    assert json.loads(json.dumps(kwargs)) == kwargs  # JSON-safe primitives only
    assert kwargs == {**KWARGS, "cancel_on_kill": ["batch_b"], "room": None}
    assert OpenAIBatchTrigger(**kwargs).serialize() == (classpath, kwargs)


def test_a_room_wait_round_trips_and_may_watch_no_batch():
    room = {
        "model": "gpt-4o-mini",
        "tokens": 380_000,
        "limit": 2_000_000,
        "order": ["2026-11-01T00:00:00+00:00", 2],
    }
    trigger = OpenAIBatchTrigger(batch_ids=[], room=room)
    classpath, kwargs = trigger.serialize()
    assert json.loads(json.dumps(kwargs)) == kwargs
    assert kwargs["room"] == {**room, "not_before": 0.0} and kwargs["batch_ids"] == []
    assert OpenAIBatchTrigger(**kwargs).serialize() == (classpath, kwargs)
    with pytest.raises(ValueError, match="non-empty list"):
        OpenAIBatchTrigger(batch_ids=[])


def test_without_cancel_on_kill_every_batch_is_the_triggers_to_cancel():
    trigger = OpenAIBatchTrigger(**KWARGS)
    _, kwargs = trigger.serialize()
    assert kwargs == {**KWARGS, "cancel_on_kill": None, "room": None}
    assert trigger.cancel_on_kill is None


@pytest.mark.parametrize(
    "kwargs",
    [
        {"batch_ids": []},
        {"batch_ids": ["ok", ""]},
        {"batch_ids": ["ok"], "poll_interval": 0},
        {"batch_ids": ["ok"], "max_consecutive_errors": 0},
        {"batch_ids": ["ok"], "first_poll_jitter": -1},
        {"batch_ids": ["ok"], "cancel_on_kill": ["not_mine"]},
        {"batch_ids": ["ok"], "cancel_on_kill": "ok"},
    ],
)
def test_invalid_arguments_are_rejected(kwargs):
    with pytest.raises(ValueError, match="Expected"):
        OpenAIBatchTrigger(**kwargs)


# -- waiting -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("coalesce", [True, False], ids=["coalesced", "retrieve"])
def test_polls_through_statuses_to_one_terminal_event(monkeypatch, capsys, coalesce):
    monkeypatch.setenv("AIRFLOW__OPENAI_BATCH__COALESCE", str(coalesce))
    fake = FakeBatches(
        monkeypatch,
        {
            "batch_a": ["validating", "in_progress", ("in_progress", 4), ("in_progress", 7), "completed"],
            "batch_b": ["in_progress", "expired"],
        },
    )
    # 50 ms apart: the log lines below need the trigger to take each refresh's news before the next refresh
    trigger = make_trigger(["batch_a", "batch_b"], context={"phase": "run"}, poll_interval=0.05)
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
        assert fake.lists >= 1 and fake.gets.get("batch_b", 0) == 0
    else:
        assert fake.lists == 0 and fake.gets == {"batch_a": 5, "batch_b": 2}  # terminal: not polled again
    out = capsys.readouterr().out
    # A line when the status changes; a counts-only change (4 -> 7) waits for the progress interval.
    # done counts completed and failed requests: 4 completed + 1 failed of 10.
    assert out.count("Batch batch_a in_progress: 5/10 requests, 50%, 1 failed") == 1
    assert "Batch batch_a in_progress: 8/10" not in out
    assert "Batch batch_a completed: 5/10 requests, 50%, 1 failed" in out
    assert API_KEY not in out


def test_counts_are_logged_when_the_progress_interval_allows(monkeypatch, capsys):
    monkeypatch.setenv("AIRFLOW__OPENAI_BATCH__PROGRESS_LOG_INTERVAL", "0.001")
    FakeBatches(monkeypatch, {"b": [("in_progress", 1), ("in_progress", 1), ("in_progress", 5), "completed"]})
    run_trigger(make_trigger(["b"], poll_interval=0.05))  # 50 ms: each refresh's news taken before the next
    out = capsys.readouterr().out
    assert out.count("Batch b in_progress: 2/10") == 1 and out.count("Batch b in_progress: 6/10") == 1
    # The second line has a rate (4 more requests done since the first look) and an ETA.
    assert re.search(r"Batch b in_progress: 6/10 requests, 60%, 1 failed, ~[\d,]+/min, ETA", out)


def test_transient_errors_below_the_budget_are_tolerated(monkeypatch):
    fake = FakeBatches(
        monkeypatch,
        {"batch_a": [500, 429, httpx2.ConnectError("connection refused"), "in_progress", 503, "completed"]},
    )
    events = run_trigger(make_trigger(["batch_a"], max_consecutive_errors=4))
    assert events[0].payload["status"] == EventStatus.TERMINAL == "terminal"
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
    # Polls 1 s apart: a retry of the 404 would show as a second look, and a loaded machine cannot fit one
    # more refresh between the answer and the trigger leaving the board (at 0.01 s it did, on 3.2 in CI).
    events = run_trigger(make_trigger(["batch_a"], max_consecutive_errors=5, poll_interval=1))
    assert events[0].payload["status"] == "error"
    assert "HTTP 404" in events[0].payload["message"]
    assert fake.gets["batch_a"] == 1


def test_unknown_status_is_logged_once_and_not_terminal(monkeypatch, capsys):
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
    # and already past, so it times out at once instead of starting a fresh budget.
    rebuilt = OpenAIBatchTrigger(**trigger.serialize()[1])
    assert rebuilt.deadline == deadline
    started = time.monotonic()
    assert run_trigger(rebuilt)[0].payload["status"] == "timeout"
    assert time.monotonic() - started < 1


def test_first_look_is_jittered(monkeypatch):
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
    if hasattr(Connection, "aextra_dejson"):  # before Airflow 3.3 the sync extras are the only ones there are
        monkeypatch.setattr(Connection, "extra_dejson", property(forbidden))
    FakeBatches(monkeypatch, {"batch_a": ["in_progress", "completed"]})
    assert run_trigger(make_trigger(["batch_a"]))[0].payload["status"] == "terminal"


def test_a_missing_connection_is_an_error_event_after_the_budget(monkeypatch):
    trigger = OpenAIBatchTrigger(
        ["b1"], openai_conn_id="no_such_connection_anywhere", poll_interval=0.01, max_consecutive_errors=2
    )
    payload = run_trigger(trigger)[0].payload
    assert payload["status"] == "error" and "failed 2 consecutive times" in payload["message"]


def test_many_triggers_share_one_client_and_fire_once_each(monkeypatch):
    built = []
    real = clients_module._new_async_client

    def counting(kind, kwargs):
        built.append(kind)
        return real(kind, kwargs)

    FakeBatches(monkeypatch, {f"b{i}": ["in_progress", "completed"] for i in range(50)})
    monkeypatch.setattr(clients_module, "_new_async_client", counting)
    results = run_triggers([make_trigger([f"b{i}"]) for i in range(50)])
    assert [[e.payload["batches"] for e in events] for events in results] == [
        [{f"b{i}": "completed"}] for i in range(50)
    ]
    assert built == ["openai"]
    assert status_board.live_boards() == []


def test_a_rotated_key_moves_the_trigger_to_a_new_board(monkeypatch):
    fake = FakeBatches(monkeypatch, {"b1": ["in_progress", 500, "completed"]})
    boards = []
    real_board_for, real_next_item = status_board.board_for, fake.next_item

    def recording(client):
        boards.append(real_board_for(client))
        return boards[-1]

    def next_item(batch_id):
        if fake.looks[batch_id] == 1:  # the connection changes while the board polls: a new client
            clients_module.clear_async_client_cache()
        return real_next_item(batch_id)

    monkeypatch.setattr(status_board, "board_for", recording)
    monkeypatch.setattr(fake, "next_item", next_item)
    assert run_trigger(make_trigger(["b1"]))[0].payload["status"] == "terminal"
    assert len({id(b.client) for b in boards}) == 2 and fake.gets["b1"] >= 3


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


def test_on_kill_cancels_only_the_batches_of_this_task(monkeypatch):
    fake = FakeBatches(
        monkeypatch, {b: ["in_progress"] for b in ("mine_1", "mine_2", "adopted", "mine_done")}
    )
    trigger = make_trigger(
        ["mine_1", "adopted", "mine_2", "mine_done"], cancel_on_kill=["mine_1", "mine_2", "mine_done"]
    )
    trigger._statuses["mine_done"] = "completed"
    asyncio.run(trigger.on_kill())
    assert sorted(fake.cancels) == ["mine_1", "mine_2"]
    # Carried through a triggerer restart.
    fake.cancels.clear()
    asyncio.run(OpenAIBatchTrigger(**trigger.serialize()[1]).on_kill())
    assert sorted(fake.cancels) == ["mine_1", "mine_2", "mine_done"]


def test_on_kill_spares_batches_that_finished_since_the_trigger_last_looked(monkeypatch, capsys):
    """A triggerer frozen past its heartbeat wakes up with an old view: the other triggerer landed the batches
    meanwhile and Airflow cancels the stale copies "by user action". Only a batch still running is cancelled."""
    fake = FakeBatches(
        monkeypatch,
        {"landed": ["completed"], "expired": ["expired"], "running": ["in_progress"], "unknown": [500]},
    )
    trigger = make_trigger(["landed", "expired", "running", "unknown"])
    trigger._statuses.update({b: "in_progress" for b in ("landed", "expired", "running", "unknown")})
    asyncio.run(trigger.on_kill())
    assert sorted(fake.cancels) == ["running", "unknown"]  # a batch that cannot be looked at is cancelled
    assert "Not cancelling batches that already finished" in capsys.readouterr().out


def test_on_kill_with_an_empty_list_cancels_nothing(monkeypatch):
    fake = FakeBatches(monkeypatch, {"adopted": ["in_progress"]})
    asyncio.run(make_trigger(["adopted"], cancel_on_kill=[]).on_kill())
    assert fake.cancels == []


class _Comms:
    """The triggerer's supervisor comms, answering task state look-ups with ``state``."""

    def __init__(self, state):
        self.state, self.asked = state, []

    async def asend(self, msg):
        from airflow.sdk.execution_time.comms import ErrorResponse, TaskStatesResult

        self.asked.append(msg)
        if type(msg).__name__ != "GetTaskStates":
            return ErrorResponse()  # connections come from the environment in these tests
        return TaskStatesResult(task_states={"run_1": {"run_batch": self.state}})


@pytest.mark.parametrize(
    ("state", "cancelled"), [("deferred", False), ("failed", True), ("success", True), (None, True)]
)
def test_on_kill_spares_the_batches_of_a_trigger_that_moved_to_another_triggerer(
    monkeypatch, state, cancelled
):
    """Airflow cancels a trigger it reassigns as if the task were killed (apache/airflow#73454): the task
    instance is then still deferred, and its batch must keep running. Marked failed, cleared or succeeded: cancel."""
    from types import SimpleNamespace

    from airflow.sdk.execution_time import task_runner

    fake = FakeBatches(monkeypatch, {"b1": ["in_progress"]})
    comms = _Comms(state)
    monkeypatch.setattr(task_runner, "SUPERVISOR_COMMS", comms, raising=False)
    trigger = make_trigger(["b1"])
    trigger.task_instance = SimpleNamespace(dag_id="d", task_id="run_batch", run_id="run_1", map_index=-1)
    asyncio.run(trigger.on_kill())
    assert fake.cancels == (["b1"] if cancelled else [])
    asked = next(m for m in comms.asked if type(m).__name__ == "GetTaskStates")
    assert (asked.dag_id, asked.task_ids, asked.run_ids, asked.map_index) == (
        "d",
        ["run_batch"],
        ["run_1"],
        -1,
    )


def test_on_kill_finishes_the_cancel_when_airflow_cancels_it_again(monkeypatch):
    """The triggerer may cancel a trigger again while its on_kill still waits on the API: the cancel a user
    asked for must still reach OpenAI."""
    from types import SimpleNamespace

    from airflow.sdk.execution_time import task_runner

    fake = FakeBatches(monkeypatch, {"b1": ["in_progress"]})
    comms = _Comms("failed")
    slow = comms.asend

    async def asend(msg):
        if type(msg).__name__ == "GetTaskStates":
            await asyncio.sleep(0.1)
        return await slow(msg)

    comms.asend = asend
    monkeypatch.setattr(task_runner, "SUPERVISOR_COMMS", comms, raising=False)
    trigger = make_trigger(["b1"])
    trigger.task_instance = SimpleNamespace(dag_id="d", task_id="run_batch", run_id="run_1", map_index=-1)

    async def main():
        kill = asyncio.ensure_future(trigger.on_kill())
        await asyncio.sleep(0.02)
        kill.cancel()  # the second cancel, while on_kill waits for the task state
        await asyncio.gather(kill, return_exceptions=True)
        for _ in range(100):  # the shielded work goes on: wait for it, at most 5 s
            if fake.cancels:
                break
            await asyncio.sleep(0.05)

    asyncio.run(main())
    assert fake.cancels == ["b1"]


def test_on_kill_never_raises_even_without_a_connection(capsys):
    trigger = OpenAIBatchTrigger(batch_ids=["b1"], openai_conn_id="no_such_connection_anywhere")
    asyncio.run(trigger.on_kill())
    assert "Could not cancel batch b1" in capsys.readouterr().out


def test_cleanup_does_not_cancel(monkeypatch):
    fake = FakeBatches(monkeypatch, {"b1": ["in_progress"]})
    asyncio.run(make_trigger(["b1"]).cleanup())
    assert fake.cancels == []


def test_a_cancelled_trigger_unregisters_and_keeps_what_it_saw(monkeypatch):
    FakeBatches(monkeypatch, {"b1": ["in_progress"], "b2": ["in_progress"]})

    async def main():
        trigger = make_trigger(["b1", "b2"])
        task = asyncio.ensure_future(anext(aiter(trigger.run())))
        await asyncio.sleep(0.2)
        [board] = status_board.live_boards()
        assert board.watched == {"b1": 1, "b2": 1}
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await asyncio.sleep(0.01)
        assert board.closed and status_board.live_boards() == []
        assert trigger._statuses == {"b1": "in_progress", "b2": "in_progress"}  # on_kill still knows them

    asyncio.run(asyncio.wait_for(main(), 10))
