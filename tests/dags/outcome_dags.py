"""Test DAGs for tests/integration/test_outcomes.py and test_sharding.py, parametrised at parse time.

``OPENAI_BATCH_OUTCOME_KWARGS``: JSON of OpenAIBatchOperator keyword arguments (``limits`` as a dict of
``Limits`` fields, ``timeout`` in seconds, ``output_schema`` ``"pydantic:module.Model"`` for a model class). ``OPENAI_BATCH_OUTCOME_GEN``: JSON ``{"n", "output_path",
"prefix", "limits", "max_shards_in_flight", "deferrable", "calls_file"}`` for the ``@task.openai_batch`` DAG.
"""

from __future__ import annotations

import importlib
import json
import os

import pendulum
from airflow.sdk import dag, task

from airflow_provider_openai_batch.batch_input import Limits
from airflow_provider_openai_batch.operators.openai_batch import OpenAIBatchOperator

START = pendulum.datetime(2026, 11, 1, tz="UTC")


def _kwargs() -> dict:
    kwargs = json.loads(os.environ.get("OPENAI_BATCH_OUTCOME_KWARGS") or "{}")
    if "limits" in kwargs:
        kwargs["limits"] = Limits(**kwargs["limits"])
    schema = kwargs.get("output_schema")
    if isinstance(schema, str) and schema.startswith("pydantic:"):  # a model class, named by import path
        module, _, name = schema.removeprefix("pydantic:").rpartition(".")
        kwargs["output_schema"] = getattr(importlib.import_module(module), name)
    kwargs.setdefault("input_path", "/nonexistent/requests.jsonl")
    kwargs.setdefault("output_path", "/nonexistent/results")
    kwargs.setdefault("poll_interval", 0.2)
    kwargs.setdefault("deferrable", True)
    return kwargs


@dag(dag_id="openai_batch_outcome", schedule=None, start_date=START, catchup=False)
def openai_batch_outcome():
    OpenAIBatchOperator(task_id="run_batch", **_kwargs())


openai_batch_outcome()


@dag(dag_id="openai_batch_outcome_generator", schedule=None, start_date=START, catchup=False)
def openai_batch_outcome_generator():
    spec = json.loads(os.environ.get("OPENAI_BATCH_OUTCOME_GEN") or "{}")

    @task.openai_batch(
        output_path=spec.get("output_path", "/nonexistent/results"),
        endpoint="/v1/embeddings",
        custom_id_prefix=spec.get("prefix", "gen-{{ ds }}"),
        deferrable=spec.get("deferrable", True),
        poll_interval=0.2,
        limits=Limits(**spec["limits"]) if "limits" in spec else None,
        max_shards_in_flight=spec.get("max_shards_in_flight"),
    )
    def generate(n: int):
        if spec.get("calls_file"):  # one line per time the requests are generated
            with open(spec["calls_file"], "a") as fh:
                fh.write("called\n")
        for i in range(n):
            yield {"model": "text-embedding-3-small", "input": f"item {i}"}

    generate(spec.get("n", 3))


openai_batch_outcome_generator()
