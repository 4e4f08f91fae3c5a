"""One deferrable batch task per date, for the batch-queue system test (copied to its dags).

Each date's partition ``requests/<ds>.jsonl`` fits the model's enqueued-token limit; a backfill of several dates
does not. One retry is allowed so that the test can prove none was spent: a full queue means waiting.
"""

from __future__ import annotations

import pendulum
from airflow.sdk import dag

from airflow_provider_openai_batch.operators.openai_batch import OpenAIBatchOperator

BASE = "{{ var.value.get('openai_batch_example_base') }}"


@dag(
    schedule="@daily",
    start_date=pendulum.datetime(2026, 11, 1, tz="UTC"),
    catchup=False,
    max_active_runs=8,
    tags=["system-test"],
)
def openai_batch_queue():
    OpenAIBatchOperator(
        task_id="classify",
        input_path=BASE + "/requests/{{ ds }}.jsonl",
        output_path=BASE + "/results/{{ ds }}",
        endpoint="/v1/chat/completions",
        deferrable=True,
        retries=1,
        poll_interval=1.0,
    )


openai_batch_queue()
