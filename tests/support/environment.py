"""Connection and DAG environment setup for tests that run the hook, the trigger or a DAG against the emulator.

Connections are set as ``AIRFLOW_CONN_*`` variables (monkeypatched, so each test gets its own), and the async
client cache is cleared around each test, so no client built for another test's connection is reused.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from airflow_provider_openai_batch.hooks import clients as clients_module
from tests.integration.conftest import TEST_API_KEY


def openai_connection(
    monkeypatch: Any,
    base_url: str,
    *,
    conn_id: str = "openai_default",
    api_key: str = TEST_API_KEY,
    **extra: Any,
) -> dict[str, Any]:
    """Point the ``openai_batch`` connection ``conn_id`` at ``base_url``.

    :param monkeypatch: the test's monkeypatch (the variable is gone after the test).
    :param base_url: the API's base URL, e.g. the emulator's ``base_url``.
    :param conn_id: the connection id.
    :param api_key: the key (the recognisable ``TEST_API_KEY`` by default, so leak searches can find it).
    :param extra: connection extras, such as ``max_retries`` and ``timeout``.
    :return: the connection as set.
    """
    conn: dict[str, Any] = {"conn_type": "openai_batch", "host": base_url, "password": api_key}
    if extra:
        conn["extra"] = extra
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps(conn))
    return conn


def connected_emulator(emulator: Any, monkeypatch: Any, **extra: Any) -> Iterator[Any]:
    """The body of an ``emulator`` fixture: ``openai_default`` on the emulator, faults cleared afterwards.

    Use as ``yield from connected_emulator(openai_emulator, monkeypatch, timeout=10)``.

    :param emulator: the (reset) emulator handle.
    :param extra: connection extras, such as ``max_retries`` and ``timeout``.
    """
    clients_module.clear_async_client_cache()
    openai_connection(monkeypatch, emulator.base_url, **extra)
    yield emulator
    emulator.clear_faults()
    clients_module.clear_async_client_cache()


def dag_env(monkeypatch: Any, prefix: str, **values: Any) -> None:
    """Set a test DAG's parse-time parameters: ``{prefix}_{NAME}`` for each ``name=value``.

    :param prefix: the DAG's variable prefix, such as ``RELIABILITY`` (tests/dags/reliability_dags.py).
    """
    for name, value in values.items():
        monkeypatch.setenv(f"{prefix}_{name.upper()}", str(value))


def short_client_backoff(monkeypatch: Any, seconds: float = 0.05) -> None:
    """Make openai-python's retry backoff start at ``seconds`` instead of 0.5 s (doubling up to 8 s).

    For tests of *what* is retried (each attempt is counted in the emulator's journal), not of how long a
    retry waits: openai's delays are unit-tested against the real constants in tests/unit/hooks/. A server's
    ``Retry-After`` is still honoured as sent.
    """
    monkeypatch.setattr("openai._base_client.INITIAL_RETRY_DELAY", seconds)


def has_task_state_store() -> bool:
    """Whether this Airflow keeps a task state store (3.3+): tests of the recorded submission need one."""
    from airflow.sdk.execution_time import context

    return hasattr(context, "TaskStateStoreAccessor")
