"""The README's deployment recipe, run as written: ``scripts/try-it.sh`` (which the README quotes verbatim) on a
fresh AIRFLOW_HOME, with the emulator and moto_server it starts itself, and Airflow's four processes started
separately. Then, on that same deployment, what a newcomer checks next:

- a clear of a task that had succeeded: its link and batch ids are in XCom again, its log names the batch it
  re-landed, nothing new is paid, and the asset event says ``relanded: true``;
- two tasks deferred at once on the one triggerer, whose batches finish at different times: each task's trigger
  log holds its own batch's lines only; the shared status board's lines are in the triggerer's own log.

The environment is built from scratch (no AIRFLOW_* or OPENAI_* of the pytest process); only the ports, the
DAGs folder and the log-server ports are chosen here, as a user would set them.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from openai import OpenAI

from airflow_provider_openai_batch.emulator.testing import EmulatorClient
from tests.support.builders import write_input
from tests.system.support import REPO, VENV_BIN, Airflow, free_port, tail, wait_until

pytestmark = pytest.mark.system

SCRIPT = REPO / "scripts" / "try-it.sh"
DAG_ID, TWO_TASKS = "openai_batch_daily", "openai_batch_two_tasks"
SCRIPT_TIMEOUT = 900  # start-up, three paid runs and the scheduled one, on a loaded 2-core machine
STEP_TIMEOUT = 240


class Deployment(Airflow):
    """The processes the script left running: one process group, the script's session."""

    script: subprocess.Popen | None = None
    emulator: EmulatorClient | None = None

    def check_alive(self) -> None:  # the components are the script's children, not ours: read the DB
        pass

    def diagnostics(self) -> str:
        logs = self.home / "try-it-logs"
        parts = (
            [f"----- {p.name} -----\n{tail(p)}" for p in sorted(logs.glob("*.log"))] if logs.exists() else []
        )
        parts.append(f"----- script output -----\n{tail(self.out_dir / 'try-it.out', 60)}")
        return "\n".join(parts)


@pytest.fixture
def deployment(tmp_path: Path) -> Iterator[Deployment]:
    home, dags, out, two = (tmp_path / d for d in ("airflow-home", "dags", "output", "two-tasks"))
    for d in (dags, out, two):
        d.mkdir()
    for dag_file in (
        REPO / "example_dags" / "openai_batch_daily.py",
        Path(__file__).parent / "dags" / f"{TWO_TASKS}.py",
    ):
        (dags / dag_file.name).write_bytes(dag_file.read_bytes())
    ports = {"API_PORT": free_port(), "EMULATOR_PORT": free_port(), "S3_PORT": free_port()}
    base = {
        k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "OPENAI", "_AIRFLOW", "PYTEST"))
    }
    env = {
        **base,
        "PATH": f"{VENV_BIN}{os.pathsep}{base.get('PATH', '')}",
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(dags),
        **{k: str(v) for k, v in ports.items()},
        # Not the defaults (8793/8794): other deployments may run on this machine.
        "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
        "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(free_port()),
        "AIRFLOW__OPENAI_BATCH__SUMMARY_LOG_INTERVAL": "1",
        # A loaded test machine answers the workers' Execution API calls slowly (the default gives up after 5 s).
        "AIRFLOW__WORKERS__EXECUTION_API_TIMEOUT": "60",
        "OPENAI_BATCH_TWO_TASKS_DIR": str(two),
    }
    dep = Deployment(home=home, storage=two, env=env, out_dir=out, fernet_key="")
    with (out / "try-it.out").open("wb") as sink:
        dep.script = subprocess.Popen(
            ["bash", str(SCRIPT)], env=env, cwd=tmp_path, stdout=sink, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True,  # its background processes stay in this group
        )  # fmt: skip
    dep.emulator = EmulatorClient(f"http://127.0.0.1:{ports['EMULATOR_PORT']}/v1")
    try:
        yield dep
    finally:
        try:
            os.killpg(dep.script.pid, signal.SIGTERM)
            time.sleep(5)
            os.killpg(dep.script.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _rest_api(dep: Airflow) -> httpx.Client:
    """The REST API, logged in as the README says: user admin, the simple auth manager's generated password."""
    api = f"http://127.0.0.1:{dep.env['API_PORT']}"
    password = json.loads((dep.home / "simple_auth_manager_passwords.json.generated").read_text())["admin"]
    login = httpx.post(f"{api}/auth/token", json={"username": "admin", "password": password}, timeout=60)
    assert login.status_code == 201, login.text
    token = login.json()["access_token"]
    return httpx.Client(base_url=f"{api}/api/v2", headers={"Authorization": f"Bearer {token}"}, timeout=60)


def _ti(dep: Airflow, dag_id: str, run_id: str, task_id: str) -> tuple | None:
    rows = dep.query(
        "SELECT state, try_number FROM task_instance WHERE dag_id = ? AND run_id = ? AND task_id = ?",
        dag_id,
        run_id,
        task_id,
    )
    return rows[0] if rows else None


def _asset_events(dep: Airflow, run_id: str) -> list[tuple[list[str], bool]]:
    """The results asset's events from run ``run_id``, oldest first: (batch ids, relanded)."""
    events = dep.query(
        "SELECT e.extra FROM asset_event e JOIN asset a ON a.id = e.asset_id"
        " WHERE a.name = 'openai_batch_daily_results' AND e.source_run_id = ? ORDER BY e.id",
        run_id,
    )
    return [(extra["batch_ids"], extra["relanded"]) for extra in (json.loads(e[0]) for e in events)]


def _xcoms(dep: Airflow, dag_id: str, run_id: str, task_id: str) -> dict[str, object]:
    rows = dep.query(
        "SELECT key, value FROM xcom WHERE dag_id = ? AND run_id = ? AND task_id = ?", dag_id, run_id, task_id
    )
    return {key: json.loads(value) if isinstance(value, str | bytes) else value for key, value in rows}


@pytest.mark.timeout(SCRIPT_TIMEOUT + 3 * STEP_TIMEOUT)
def test_the_readme_recipe_runs_and_a_clear_and_two_triggers_log_what_a_newcomer_expects(deployment):
    dep, started = deployment, time.monotonic()
    try:
        code = dep.script.wait(SCRIPT_TIMEOUT)
    except subprocess.TimeoutExpired:
        pytest.fail(f"scripts/try-it.sh did not finish in {SCRIPT_TIMEOUT}s\n{dep.diagnostics()}")
    script_seconds = time.monotonic() - started
    output = (dep.out_dir / "try-it.out").read_text(errors="replace")
    assert code == 0, f"scripts/try-it.sh exited {code}\n{dep.diagnostics()}"

    # What the script says: four runs succeeded (three queued while paused, one scheduled by the unpause: the
    # latest day), the results folder of 2026-11-01 read back, and where to log in.
    runs = dep.query("SELECT run_id, run_type, logical_date, state FROM dag_run WHERE dag_id = ?", DAG_ID)
    assert sorted((r[1], r[3]) for r in runs) == [
        ("backfill", "success"), ("backfill", "success"), ("manual", "success"), ("scheduled", "success")
    ], runs  # fmt: skip
    assert "Connection success!" in output
    for i in range(3):
        assert f"2026-11-01-{i} 200 " in output, output
    assert f"password in {dep.home}/simple_auth_manager_passwords.json.generated" in output
    assert dep.emulator is not None
    paid = dep.emulator.paid_creates()
    assert len(paid) == len(set(paid)) == 4, paid  # one batch per run, none twice

    # --- a clear of the successful 2026-11-01 run's batch task ------------------------------------------
    (run_id,) = [r[0] for r in runs if r[2].startswith("2026-11-01")]
    before = _xcoms(dep, DAG_ID, run_id, "run_batch")
    (batch_id,) = before["openai_batch_ids"]
    page = f"{dep.emulator.root_url}/batches/{batch_id}"
    assert before["_link_OpenAIBatchLink"] == page
    # On a loaded machine Airflow's LocalExecutor can report a resumed task's deferred workload as finished while
    # it runs again, and the scheduler fails that try (apache/airflow#72716); the example DAG's retry re-lands the
    # batch, paying nothing more. So the clear makes the try after whichever one succeeded.
    state, tries = _ti(dep, DAG_ID, run_id, "run_batch")  # type: ignore[misc]
    assert state == "success", (state, tries)
    events_before = _asset_events(dep, run_id)
    assert [ids for ids, _ in events_before] == [[batch_id]], events_before  # one success, one event
    assert tries > 1 or events_before == [([batch_id], False)], events_before  # a first try landed it anew
    api = _rest_api(dep)  # as fast as a UI click, where each CLI call starts Airflow anew
    cleared = api.post(
        f"/dags/{DAG_ID}/clearTaskInstances",
        json={"dry_run": False, "only_failed": False, "task_ids": ["run_batch"], "dag_run_id": run_id},
    )
    assert cleared.status_code == 200, cleared.text
    wait_until(
        dep,
        f"the cleared run_batch to succeed on try {tries + 1}",
        lambda: _ti(dep, DAG_ID, run_id, "run_batch") == ("success", tries + 1),
        STEP_TIMEOUT,
        interval=1,
    )
    after = _xcoms(dep, DAG_ID, run_id, "run_batch")
    assert after["openai_batch_ids"] == [batch_id] and after["openai_batch_url"] == page
    assert after["_link_OpenAIBatchLink"] == page  # the UI's extra link
    (log,) = [
        p for p in (dep.home / "logs").rglob(f"attempt={tries + 1}.log") if f"run_id={run_id}" in str(p)
    ]
    assert (
        f"Re-landing batch {batch_id} (created by an earlier try, completed): nothing new paid"
        in log.read_text()
    )
    assert dep.emulator.paid_creates() == paid
    assert _asset_events(dep, run_id) == [*events_before, ([batch_id], True)]
    # No task asked for an XCom that was not there (the link reads none): not in the scheduler's output, where
    # its LocalExecutor workers' supervisors write, nor in a task log.
    for path in [dep.home / "try-it-logs" / "scheduler.log", *(dep.home / "logs").rglob("*.log")]:
        assert "XCom not found" not in path.read_text(errors="replace"), path

    # --- two tasks deferred at once, batches finishing at different times ------------------------------
    write_input(dep.storage / "small.jsonl", [f"s-{i}" for i in range(2)])
    write_input(dep.storage / "large.jsonl", [f"l-{i}" for i in range(40)])
    dep.emulator.configure(rate=8)  # 2 requests: a quarter second; 40: five seconds
    assert api.patch(f"/dags/{TWO_TASKS}", json={"is_paused": False}).status_code == 200
    triggered = api.post(f"/dags/{TWO_TASKS}/dagRuns", json={"logical_date": None})
    assert triggered.status_code == 200, triggered.text
    two_run = wait_until(
        dep,
        f"a run of {TWO_TASKS} to succeed",
        lambda: [
            r[0]
            for r in dep.query("SELECT run_id, state FROM dag_run WHERE dag_id = ?", TWO_TASKS)
            if r[1] == "success"
        ],  # fmt: skip
        STEP_TIMEOUT,
        interval=1,
    )[0]
    ids = {t: _xcoms(dep, TWO_TASKS, two_run, t)["openai_batch_ids"][0] for t in ("small", "large")}
    assert len(dep.emulator.paid_creates()) == len(paid) + 2  # one batch each, a retry (if any) paid nothing
    client = OpenAI(base_url=dep.emulator.base_url, api_key="sk-emulator")
    finished = {t: client.batches.retrieve(b).completed_at for t, b in ids.items()}
    assert finished["small"] < finished["large"], finished
    trigger_logs = {
        t: "\n".join(
            p.read_text(errors="replace")
            for p in (dep.home / "logs").rglob("*.log")
            if f"dag_id={TWO_TASKS}" in str(p) and f"task_id={t}" in str(p) and ".trigger." in p.name
        )
        for t in ids
    }
    for task, other in (("small", "large"), ("large", "small")):
        text = trigger_logs[task]
        assert f"Batch {ids[task]} completed" in text, f"{task}'s trigger log:\n{text}"
        assert ids[other] not in text, f"{task}'s trigger log names {other}'s batch:\n{text}"
        assert "Shared status board" not in text and "GET /v1/batches" not in text, text
    triggerer_log = (dep.home / "try-it-logs" / "triggerer.log").read_text(errors="replace")
    assert "Shared status board refresh" in triggerer_log
    assert "Shared status board:" in triggerer_log  # the summary, once a second here
    print(f"scripts/try-it.sh took {script_seconds:.0f}s; the whole test {time.monotonic() - started:.0f}s")
