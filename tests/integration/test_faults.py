"""Fault injection: the real operator, hook and trigger against the emulator over HTTP (and moto_server S3),
with faults armed on the emulator (429 + Retry-After, 5xx, dropped connections, slow answers) and crashes
injected into the worker at the worst moments (between create and defer, between create and the record write,
midway through landing a file).

Every test checks the three promises: no batch is created twice (counted from the emulator's journal), every
``custom_id`` lands exactly once in output ∪ errors, and when the provider gives up it says why and what a
retry does. docs/reliability.md lists the faults and the test proving each.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_openai_batch import storage
from airflow_provider_openai_batch.exceptions import OpenAIBatchError
from airflow_provider_openai_batch.hooks import openai_batch as hook_module
from airflow_provider_openai_batch.hooks.openai_batch import OpenAIBatchHook
from airflow_provider_openai_batch.operators import openai_batch as operator_module
from airflow_provider_openai_batch.operators.openai_batch import OpenAIBatchOperator
from airflow_provider_openai_batch.triggers.openai_batch import OpenAIBatchTrigger, TriggerStatus
from tests.integration.conftest import TEST_API_KEY

pytestmark = pytest.mark.integration

DAG_ID = "reliability_batch"
DATE = "2026-11-01"


# ----------------------------------------------------------------------------------------------- helpers
def set_connection(monkeypatch, emulator, **extra: Any) -> None:
    """`openai_default` on the emulator; extras such as ``max_retries`` / ``timeout`` tune the client."""
    conn = {"conn_type": "openai_batch", "host": emulator.base_url, "password": TEST_API_KEY}
    if extra:
        conn["extra"] = extra
    monkeypatch.setenv("AIRFLOW_CONN_OPENAI_DEFAULT", json.dumps(conn))


@pytest.fixture
def emulator(openai_emulator, monkeypatch):
    """The reset emulator, with `openai_default` on it (the client's default 2 retries, 10 s timeout)."""
    hook_module.clear_async_client_cache()
    set_connection(monkeypatch, openai_emulator, timeout=10)
    yield openai_emulator
    openai_emulator.clear_faults()
    hook_module.clear_async_client_cache()


def request(custom_id: str, status: int | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": f"q {custom_id}"}]}
    if status is not None:
        body["x_emulator_status"] = status  # the emulator fails this request with that HTTP status
    return {"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions", "body": body}


def write_input(path: Path, ids: list[str], failing: dict[str, int] | None = None) -> None:
    failing = failing or {}
    path.write_text("".join(json.dumps(request(cid, failing.get(cid))) + "\n" for cid in ids))


def use_dag(monkeypatch, input_path: str, output_base: str, **env: Any) -> None:
    monkeypatch.setenv("RELIABILITY_INPUT", input_path)
    monkeypatch.setenv("RELIABILITY_OUTPUT", output_base)
    for name, value in env.items():
        monkeypatch.setenv(f"RELIABILITY_{name.upper()}", str(value))


@pytest.fixture
def local_job(tmp_path, monkeypatch):
    """Six requests on local storage; returns (ids, results folder of DATE)."""
    ids = [f"req-{i}" for i in range(6)]
    write_input(tmp_path / "input.jsonl", ids)
    use_dag(monkeypatch, str(tmp_path / "input.jsonl"), str(tmp_path / "out"))
    return ids, tmp_path / "out" / DATE


def created_batches(emulator) -> list[dict[str, Any]]:
    """`POST /v1/batches` calls the emulator answered with a batch (faulted calls create nothing)."""
    return [c for c in emulator.calls("POST", "/v1/batches") if c["path"] == "/v1/batches" and c["status"] == 200]


def batch_posts(emulator) -> list[dict[str, Any]]:
    return [c for c in emulator.calls("POST", "/v1/batches") if c["path"] == "/v1/batches"]


def emulator_batches(emulator) -> list[Any]:
    """Every batch the emulator holds (read last: the list call goes in the journal)."""
    return list(OpenAIBatchHook().iter_batches(max_pages=5))


def read_ids(path: Path) -> list[str]:
    if not path.exists():
        return []
    return [json.loads(line)["custom_id"] for line in path.read_text().splitlines() if line.strip()]


def assert_each_custom_id_once(folder: Path, ids: list[str], *, failed: set[str] = frozenset()) -> None:
    output, errors = read_ids(folder / "output.jsonl"), read_ids(folder / "errors.jsonl")
    assert sorted(output + errors) == sorted(ids), (output, errors)
    assert set(errors) == set(failed)
    assert (folder / storage.MANIFEST).exists()


def assert_one_batch(emulator) -> None:
    assert len(created_batches(emulator)) == 1, emulator.journal()
    assert len(emulator_batches(emulator)) == 1


def faulted(emulator, method: str, path_prefix: str) -> list[dict[str, Any]]:
    return [c for c in emulator.calls(method, path_prefix) if c.get("fault")]


# ----------------------------------------------------------------------------- transient HTTP faults
@pytest.mark.parametrize(
    ("method", "path"),
    [("POST", "/v1/files"), ("POST", "/v1/batches"), ("GET", "/v1/batches/*")],
    ids=["upload", "create", "poll"],
)
def test_429_with_retry_after_is_waited_out(run_dag, emulator, local_job, method, path):
    ids, folder = local_job
    emulator.add_fault(method=method, path=path, status=429, retry_after=1, times=2)

    started = time.monotonic()
    outcome = run_dag(DAG_ID, DATE)

    assert outcome.state == "success", outcome.ti_states()
    hits = faulted(emulator, method, path.rstrip("*"))
    assert [c["status"] for c in hits] == [429, 429]
    assert time.monotonic() - started >= 2  # Retry-After: 1 was honoured twice, not hammered
    assert_one_batch(emulator)
    assert_each_custom_id_once(folder, ids)


@pytest.mark.parametrize("status", [500, 503])
@pytest.mark.parametrize(
    ("method", "path"),
    [("POST", "/v1/files"), ("POST", "/v1/batches"), ("GET", "/v1/batches/*"), ("GET", "/v1/files/*/content")],
    ids=["upload", "create", "poll", "download"],
)
def test_server_errors_are_retried(run_dag, emulator, local_job, method, path, status):
    ids, folder = local_job
    emulator.add_fault(method=method, path=path, status=status, times=1)

    outcome = run_dag(DAG_ID, DATE)

    assert outcome.state == "success", outcome.ti_states()
    assert [c["status"] for c in faulted(emulator, method, path.split("*")[0])] == [status]
    assert_one_batch(emulator)
    assert_each_custom_id_once(folder, ids)


def test_dropped_connection_during_upload_is_retried(run_dag, emulator, local_job):
    ids, folder = local_job
    emulator.add_fault(method="POST", path="/v1/files", kind="drop", times=1)

    outcome = run_dag(DAG_ID, DATE)

    assert outcome.state == "success", outcome.ti_states()
    uploads = emulator.calls("POST", "/v1/files")
    assert [c["status"] for c in uploads] == [None, 200]  # dropped, then the client's retry
    assert_one_batch(emulator)
    assert_each_custom_id_once(folder, ids)
