"""`make demo`: the daily example DAG, end to end, on the bundled emulator and local storage.

Starts the emulator, writes a day's request partition, runs ``openai_batch_daily`` for that date through Airflow
(``dag.test()``, with the deferral running through the real trigger), then prints the BatchResult and the files.
Everything lives under ``./.demo`` (or ``$OPENAI_BATCH_DEMO_DIR``); nothing leaves this machine. Airflow's own
output (start-up, the task and trigger logs) goes to ``.demo/demo.log``, named on screen, so the terminal shows
only the answer.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

DATE = "2026-11-01"
# A recognisable fake key: the demo shows it reaches no log, XCom or result.
DEMO_KEY = "sk-demo-0000-not-a-real-key"


def _write_requests(path: Path) -> int:
    questions = [
        "Summarise the plot of Hamlet in one sentence.",
        "Give three names for a bakery in Lisbon.",
        "Translate 'good morning' into Italian.",
        "What is the boiling point of water at sea level in Fahrenheit?",
        "Write a haiku about data pipelines.",
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as fh:
        for i, question in enumerate(questions):
            request = {
                "custom_id": f"{DATE}-q{i}",
                "method": "POST",
                "url": "/v1/chat/completions",
                "body": {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": question}]},
            }
            fh.write(json.dumps(request) + "\n")
    return len(questions)


@contextlib.contextmanager
def _output_to(log_path: Path) -> Iterator[None]:
    """Send this process's stdout and stderr (file descriptors, so Airflow's handlers and children too) to
    ``log_path`` for the duration."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with open(log_path, "ab") as log:
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
        try:
            yield
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])


def main() -> int:
    root = Path(os.environ.get("OPENAI_BATCH_DEMO_DIR", ".demo")).resolve()
    storage = root / "storage"
    home = root / "airflow"
    home.mkdir(parents=True, exist_ok=True)
    repo = Path(__file__).resolve().parents[1]
    os.environ.update(
        {
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(repo / "example_dags"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
            "AIRFLOW_VAR_OPENAI_BATCH_EXAMPLE_BASE": f"file://{storage}",
            "OPENAI_BATCH_EXAMPLE_POLL_INTERVAL": "1",
        }
    )
    from airflow_provider_openai_batch.emulator.testing import start_emulator, stop_emulator

    log_path = root / "demo.log"
    log_path.unlink(missing_ok=True)
    with _output_to(log_path):
        emulator = start_emulator(root / "emulator")
    try:
        os.environ["AIRFLOW_CONN_OPENAI_DEFAULT"] = json.dumps(
            {"conn_type": "openai_batch", "host": emulator.base_url, "password": DEMO_KEY}
        )
        print(f"Emulator (the OpenAI Files + Batch API, local): {emulator.base_url}")
        requests = storage / "requests" / f"{DATE}.jsonl"
        count = _write_requests(requests)
        print(f"Wrote {count} requests to {requests}")
        print(f"Running the DAG openai_batch_daily for {DATE}; Airflow's log goes to {log_path} ...")
        with _output_to(log_path):
            state, result = _run_dag(repo)
        print(f"\nDAG run: {state}")
        if result is None:
            print(f"No BatchResult was returned; see the task log in {log_path}.")
            return 1
        print("\nBatchResult (the XCom return value):")
        print(json.dumps(result, indent=2))
        print("\nResults landed at:")
        for path in sorted((storage / "results" / DATE).iterdir()):
            print(f"  {path}  ({sum(1 for _ in open(path))} lines)")
        print(f"\nAirflow's own output (start-up, task and trigger logs): {log_path}")
        return 0 if state == "success" else 1
    finally:
        with _output_to(log_path):
            emulator.close()
            if emulator.process is not None:  # always set by start_emulator
                stop_emulator(emulator.process)


def _run_dag(repo: Path) -> tuple[str, dict[str, Any] | None]:
    """Run the daily example for DATE through ``dag.test()``; the run's state and the batch task's result."""
    import pendulum
    from airflow.models.xcom import XComModel
    from airflow.utils.db import resetdb
    from airflow.utils.session import create_session

    resetdb()
    try:
        from airflow.dag_processing.dagbag import DagBag
    except ImportError:  # Airflow 3.1
        from airflow.models.dagbag import DagBag  # type: ignore[no-redef]

    dag = DagBag(dag_folder=str(repo / "example_dags")).get_dag("openai_batch_daily")
    when = pendulum.parse(DATE)
    run = dag.test(logical_date=when, run_after=when)
    with create_session() as session:
        rows = session.scalars(
            XComModel.get_many(
                run_id=run.run_id, dag_ids=dag.dag_id, task_ids="run_batch", key="return_value"
            )
        ).all()
        result = XComModel.deserialize_value(rows[0]) if rows else None
    state = str(getattr(run.state, "value", run.state))
    return state, result


if __name__ == "__main__":
    sys.exit(main())
