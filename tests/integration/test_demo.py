"""`make demo` as a newcomer runs it: the answer on screen, Airflow's own output in the log file it names."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from airflow_provider_openai_batch.demo import DATE

pytestmark = pytest.mark.integration


def test_demo_prints_its_result_and_where_it_landed_without_airflow_s_noise(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "OPENAI", "_AIRFLOW"))}
    env["OPENAI_BATCH_DEMO_DIR"] = str(tmp_path / "demo")
    done = subprocess.run(
        [sys.executable, "-m", "airflow_provider_openai_batch.demo"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    log = tmp_path / "demo" / "demo.log"
    assert done.returncode == 0, f"{done.stdout}\n{done.stderr}\n{log.read_text() if log.exists() else ''}"
    shown = done.stdout + done.stderr
    assert (
        "DAG run: success" in shown
        and f"Airflow's own output (start-up, task and trigger logs): {log}" in shown
    )
    result = json.loads(shown[shown.index("{\n") : shown.index("\n}\n") + 2])
    assert result["status"] == "completed" and result["request_counts"]["completed"] == 5
    landed = tmp_path / "demo" / "storage" / "results" / DATE
    assert f"  {landed / 'output.jsonl'}  (5 lines)" in shown
    # Airflow's log lines (structlog's "[info     ]", the task runner's) are in the file, not on screen.
    assert "[info" not in shown and "Task instance" not in shown, shown
    assert "[info" in log.read_text()
