"""Test DAG for the fault-injection and security suites (tests/integration/test_faults.py, test_security.py).

Parametrised at parse time by ``RELIABILITY_*`` environment variables, which the tests set (monkeypatch)
before ``run_dag`` parses the DAG folder:

- ``RELIABILITY_INPUT``: the JSONL input (local path or ObjectStoragePath URL);
- ``RELIABILITY_OUTPUT``: the results folder;
- ``RELIABILITY_POLL_INTERVAL`` (default 0.2 s), ``RELIABILITY_MAX_FAILED_RATIO`` (default 0),
  ``RELIABILITY_DEFERRABLE`` (default 1), ``RELIABILITY_TIMEOUT`` (seconds, default none),
  ``RELIABILITY_ON_TIMEOUT`` (default ``cancel``), ``RELIABILITY_ON_INPUT_CHANGE`` (default ``resubmit``),
  ``RELIABILITY_FRESH_RUN`` (``1`` for fresh_run).
"""

from __future__ import annotations

import os

import pendulum
from airflow.sdk import dag

from airflow_provider_openai_batch.operators.openai_batch import OpenAIBatchOperator


def _env(name: str, default: str) -> str:
    return os.environ.get(f"RELIABILITY_{name}", default)


@dag(
    schedule=None,
    start_date=pendulum.datetime(2026, 11, 1, tz="UTC"),
    catchup=False,
    tags=["test", "reliability"],
)
def reliability_batch():
    timeout = _env("TIMEOUT", "")
    OpenAIBatchOperator(
        task_id="run_batch",
        input_path=_env("INPUT", "/nonexistent/reliability-input.jsonl"),
        output_path=_env("OUTPUT", "/nonexistent/reliability-output") + "/{{ ds }}",
        endpoint="/v1/chat/completions",
        metadata={"suite": "reliability", "partition": "{{ ds }}"},
        deferrable=_env("DEFERRABLE", "1") == "1",
        poll_interval=float(_env("POLL_INTERVAL", "0.2")),
        max_failed_ratio=float(_env("MAX_FAILED_RATIO", "0")),
        timeout=float(timeout) if timeout else None,
        on_timeout=_env("ON_TIMEOUT", "cancel"),
        on_input_change=_env("ON_INPUT_CHANGE", "resubmit"),
        fresh_run=_env("FRESH_RUN", "0") == "1",
    )


reliability_batch()
