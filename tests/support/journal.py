"""Readers of what the emulator saw and holds: its journal of calls, and its batches through the API.

Tests count calls from the journal (the server's side), not from what the client believes it sent, so a
retry the client made on its own, or an answer lost on the way back, is counted too.
"""

from __future__ import annotations

from typing import Any

from openai import OpenAI

from airflow_provider_openai_batch.emulator.testing import wait_for


def batch_posts(emulator: Any) -> list[dict[str, Any]]:
    """Every ``POST /v1/batches`` (a create attempt, faulted or not; cancels excluded), in order."""
    return [c for c in emulator.calls("POST", "/v1/batches") if c["path"] == "/v1/batches"]


def faulted(emulator: Any, method: str, path_prefix: str) -> list[dict[str, Any]]:
    """The calls under ``path_prefix`` an armed fault answered."""
    return [c for c in emulator.calls(method, path_prefix) if c.get("fault")]


def api_client(emulator: Any) -> OpenAI:
    """A plain OpenAI client on the emulator, as a person beside the DAG would use (no retries)."""
    return OpenAI(base_url=emulator.base_url, api_key="sk-test", max_retries=0)


def batch_ids(emulator: Any) -> list[str]:
    """The ids of every batch the emulator holds (up to 100), oldest first."""
    return [b.id for b in api_client(emulator).batches.list(limit=100).data][::-1]


def waits_after_faults(emulator: Any, method: str, path_prefix: str) -> list[float]:
    """Seconds from each faulted call under ``path_prefix`` to the next call of the same path: how long the
    client waited before trying again (``inf`` where it never did).
    """
    calls = emulator.calls(method, path_prefix)
    waits = []
    for i, call in enumerate(calls):
        if call.get("fault"):
            later = next((c["time"] for c in calls[i + 1 :] if c["path"] == call["path"]), float("inf"))
            waits.append(later - call["time"])
    return waits


def first_batch_running(emulator: Any, completed: int, timeout: float = 20) -> str:
    """Wait until the first batch exists and has finished at least ``completed`` requests; its id.

    For a person acting on a running batch (cancel, expire) while the DAG waits for it.
    """
    client = api_client(emulator)
    batch_id = wait_for(lambda: batch_ids(emulator), timeout=timeout)[0]
    wait_for(
        lambda: (client.batches.retrieve(batch_id).request_counts.completed or 0) >= completed,
        timeout=timeout,
    )
    return batch_id
