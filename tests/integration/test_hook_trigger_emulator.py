"""The hook and the trigger over real HTTP against the bundled emulator."""

from __future__ import annotations

import asyncio
import io
import json
import time

import pytest

from airflow_provider_openai_batch.hooks import clients as clients_module
from airflow_provider_openai_batch.hooks.openai_batch import OpenAIBatchHook
from airflow_provider_openai_batch.triggers.openai_batch import OpenAIBatchTrigger
from tests.support.builders import ENDPOINT, jsonl, request
from tests.support.environment import openai_connection

pytestmark = pytest.mark.integration

API_KEY = "sk-hook-trigger-SECRET-93b1"
CONN_ID = "openai_emulator_hook"
N_REQUESTS = 30


@pytest.fixture
def hook(openai_emulator, monkeypatch) -> OpenAIBatchHook:
    openai_connection(monkeypatch, openai_emulator.base_url, conn_id=CONN_ID, api_key=API_KEY, max_retries=0)
    clients_module.clear_async_client_cache()
    yield OpenAIBatchHook(CONN_ID)
    clients_module.clear_async_client_cache()


def requests_jsonl(n: int = N_REQUESTS) -> bytes:
    return jsonl(*(request(f"req-{i}") for i in range(n)))


def upload(hook: OpenAIBatchHook, n: int = N_REQUESTS, filename: str = "requests.jsonl") -> str:
    return hook.upload_file(file=io.BytesIO(requests_jsonl(n)), filename=filename).id


def submit(hook: OpenAIBatchHook, n: int = N_REQUESTS) -> str:
    return hook.create_batch(input_file_id=upload(hook, n), endpoint=ENDPOINT, metadata={"test": "hook"})[
        "id"
    ]


def run_trigger(trigger: OpenAIBatchTrigger, timeout: float = 60) -> list:
    async def collect():
        return [event async for event in trigger.run()]

    return asyncio.run(asyncio.wait_for(collect(), timeout))


def test_submit_poll_and_download(hook, openai_emulator, tmp_path):
    batch_id = submit(hook)
    trigger = OpenAIBatchTrigger([batch_id], openai_conn_id=CONN_ID, poll_interval=0.1, first_poll_jitter=0)
    events = run_trigger(trigger)
    assert [e.payload["status"] for e in events] == ["terminal"]
    assert events[0].payload["batches"] == {batch_id: "completed"}

    batch = hook.get_batch(batch_id)
    assert batch["request_counts"]["completed"] == N_REQUESTS
    nbytes, lines = hook.download_file(batch["output_file_id"], local_path=tmp_path / "output.jsonl")
    assert lines == N_REQUESTS
    assert nbytes == (tmp_path / "output.jsonl").stat().st_size
    custom_ids = {
        json.loads(line)["custom_id"] for line in (tmp_path / "output.jsonl").read_text().splitlines()
    }
    assert custom_ids == {f"req-{i}" for i in range(N_REQUESTS)}
    assert batch_id in [b["id"] for b in hook.iter_batches(max_pages=2)]


def test_download_survives_a_connection_dropped_mid_body(hook, openai_emulator, tmp_path):
    file_id = upload(hook, 2000, "big.jsonl")
    openai_emulator.add_fault(
        method="GET", path=f"/v1/files/{file_id}/content", kind="drop_mid_body", times=1
    )
    nbytes, lines = hook.download_file(file_id, local_path=tmp_path / "copy.jsonl")
    assert (tmp_path / "copy.jsonl").read_bytes() == requests_jsonl(2000)
    assert (nbytes, lines) == (len(requests_jsonl(2000)), 2000)
    assert len(openai_emulator.calls("GET", f"/v1/files/{file_id}/content")) == 2


def test_trigger_rides_out_transient_errors(hook, openai_emulator):
    batch_id = submit(hook)
    openai_emulator.add_fault(
        method="GET", path=f"/v1/batches/{batch_id}", kind="status", status=503, times=2
    )
    trigger = OpenAIBatchTrigger(
        [batch_id], openai_conn_id=CONN_ID, poll_interval=0.1, first_poll_jitter=0, max_consecutive_errors=3
    )
    events = run_trigger(trigger)
    assert events[0].payload["status"] == "terminal"


def test_on_kill_cancels_the_running_batch(hook, openai_emulator):
    openai_emulator.configure(rate=1)  # slow enough to still be running when killed
    batch_id = submit(hook)
    trigger = OpenAIBatchTrigger([batch_id], openai_conn_id=CONN_ID, poll_interval=0.1, first_poll_jitter=0)

    async def kill_while_running():
        task = asyncio.create_task(anext(aiter(trigger.run())))
        await asyncio.sleep(0.5)
        task.cancel()
        await trigger.on_kill()

    asyncio.run(kill_while_running())
    assert hook.get_batch(batch_id)["status"] in ("cancelling", "cancelled")
    assert openai_emulator.calls("POST", f"/v1/batches/{batch_id}/cancel")


def run_triggers(triggers: list[OpenAIBatchTrigger], timeout: float = 60) -> list[list]:
    async def collect(trigger):
        return [event async for event in trigger.run()]

    async def main():
        return await asyncio.gather(*(collect(t) for t in triggers))

    return asyncio.run(asyncio.wait_for(main(), timeout))


def status_gets(emulator) -> tuple[int, int]:
    """(list requests, retrieve requests) for batches in the emulator's journal."""
    gets = emulator.calls("GET", "/v1/batches")
    lists = sum(1 for call in gets if call["path"].rstrip("/") == "/v1/batches")
    return lists, len(gets) - lists


def test_thirty_triggers_share_list_pages(hook, openai_emulator):
    openai_emulator.configure(rate=20)  # 30 requests: about 1.5 s of in_progress per batch
    file_id = upload(hook)
    batch_ids = [hook.create_batch(input_file_id=file_id, endpoint=ENDPOINT)["id"] for _ in range(30)]
    before = status_gets(openai_emulator)
    poll_interval = 0.1
    triggers = [
        OpenAIBatchTrigger([b], openai_conn_id=CONN_ID, poll_interval=poll_interval, first_poll_jitter=0.1)
        for b in batch_ids
    ]
    started = time.monotonic()
    results = run_triggers(triggers)
    elapsed = time.monotonic() - started
    assert [events[0].payload["batches"] for events in results] == [{b: "completed"} for b in batch_ids]

    lists, retrieves = (now - then for now, then in zip(status_gets(openai_emulator), before, strict=True))
    polls_before = 30 * elapsed / poll_interval  # what one retrieve per trigger per interval would send
    # About one refresh (one page holds all 30 batches) per poll interval, where one retrieve per trigger
    # per interval would have sent about 600 requests in the ~2 s run; a retrieve only when one batch is
    # left on the board (the first trigger to poll, or the last to finish).
    assert elapsed > 1.0 and polls_before > 300
    assert lists <= elapsed / poll_interval + 5
    assert retrieves <= 5
    assert lists + retrieves <= polls_before / 10


def test_batches_older_than_the_pages_are_retrieved(hook, openai_emulator, monkeypatch):
    # Small pages so that a few batches are "old": 25 batches, at most 2 pages of 10 read per refresh. The
    # board reads its settings from the Airflow configuration when it is made (per event loop).
    monkeypatch.setenv("AIRFLOW__OPENAI_BATCH__LIST_PAGE_SIZE", "10")
    monkeypatch.setenv("AIRFLOW__OPENAI_BATCH__MAX_LIST_PAGES", "2")
    openai_emulator.configure(rate=10)
    # The two oldest run longest (3 s), so that the board watches them until the newest are done.
    slow, fast = upload(hook, 30, "slow.jsonl"), upload(hook, 5, "fast.jsonl")
    batch_ids = [
        hook.create_batch(input_file_id=slow if i < 2 else fast, endpoint=ENDPOINT)["id"] for i in range(25)
    ]
    oldest, newest = batch_ids[:2], batch_ids[-3:]
    triggers = [
        OpenAIBatchTrigger(ids, openai_conn_id=CONN_ID, poll_interval=0.1, first_poll_jitter=0)
        for ids in (oldest, newest)
    ]
    results = run_triggers(triggers)
    assert results[0][0].payload["batches"] == dict.fromkeys(oldest, "completed")
    assert results[1][0].payload["batches"] == dict.fromkeys(newest, "completed")
    retrieved = {call["path"].rsplit("/", 1)[-1] for call in openai_emulator.calls("GET", "/v1/batches/")}
    assert set(oldest) <= retrieved
    # The newest come from the first page; only the last one left unseen may be retrieved instead (one
    # more page would cost as much).
    assert len(set(newest) & retrieved) <= 1
    assert openai_emulator.calls("GET", "/v1/batches")
