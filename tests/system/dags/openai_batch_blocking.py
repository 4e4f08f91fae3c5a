"""The example's batch task in non-deferrable mode, for the system test's kill check (copied into its dags folder).

The worker itself polls the batch; marking the task failed makes the task-SDK supervisor SIGTERM the task process,
whose handler calls ``OpenAIBatchOperator.on_kill``.
"""

from __future__ import annotations

import os

import pendulum
from airflow.sdk import dag

from airflow_provider_openai_batch.operators.openai_batch import OpenAIBatchOperator

BASE = "{{ var.value.get('openai_batch_example_base') }}"


@dag(schedule=None, start_date=pendulum.datetime(2026, 11, 1, tz="UTC"), catchup=False, tags=["system-test"])
def openai_batch_blocking():
    OpenAIBatchOperator(
        task_id="run_batch",
        input_path=f"{BASE}/requests/{{{{ ds }}}}.jsonl",
        output_path=f"{BASE}/results-blocking/{{{{ ds }}}}",
        endpoint="/v1/chat/completions",
        metadata={"partition": "{{ ds }}"},
        deferrable=False,
        retries=0,
        poll_interval=float(os.environ.get("OPENAI_BATCH_EXAMPLE_POLL_INTERVAL", "60")),
    )


openai_batch_blocking()
