"""Test DAG for the results-and-money suite (tests/integration/test_results_and_money.py): the operator's budget,
cost, file cleanup, asset events and a person's cancel, run end to end.

Parametrised at parse time by ``MONEY_*`` environment variables, which the tests set (monkeypatch) before
``run_dag`` parses the DAG folder:

- ``MONEY_INPUT``: the JSONL input (local path or ObjectStoragePath URL);
- ``MONEY_OUTPUT``: the results folder (the run's ``ds`` is appended, or its ``run_id`` with
  ``MONEY_OUTPUT_BY_RUN=1``: each DAG run of a date lands elsewhere);
- ``MONEY_POLL_INTERVAL`` (default 0.2 s), ``MONEY_MAX_FAILED_RATIO`` (default 0);
- ``MONEY_MAX_COST_USD`` (default none: no budget), ``MONEY_DELETE_FILES`` (``1`` for delete_files),
  ``MONEY_FRESH_RUN`` (``1`` for fresh_run);
- ``MONEY_OUTLET``: the name of the asset the task declares as its outlet (default ``money_results``: always
  the same, so the first serialized version of the DAG already has it; Airflow 3.1's ``dag.test()`` keeps it).
"""

from __future__ import annotations

import os

import pendulum
from airflow.sdk import Asset, dag

from airflow_provider_openai_batch.operators.openai_batch import OpenAIBatchOperator


def _env(name: str, default: str = "") -> str:
    return os.environ.get(f"MONEY_{name}", default)


@dag(
    schedule=None,
    start_date=pendulum.datetime(2026, 11, 1, tz="UTC"),
    catchup=False,
    tags=["test", "money"],
)
def money_batch():
    budget, outlet = _env("MAX_COST_USD"), _env("OUTLET")
    OpenAIBatchOperator(
        task_id="run_batch",
        input_path=_env("INPUT", "/nonexistent/money-input.jsonl"),
        output_path=_env("OUTPUT", "/nonexistent/money-output")
        + ("/{{ run_id }}" if _env("OUTPUT_BY_RUN") == "1" else "/{{ ds }}"),
        endpoint="/v1/chat/completions",
        metadata={"suite": "money", "partition": "{{ ds }}"},
        deferrable=True,
        poll_interval=float(_env("POLL_INTERVAL", "0.2")),
        max_failed_ratio=float(_env("MAX_FAILED_RATIO", "0")),
        max_cost_usd=float(budget) if budget else None,
        delete_files=_env("DELETE_FILES", "0") == "1",
        fresh_run=_env("FRESH_RUN", "0") == "1",
        outlets=[Asset(outlet or "money_results")],
    )


money_batch()
