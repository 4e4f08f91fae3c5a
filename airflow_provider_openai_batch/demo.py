"""`make demo`: the daily example DAG, end to end, on the bundled emulator and local storage.

Starts the emulator, writes a day's request partition, runs ``openai_batch_daily`` for that date through Airflow
(``dag.test()``, with the deferral running through the real trigger), then prints the BatchResult and the files.
Everything lives under ``./.demo`` (or ``$OPENAI_BATCH_DEMO_DIR``); nothing leaves this machine.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

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

    emulator = start_emulator(root / "emulator")
    base_url = emulator.base_url
    try:
        os.environ["AIRFLOW_CONN_OPENAI_DEFAULT"] = json.dumps(
            {"conn_type": "openai_batch", "host": base_url, "password": DEMO_KEY}
        )
        print(f"Emulator: {base_url}")
        count = _write_requests(storage / "requests" / f"{DATE}.jsonl")
        print(f"Wrote {count} requests to {storage / 'requests' / f'{DATE}.jsonl'}")

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
        print(f"\nDAG run {run.run_id}: {run.state}")
        with create_session() as session:
            rows = session.scalars(
                XComModel.get_many(
                    run_id=run.run_id, dag_ids=dag.dag_id, task_ids="run_batch", key="return_value"
                )
            ).all()
            result = XComModel.deserialize_value(rows[0]) if rows else None
        if result is None:
            print("No BatchResult was returned; see the task log above.")
            return 1
        print("\nBatchResult (the XCom return value):")
        print(json.dumps(result, indent=2))
        print("\nResults landed at:")
        for path in sorted((storage / "results" / DATE).iterdir()):
            print(f"  {path}  ({sum(1 for _ in open(path))} lines)")
        return 0 if str(run.state) in ("success", "DagRunState.SUCCESS") else 1
    finally:
        emulator.close()
        if emulator.process is not None:  # always set by start_emulator
            stop_emulator(emulator.process)


if __name__ == "__main__":
    sys.exit(main())
