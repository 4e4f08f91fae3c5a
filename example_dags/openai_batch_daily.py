"""Daily OpenAI batch over dated JSONL partitions: requests/{{ ds }}.jsonl in → results/{{ ds }}/ out.

Storage root: the Airflow Variable ``openai_batch_example_base`` (e.g. ``s3://aws_default@my-bucket`` or
``file:///data/openai``). Catch-up is off: every scheduled run is a paid batch, and with catch-up on,
unpausing this DAG would submit one for every day since ``start_date``. Past dates are run on purpose with a
backfill (``airflow backfill create --dag-id openai_batch_daily --from-date ... --to-date ...``), which lands
one results folder per date.
"""

from __future__ import annotations

import os

import pendulum
from airflow.sdk import Asset, dag, task

from airflow_provider_openai_batch.operators.openai_batch import OpenAIBatchOperator

BASE = "{{ var.value.get('openai_batch_example_base', 's3://aws_default@my-openai-batches') }}"


@dag(
    schedule="@daily",
    start_date=pendulum.datetime(2026, 11, 1, tz="UTC"),
    catchup=False,  # unpausing runs the latest day only; see the module docstring
    max_active_runs=3,
    tags=["openai", "example"],
    default_args={"retries": 2},
)
def openai_batch_daily():
    batch = OpenAIBatchOperator(
        task_id="run_batch",
        input_path=f"{BASE}/requests/{{{{ ds }}}}.jsonl",
        output_path=f"{BASE}/results/{{{{ ds }}}}",
        endpoint="/v1/chat/completions",
        metadata={"partition": "{{ ds }}"},
        deferrable=True,
        # Set to submit a new batch even where this run already has one (a deliberate re-run).
        fresh_run=bool(os.environ.get("OPENAI_BATCH_EXAMPLE_FRESH_RUN")),
        poll_interval=float(os.environ.get("OPENAI_BATCH_EXAMPLE_POLL_INTERVAL", "60")),
        # An asset event with the result summary: example_dags/openai_batch_downstream.py runs on it.
        outlets=[Asset("openai_batch_daily_results")],
    )

    @task
    def summarise(result: dict) -> str:
        counts = result["request_counts"]
        usage = result["usage"]
        # One output file (output_path), or on object storage one per OpenAI file (output_paths; read_results
        # reads them all).
        files = result["output_paths"]
        where = result["output_path"] or f"{len(files)} files beside {result['manifest_path']}"
        summary = (
            f"batch {result['batch_id']} {result['status']}: {counts['completed']}/{counts['total']} requests "
            f"succeeded, {counts['failed']} failed, {usage['total_tokens']} tokens; output at {where}"
        )
        print(summary)
        return summary

    summarise(batch.output)


openai_batch_daily()
