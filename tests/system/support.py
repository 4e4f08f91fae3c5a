"""Real Airflow components for the system tests: a fresh AIRFLOW_HOME, each component a subprocess in its own
process group (so teardown reaches its workers and supervisors), and read-only access to the metadata DB.

The components get an environment built from scratch: the pytest process's AIRFLOW_* settings (set by
``tests/conftest.py`` for the in-process tests) are dropped, never inherited.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import httpx
import pytest

from tests.integration.conftest import TEST_API_KEY

REPO = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent
STARTUP_TIMEOUT = 120  # components up and the DAG parsed into the DB, on a loaded 2-core machine

T = TypeVar("T")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tail(path: Path, lines: int = 40) -> str:
    """The last ``lines`` lines of a text file, or why it could not be read."""
    try:
        text = path.read_text(errors="replace")
    except OSError as err:
        return f"<unreadable: {err}>"
    return "\n".join(text.splitlines()[-lines:])


def signal_group(proc: subprocess.Popen, sig: int) -> None:
    """Send ``sig`` to the process group of ``proc`` (its own session: pid == pgid)."""
    try:
        os.killpg(proc.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


@dataclass
class Airflow:
    """A fresh AIRFLOW_HOME and the component processes started on it.

    :param home: the AIRFLOW_HOME (sqlite DB, logs).
    :param storage: the local folder behind the ``openai_batch_example_base`` Variable.
    :param env: the environment every component and CLI call gets.
    :param out_dir: where each component's stdout and stderr are captured, as ``<name>.log``.
    :param fernet_key: the Fernet key in ``env``.
    """

    home: Path
    storage: Path
    env: dict[str, str]
    out_dir: Path
    fernet_key: str
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)
    killed: set[str] = field(default_factory=set)  # components the test killed on purpose

    @property
    def db_path(self) -> Path:
        return self.home / "airflow.db"

    @property
    def api_url(self) -> str:
        return self.env["AIRFLOW__API__BASE_URL"]

    def cli(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [str(VENV_BIN / "airflow"), *args],
            env=self.env,
            cwd=self.home,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        # Kept with the components' output, so it is searched for the key too.
        with (self.out_dir / "cli.log").open("a") as f:
            f.write(f"$ airflow {' '.join(args)} -> {result.returncode}\n{result.stdout}\n{result.stderr}\n")
        assert result.returncode == 0, f"airflow {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"
        return result

    def start(self, name: str, *args: str) -> None:
        """Start ``airflow <args>`` as the component ``name``, its output in ``<out_dir>/<name>.log``."""
        log = (self.out_dir / f"{name}.log").open("wb")
        self.procs[name] = subprocess.Popen(
            [str(VENV_BIN / "airflow"), *args],
            env=self.env,
            cwd=self.home,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # its own process group: the whole tree is killed in teardown
        )
        log.close()

    def start_all(self, port: int, triggerers: Iterable[str] = ("triggerer",)) -> None:
        """Start the scheduler, a triggerer per name in ``triggerers``, the dag-processor and the API server.

        :param port: the API server's port (the one in ``env``'s ``AIRFLOW__API__BASE_URL``).
        :param triggerers: component names for the triggerer processes.
        """
        self.start("scheduler", "scheduler", "--skip-serve-logs")
        for name in triggerers:
            self.start(name, "triggerer", "--skip-serve-logs")
        self.start("dag-processor", "dag-processor")
        self.start("api-server", "api-server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1")

    def kill(self, name: str) -> None:
        """SIGKILL the component ``name`` and every process of its group, as a machine dying would."""
        proc = self.procs[name]
        self.killed.add(name)
        signal_group(proc, signal.SIGKILL)
        proc.wait(10)

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                signal_group(proc, signal.SIGTERM)
        deadline = time.monotonic() + 15
        for proc in self.procs.values():
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
            # The group may hold children (workers, supervisors) even when the leader is gone.
            signal_group(proc, signal.SIGKILL)
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                pass

    def diagnostics(self) -> str:
        parts = []
        for name in (*self.procs, "cli"):
            path = self.out_dir / f"{name}.log"
            proc = self.procs.get(name)
            status = "" if proc is None else f" (exit code {proc.poll()})"
            parts.append(f"----- {name}{status}: tail of {path} -----\n{tail(path)}")
        for log in sorted((self.home / "logs").rglob("*.log")) if (self.home / "logs").exists() else []:
            if "dag_id=" in str(log):
                parts.append(f"----- task log {log.relative_to(self.home)} -----\n{tail(log, 25)}")
        return "\n".join(parts)

    def check_alive(self) -> None:
        for name, proc in self.procs.items():
            if name not in self.killed and proc.poll() is not None:
                pytest.fail(f"airflow {name} exited with code {proc.returncode}\n{self.diagnostics()}")

    def query(self, sql: str, *params: object) -> list[tuple]:
        """Read the metadata DB directly (read-only), retrying while a writer holds the lock."""
        for _ in range(50):
            try:
                conn = sqlite3.connect(f"file:{self.db_path}?mode=ro", uri=True, timeout=2)
                try:
                    return conn.execute(sql, params).fetchall()
                finally:
                    conn.close()
            except sqlite3.OperationalError as err:
                if "locked" not in str(err) and "busy" not in str(err):
                    raise
                time.sleep(0.1)
        raise AssertionError(f"metadata DB stayed locked: {sql}")


def component_env(
    home: Path, dags: Path, storage: Path, emulator_url: str, port: int, fernet_key: str
) -> dict[str, str]:
    """The environment of every component: built from scratch, nothing Airflow- or OpenAI-related inherited.

    :param home: the AIRFLOW_HOME.
    :param dags: the dags folder.
    :param storage: the local folder behind the ``openai_batch_example_base`` Variable.
    :param emulator_url: the emulator's ``.../v1`` URL, the host of the ``openai_default`` connection.
    :param port: the API server's port.
    :param fernet_key: a real Fernet key.
    """
    base = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("AIRFLOW", "OPENAI", "_AIRFLOW", "PYTEST")) and k not in ("PYTHONPATH",)
    }
    api_url = f"http://127.0.0.1:{port}"
    return {
        **base,
        "PATH": f"{VENV_BIN}{os.pathsep}{base.get('PATH', '')}",
        "PYTHONUNBUFFERED": "1",
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(dags),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "AIRFLOW__CORE__PARALLELISM": "4",
        "AIRFLOW__CORE__FERNET_KEY": fernet_key,  # a real key, as in production (it does not cover triggers)
        # SQLite's busy wait (5 s by default) runs out on a loaded machine: "database is locked" fails a write.
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}?timeout=60",
        # Workers (LocalExecutor) reach the Execution API on our API server: the default is localhost:8080.
        "AIRFLOW__API__BASE_URL": api_url,
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{api_url}/execution/",
        # Scheduler signs the workers' tokens, the API server checks them: one secret for both.
        "AIRFLOW__API_AUTH__JWT_SECRET": "system-test-jwt-secret-0123456789abcdef",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
        # Only the run we trigger: the DAG is @daily with catchup from 2026-11-01, which would otherwise fill
        # up with scheduled runs for dates that have no partition.
        "AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": "False",
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
        "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
        "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
        "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(free_port()),
        "AIRFLOW_CONN_OPENAI_DEFAULT": json.dumps(
            {"conn_type": "openai_batch", "host": emulator_url, "password": TEST_API_KEY}
        ),
        "AIRFLOW_VAR_OPENAI_BATCH_EXAMPLE_BASE": f"file://{storage}",
        "OPENAI_BATCH_EXAMPLE_POLL_INTERVAL": "0.5",
    }


def new_airflow(
    tmp_path: Path, emulator_url: str, dag_files: Iterable[Path], extra_env: Mapping[str, str] | None = None
) -> tuple[Airflow, int]:
    """A migrated AIRFLOW_HOME under ``tmp_path`` with ``dag_files`` in its dags folder; nothing started yet.

    :param tmp_path: the test's temporary folder.
    :param emulator_url: the emulator's ``.../v1`` URL.
    :param dag_files: DAG files copied into the dags folder.
    :param extra_env: settings over :func:`component_env`'s, for every component.
    :return: the Airflow and the API server's port, for :meth:`Airflow.start_all`.
    """
    from cryptography.fernet import Fernet

    home, dags, storage, out_dir = (tmp_path / d for d in ("airflow-home", "dags", "storage", "output"))
    for d in (home, dags, storage, out_dir):
        d.mkdir()
    for dag_file in dag_files:
        shutil.copy(dag_file, dags / dag_file.name)
    port = free_port()
    fernet_key = Fernet.generate_key().decode()
    env = {**component_env(home, dags, storage, emulator_url, port, fernet_key), **(extra_env or {})}
    af = Airflow(home=home, storage=storage, env=env, out_dir=out_dir, fernet_key=fernet_key)
    af.cli("db", "migrate", timeout=180)
    return af, port


def wait_until(
    af: Airflow, what: str, predicate: Callable[[], T], timeout: float, interval: float = 0.25
) -> T:
    """Call ``predicate`` until it returns something truthy and return that; fail the test after ``timeout``
    seconds or as soon as a component exits, with every component's output.

    :param af: the components, checked alive between calls.
    :param what: what is waited for, for the failure message.
    :param predicate: called every ``interval`` seconds.
    :param timeout: seconds.
    :param interval: seconds between calls.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        af.check_alive()
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}\n{af.diagnostics()}")
        time.sleep(interval)


def api_up(api_url: str) -> bool:
    try:
        return httpx.get(f"{api_url}/api/v2/monitor/health", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def wait_until_parsed(af: Airflow, *dag_ids: str) -> None:
    """The API server answers and each DAG is serialized into the DB, active."""
    wait_until(af, "the API server's health endpoint", lambda: api_up(af.api_url), STARTUP_TIMEOUT)
    for dag_id in dag_ids:
        wait_until(
            af,
            f"the dag-processor to serialize {dag_id}",
            lambda dag_id=dag_id: af.query("SELECT 1 FROM serialized_dag WHERE dag_id = ?", dag_id),
            STARTUP_TIMEOUT,
        )
        paused = af.query("SELECT is_paused FROM dag WHERE dag_id = ?", dag_id)
        assert paused and not paused[0][0], (
            f"{dag_id} should be active (dags_are_paused_at_creation=False): {paused}"
        )


def trigger_run(af: Airflow, dag_id: str, logical_date: str) -> str:
    """Trigger a manual run of ``dag_id``, its only run, for ``logical_date`` (ISO 8601); its run id."""
    # Through the REST API (as `airflow dags trigger --logical-date` would, at a fraction of a CLI start-up):
    # a manual run needs an explicit logical date, else `{{ ds }}` is undefined. All-admins simple auth: no
    # token.
    response = httpx.post(
        f"{af.api_url}/api/v2/dags/{dag_id}/dagRuns", json={"logical_date": logical_date}, timeout=60
    )
    assert response.status_code == 200, f"trigger failed: {response.status_code} {response.text}"
    runs = af.query("SELECT run_id, run_type, logical_date FROM dag_run WHERE dag_id = ?", dag_id)
    assert len(runs) == 1 and runs[0][1] == "manual" and runs[0][2].startswith(logical_date[:10]), runs
    assert runs[0][0] == response.json()["dag_run_id"], (runs, response.text)
    return runs[0][0]


def task_instance(af: Airflow, dag_id: str, run_id: str, task_id: str) -> tuple | None:
    """(state, trigger_id, try_number) of a task instance, or None before the scheduler made it."""
    rows = af.query(
        "SELECT state, trigger_id, try_number FROM task_instance"
        " WHERE dag_id = ? AND run_id = ? AND task_id = ?",
        dag_id,
        run_id,
        task_id,
    )
    return rows[0] if rows else None
