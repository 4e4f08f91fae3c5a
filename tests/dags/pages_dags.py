"""Test DAGs for the batch pages (tests/integration/test_batch_pages.py): two alike DAGs, so one can be hidden.

``OPENAI_BATCH_PAGES_KWARGS``: JSON of OpenAIBatchOperator keyword arguments (input and output paths, metadata).
"""

from __future__ import annotations

import json
import os

import pendulum
from airflow.sdk import DAG

from airflow_provider_openai_batch.operators.openai_batch import OpenAIBatchOperator

for _dag_id in ("openai_batch_pages_shown", "openai_batch_pages_hidden"):
    with DAG(_dag_id, schedule=None, start_date=pendulum.datetime(2026, 11, 1, tz="UTC"), catchup=False):
        _kwargs = json.loads(os.environ.get("OPENAI_BATCH_PAGES_KWARGS") or "{}")
        _kwargs.setdefault("input_path", "/nonexistent/requests.jsonl")
        _kwargs.setdefault("output_path", "/nonexistent/results")
        OpenAIBatchOperator(task_id="score", deferrable=True, poll_interval=0.2, **_kwargs)
