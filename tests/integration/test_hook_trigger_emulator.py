"""The hook and the trigger over real HTTP against the bundled emulator."""

from __future__ import annotations

import asyncio
import io
import json

import pytest

from airflow_provider_openai_batch.hooks import openai_batch as hook_module
from airflow_provider_openai_batch.hooks.openai_batch import OpenAIBatchHook
from airflow_provider_openai_batch.triggers.openai_batch import OpenAIBatchTrigger

pytestmark = pytest.mark.integration

API_KEY = "sk-hook-trigger-SECRET-93b1"
CONN_ID = "openai_emulator_hook"
N_REQUESTS = 30


@pytest.fixture
def hook(openai_emulator, monkeypatch) -> OpenAIBatchHook:
    conn = {
        "conn_type": "openai_batch",
        "host": openai_emulator.base_url,
        "password": API_KEY,
        "extra": {"max_retries": 0},
    }
    monkeypatch.setenv(f"AIRFLOW_CONN_{CONN_ID.upper()}", json.dumps(conn))
    hook_module.clear_async_client_cache()
    yield OpenAIBatchHook(CONN_ID)
    hook_module.clear_async_client_cache()


def requests_jsonl(n: int = N_REQUESTS) -> bytes:
    return b"".join(
        json.dumps(
            {
                "custom_id": f"req-{i}",
                "method": "POST",
                "url": "/v1/chat/completions",
                "body": {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": f"hello {i}"}]},
            }
        ).encode()
        + b"\n"
        for i in range(n)
    )


def submit(hook: OpenAIBatchHook, n: int = N_REQUESTS) -> str:
    file = hook.upload_file(io.BytesIO(requests_jsonl(n)), "requests.jsonl")
    return hook.create_batch(file.id, "/v1/chat/completions", metadata={"test": "hook"}).id


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
    assert batch.request_counts.completed == N_REQUESTS
    nbytes, lines = hook.download_file(batch.output_file_id, str(tmp_path / "output.jsonl"))
    assert lines == N_REQUESTS
    assert nbytes == (tmp_path / "output.jsonl").stat().st_size
    custom_ids = {
        json.loads(line)["custom_id"] for line in (tmp_path / "output.jsonl").read_text().splitlines()
    }
    assert custom_ids == {f"req-{i}" for i in range(N_REQUESTS)}
    assert batch_id in [b.id for b in hook.iter_batches(max_pages=2)]


def test_download_survives_a_connection_dropped_mid_body(hook, openai_emulator, tmp_path):
    file = hook.upload_file(io.BytesIO(requests_jsonl(2000)), "big.jsonl")
    openai_emulator.add_fault(
        method="GET", path=f"/v1/files/{file.id}/content", kind="drop_mid_body", times=1
    )
    nbytes, lines = hook.download_file(file.id, str(tmp_path / "copy.jsonl"))
    assert (tmp_path / "copy.jsonl").read_bytes() == requests_jsonl(2000)
    assert (nbytes, lines) == (len(requests_jsonl(2000)), 2000)
    assert len(openai_emulator.calls("GET", f"/v1/files/{file.id}/content")) == 2


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
    assert hook.get_batch(batch_id).status in ("cancelling", "cancelled")
    assert openai_emulator.calls("POST", f"/v1/batches/{batch_id}/cancel")
