"""Twenty deferrable batch tasks in one DAG run, for the two-triggerer system test (copied to its dags).

Task ``part_NN`` reads ``requests/part-NN.jsonl`` and lands in ``results/part-NN`` under the storage root (the
Variable ``openai_batch_example_base``); each is its own partition, so each pays for exactly one batch. No
retries: a trigger lost with its triggerer must be finished by the surviving triggerer, not hidden by a retry.
"""

from __future__ import annotations

import pendulum
from airflow.sdk import dag

from airflow_provider_openai_batch.operators.openai_batch import OpenAIBatchOperator

BASE = "{{ var.value.get('openai_batch_example_base') }}"
TASKS = 20


@dag(
    schedule=None,
    start_date=pendulum.datetime(2026, 11, 1, tz="UTC"),
    catchup=False,
    max_active_tasks=TASKS,  # all deferred at once (the default cap is 16)
    tags=["system-test"],
)
def openai_batch_twenty():
    for i in range(TASKS):
        OpenAIBatchOperator(
            task_id=f"part_{i:02d}",
            input_path=f"{BASE}/requests/part-{i:02d}.jsonl",
            output_path=f"{BASE}/results/part-{i:02d}",
            endpoint="/v1/chat/completions",
            deferrable=True,
            retries=0,
            poll_interval=1.0,
        )


openai_batch_twenty()
