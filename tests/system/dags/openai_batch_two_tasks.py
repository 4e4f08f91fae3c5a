"""Two batch tasks deferred at once on one triggerer and one connection (so one shared status board), whose
batches finish at different times: a small input and a larger one. For tests/system/test_try_it.py, which
checks that each task's trigger log holds its own batch's lines only.

Local storage under ``$OPENAI_BATCH_TWO_TASKS_DIR``: ``small.jsonl`` and ``large.jsonl`` in, ``results/<task>`` out.
"""

from __future__ import annotations

import os

import pendulum
from airflow.sdk import dag

from airflow_provider_openai_batch.operators.openai_batch import OpenAIBatchOperator

ROOT = os.environ.get("OPENAI_BATCH_TWO_TASKS_DIR", "/nonexistent")


@dag(schedule=None, start_date=pendulum.datetime(2026, 11, 1, tz="UTC"), catchup=False)
def openai_batch_two_tasks():
    for name in ("small", "large"):
        OpenAIBatchOperator(
            task_id=name,
            input_path=f"{ROOT}/{name}.jsonl",
            output_path=f"{ROOT}/results/{name}",
            deferrable=True,
            poll_interval=0.5,
            # On a loaded machine Airflow's LocalExecutor can report a resumed task's earlier workload as finished
            # while it runs again, and the scheduler fails the try ("... finished with state success, but the task
            # instance's state attribute is running"): Airflow's race, survived as a user would, with a retry
            # (it re-lands the same batch, paying nothing more).
            retries=1,
            retry_delay=pendulum.duration(seconds=2),
        )


openai_batch_two_tasks()
