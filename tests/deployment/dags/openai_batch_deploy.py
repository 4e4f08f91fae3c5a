"""The deployment tests' DAG (copied to the deployment's read-only DAGs folder): one deferrable batch task per
date, reading ``requests/<ds>.jsonl`` and landing in ``results/<ds>/`` on S3 (the Variable
``openai_batch_deploy_base``), the only storage the processes share. Two requests per shard, so the tests' six-line
inputs make three shards, three paid batches per date. One retry: a worker killed mid-task is retried on another.
"""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.sdk import dag

from airflow_provider_openai_batch.operators.openai_batch import OpenAIBatchOperator
from airflow_provider_openai_batch.requests_input.shards import Limits

BASE = "{{ var.value.openai_batch_deploy_base }}"


@dag(
    schedule="@daily",
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=16,
    max_active_tasks=16,
    tags=["deployment-test"],
    default_args={"retries": 1, "retry_delay": timedelta(seconds=2)},
)
def openai_batch_deploy():
    OpenAIBatchOperator(
        task_id="run_batch",
        input_path=f"{BASE}/requests/{{{{ ds }}}}.jsonl",
        output_path=f"{BASE}/results/{{{{ ds }}}}",
        endpoint="/v1/chat/completions",
        metadata={"partition": "{{ ds }}"},
        deferrable=True,
        poll_interval=1.0,
        limits=Limits(max_requests=2, safety_margin=1.0),
    )


openai_batch_deploy()
