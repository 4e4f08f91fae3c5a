"""A production-shaped Airflow deployment the deployment tests start themselves, and the one place that starts,
checks, faults and stops its processes.

PostgreSQL is the metadata DB, Redis the Celery broker, ``moto_server`` the only shared storage (S3) and the
bundled emulator the OpenAI API. Airflow runs as a scheduler (CeleryExecutor), a dag-processor, an API server,
two ``airflow celery worker`` and two ``airflow triggerer`` processes. Each Airflow process is started in a folder
of its own with its own ``HOME``, ``TMPDIR`` and ``AIRFLOW_HOME`` (logs included), as if on its own host; a
process restarted after a fault gets a fresh folder, as a replacement pod would. The only local path they share
is the DAGs folder, which Airflow's local bundle needs on every parsing and running host; it is read-only.
:meth:`Cluster.assert_private_dirs` reads each live process's environment from ``/proc`` to prove it.

Each process runs in its own session, so a SIGKILL of the session reaches everything it started (a worker's
pool and task processes, which Airflow's task supervisor puts in process groups of their own), as a node dying
would. Every process's output stays in ``<root>/<name>-<n>/out.log``;
:meth:`Cluster.diagnostics` shows their tails when a test fails, and the folder is kept.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx
import psycopg2
import pytest

from tests.deployment.services import Postgres, Redis
from tests.integration.conftest import TEST_API_KEY
from tests.system.support import VENV_BIN, api_up, signal_group, tail

T = TypeVar("T")

STARTUP_TIMEOUT = 240  # a component up on a loaded 2-core machine shared with other work
WORKERS = ("worker-a", "worker-b")
TRIGGERERS = ("triggerer-a", "triggerer-b")
WORKER_CONCURRENCY = 4
TRIGGERER_CAPACITY = 8  # twelve deferred tasks cannot fit on one triggerer: both take some
HEALTH_CHECK_THRESHOLD = 10  # seconds without a heartbeat before a triggerer's triggers move
TASK_HEARTBEAT_TIMEOUT = 20  # seconds without a task heartbeat before the scheduler fails the try


@dataclass
class Process:
    """One Airflow process: its command, its own folder and the Popen while it runs."""

    name: str
    argv: list[str]
    root: Path  # <cluster root>/<name>-<n>: home/, tmp/, airflow/ (AIRFLOW_HOME), out.log
    proc: subprocess.Popen[bytes]
    exec_env: dict[str, str] | None  # its environment as exec'd, read back from /proc at once

    @property
    def home(self) -> Path:
        return self.root / "home"

    @property
    def tmp(self) -> Path:
        return self.root / "tmp"

    @property
    def airflow_home(self) -> Path:
        return self.root / "airflow"

    @property
    def log(self) -> Path:
        return self.root / "out.log"


@dataclass
class Cluster:
    """The services and the Airflow processes on them.

    :param root: a folder for every process's own folder and output.
    :param dags: the shared read-only DAGs folder.
    :param env: the settings every Airflow process gets (its own folders are added per process).
    """

    root: Path
    dags: Path
    env: dict[str, str]
    postgres: Postgres
    redis: Redis
    api_port: int
    processes: dict[str, Process] = field(default_factory=dict)
    history: list[Process] = field(default_factory=list)  # every process ever started, replaced ones too
    killed: set[str] = field(default_factory=set)  # names whose death a test caused and is handling
    triggerer_jobs: dict[int, str] = field(default_factory=dict)  # TriggererJob id -> process name

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    # ----- processes -----

    def start(self, name: str, *args: str) -> Process:
        """Start ``airflow <args>`` as ``name`` in a fresh folder of its own (a new one on every start)."""
        root = self.root / f"{name}-{sum(p.name == name for p in self.history) + 1}"
        for folder in (root / "home", root / "tmp", root / "airflow"):
            folder.mkdir(parents=True)
        env = {
            **self.env,
            "HOME": str(root / "home"),
            "TMPDIR": str(root / "tmp"),
            "AIRFLOW_HOME": str(root / "airflow"),
        }
        with (root / "out.log").open("wb") as log:
            proc = subprocess.Popen(
                [str(VENV_BIN / "airflow"), *args],
                env=env,
                cwd=root / "home",
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        process = Process(name, list(args), root, proc, _exec_environ(proc.pid))
        assert process.exec_env is not None, f"could not read the environment of {name} (pid {proc.pid})"
        self.processes[name] = process
        self.history.append(process)
        self.killed.discard(name)
        return process

    def cli(self, *args: str, timeout: float = 300) -> str:
        """Run ``airflow <args>`` once (in the scheduler's settings, a folder of its own); its output."""
        root = self.root / f"cli-{len(list(self.root.glob('cli-*'))) + 1}"
        (root / "tmp").mkdir(parents=True)
        env = {**self.env, "HOME": str(root), "TMPDIR": str(root / "tmp"), "AIRFLOW_HOME": str(root)}
        result = subprocess.run(
            [str(VENV_BIN / "airflow"), *args],
            env=env,
            cwd=root,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        (root / "out.log").write_text(
            f"$ airflow {' '.join(args)} -> {result.returncode}\n{result.stdout}\n{result.stderr}"
        )
        assert result.returncode == 0, f"airflow {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"
        return result.stdout

    def start_worker(self, name: str) -> Process:
        return self.start(
            name,
            "celery",
            "worker",
            "--celery-hostname",
            f"{name}@%h",
            "--concurrency",
            str(WORKER_CONCURRENCY),
            "--skip-serve-logs",
        )

    def start_triggerer(self, name: str) -> Process:
        """Start a triggerer and wait for its TriggererJob row, so its triggers can be told from the other's."""
        known = {job for (job,) in self.query("SELECT id FROM job WHERE job_type = 'TriggererJob'")}
        process = self.start(name, "triggerer", "--skip-serve-logs")

        def new_job() -> list[int]:
            rows = self.query("SELECT id FROM job WHERE job_type = 'TriggererJob' AND state = 'running'")
            return [job for (job,) in rows if job not in known]

        # Only this one must stay up meanwhile: restart_exited() may be bringing others back after it.
        (job,) = self.wait_until(f"{name}'s TriggererJob row", new_job, STARTUP_TIMEOUT, only=name)
        self.triggerer_jobs[job] = name
        return process

    def start_scheduler(self) -> Process:
        return self.start("scheduler", "scheduler", "--skip-serve-logs")

    def start_all(self) -> None:
        self.start_scheduler()
        self.start("dag-processor", "dag-processor")
        self.start(
            "api-server", "api-server", "--host", "127.0.0.1", "--port", str(self.api_port), "--workers", "1"
        )
        for name in WORKERS:
            self.start_worker(name)
        for name in TRIGGERERS:
            self.start_triggerer(name)
        self.wait_until("the API server's health endpoint", lambda: api_up(self.api_url), STARTUP_TIMEOUT)
        self.wait_until("both Celery workers to join", self.workers_online, STARTUP_TIMEOUT, interval=2)

    def workers_online(self) -> bool:
        """Both workers answer a Celery ping through the broker."""
        from celery import Celery

        app = Celery(broker=self.redis.url)
        try:
            answers = app.control.ping(timeout=2.0) or []
        finally:
            app.close()
        names = {name.split("@")[0] for answer in answers for name in answer}
        return names >= set(WORKERS)

    def kill(self, name: str) -> None:
        """SIGKILL ``name`` and everything it started, as when its node dies: its session, since Airflow's task
        supervisor puts each task process in a process group of its own."""
        process = self.processes[name]
        self.killed.add(name)
        signal_group(process.proc, signal.SIGKILL)
        for pid in _pids_where(os.getsid, process.proc.pid):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        process.proc.wait(30)

    def worker_running(self, pid: int) -> str | None:
        """The live worker that started ``pid`` (a task process: it is in the worker's session), or None."""
        for name in WORKERS:
            process = self.processes.get(name)
            if (
                process is not None
                and name not in self.killed
                and pid in _pids_where(os.getsid, process.proc.pid)
            ):
                return name
        return None

    def terminate(self, name: str, timeout: float = 60) -> None:
        """Stop ``name`` as an operator would (SIGTERM, then SIGKILL after ``timeout``)."""
        process = self.processes[name]
        self.killed.add(name)
        signal_group(process.proc, signal.SIGTERM)
        try:
            process.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            pass
        signal_group(process.proc, signal.SIGKILL)
        process.proc.wait(30)

    def stop(self) -> None:
        live = [p for p in self.processes.values() if p.proc.poll() is None]
        for process in live:
            signal_group(process.proc, signal.SIGTERM)
        deadline = time.monotonic() + 20
        for process in self.processes.values():
            try:
                process.proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
            signal_group(process.proc, signal.SIGKILL)  # pool and task processes may outlive the leader
            try:
                process.proc.wait(5)
            except subprocess.TimeoutExpired:
                pass

    def restart_exited(self) -> list[str]:
        """Restart every process that exited without a test asking for it, in a fresh folder, as a process
        supervisor (systemd, Kubernetes) does; the names restarted."""
        restarted = []
        exited = [
            (n, p) for n, p in self.processes.items() if n not in self.killed and p.proc.poll() is not None
        ]
        # Triggerers last: starting one waits for its job row, and fails if another process is still down.
        for name, process in sorted(exited, key=lambda item: item[0] in TRIGGERERS):
            if name in TRIGGERERS:
                self.start_triggerer(name)
            else:
                self.start(name, *process.argv)
            restarted.append(name)
        return restarted

    def check_alive(self, only: str | None = None) -> None:
        for name, process in self.processes.items():
            if only not in (None, name):
                continue
            if name not in self.killed and process.proc.poll() is not None:
                pytest.fail(
                    f"airflow {name} exited with code {process.proc.returncode}\n{self.diagnostics()}"
                )

    def diagnostics(self) -> str:
        parts = [f"(every process's folder is kept under {self.root})"]
        for process in self.history:
            code = process.proc.poll()
            lines = 40 if code is None else 80  # more of a process that died: its traceback
            parts.append(
                f"----- {process.root.name} (exit code {code}): tail of {process.log} -----\n{tail(process.log, lines)}"
            )
        parts.append(f"----- postgres: tail of {self.postgres.log} -----\n{tail(self.postgres.log, 15)}")
        return "\n".join(parts)

    def wait_until(
        self,
        what: str,
        predicate: Callable[[], T],
        timeout: float,
        interval: float = 0.5,
        only: str | None = None,
    ) -> T:
        """Call ``predicate`` until it returns something truthy and return that; fail after ``timeout`` seconds,
        or as soon as a process exits that no test meant to stop (``only`` that one, when given), with every
        process's output."""
        deadline = time.monotonic() + timeout
        while True:
            value = predicate()
            if value:
                return value
            self.check_alive(only)
            if time.monotonic() > deadline:
                pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}\n{self.diagnostics()}")
            time.sleep(interval)

    # ----- the proof that nothing local is shared -----

    def assert_private_dirs(self) -> dict[str, dict[str, str]]:
        """Each Airflow process runs with ``HOME``, ``TMPDIR`` and ``AIRFLOW_HOME`` inside its own folder, and no
        two processes share one. Read from ``/proc/<pid>/environ``, what the processes really got, not what the
        harness meant to give: for each process as it was exec'd (read at once, before Airflow's
        ``setproctitle`` reuses that memory for the process title), and for every process it started since (pool,
        supervisor and task processes) whose environment is still readable.

        :return: the three folders of each process name.
        """
        seen: dict[str, dict[str, str]] = {}
        for name, process in self.processes.items():
            if process.proc.poll() is not None:
                continue
            environments = [(process.proc.pid, process.exec_env)]
            environments += [
                (pid, _environ(pid))
                for pid in _pids_where(os.getpgid, process.proc.pid)
                if pid != process.proc.pid
            ]
            for pid, env in environments:
                if env is None:  # exited meanwhile, or its environment overwritten by a process title
                    continue
                dirs = {key: env.get(key, "") for key in ("HOME", "TMPDIR", "AIRFLOW_HOME")}
                for key, value in dirs.items():
                    assert Path(value).is_relative_to(process.root), (
                        f"Expected {key} of {name} (pid {pid}) inside its own folder {process.root}"
                        f" but received {value!r}"
                    )
                seen.setdefault(name, dirs)
        folders = [value for dirs in seen.values() for value in dirs.values()]
        assert len(folders) == len(set(folders)), (
            f"Expected no folder shared between processes but received {seen}"
        )
        return seen

    # ----- the metadata DB and the REST API -----

    def query(self, sql: str, *params: Any) -> list[tuple[Any, ...]]:
        """Read the metadata DB (``%s`` placeholders), retrying while PostgreSQL is down or restarting."""
        for _ in range(120):
            try:
                with psycopg2.connect(self.postgres.dsn, connect_timeout=3) as conn, conn.cursor() as cursor:
                    cursor.execute(sql, params)
                    return list(cursor.fetchall())
            except psycopg2.OperationalError:
                time.sleep(0.5)
        raise AssertionError(f"PostgreSQL stayed unreachable for a minute: {sql}")

    def api(self, method: str, path: str, **kwargs: Any) -> Any:
        """Call the REST API (``/api/v2`` + ``path``; all-admins simple auth needs no token); its JSON."""
        response = httpx.request(method, f"{self.api_url}/api/v2{path}", timeout=60, **kwargs)
        assert response.is_success, f"{method} {path}: {response.status_code} {response.text}"
        return response.json()


def _pids_where(key: Callable[[int], int], value: int) -> list[int]:
    """Every live process whose ``key`` (``os.getsid``: its session, ``os.getpgid``: its group) is ``value``."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if key(int(entry.name)) == value:
                    pids.append(int(entry.name))
            except (ProcessLookupError, PermissionError):
                pass
    return pids


def _exec_environ(pid: int) -> dict[str, str] | None:
    """The environment of a process just started: the kernel shows it empty for an instant after the exec, and
    Airflow's process title overwrites it a few seconds later (after its imports)."""
    for _ in range(200):
        env = _environ(pid)
        if env is not None:
            return env
        time.sleep(0.005)
    return None


def _environ(pid: int) -> dict[str, str] | None:
    try:
        raw = Path(f"/proc/{pid}/environ").read_bytes()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    pairs = (item.split(b"=", 1) for item in raw.split(b"\0") if b"=" in item)
    env = {k.decode(errors="replace"): v.decode(errors="replace") for k, v in pairs}
    # A zombie shows nothing; a process that set its title (setproctitle) shows the title's bytes there.
    return env if "PATH" in env else None


def airflow_env(
    dags: Path,
    postgres: Postgres,
    redis: Redis,
    api_port: int,
    emulator_url: str,
    aws_conn: dict[str, Any],
    storage_base: str,
) -> dict[str, str]:
    """The settings of every Airflow process: built from scratch, nothing Airflow- or OpenAI-related inherited
    from the pytest process (whose own settings serve the in-process tests)."""
    from cryptography.fernet import Fernet

    base = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("AIRFLOW", "OPENAI", "_AIRFLOW", "PYTEST"))
        and k not in ("PYTHONPATH", "TMPDIR", "HOME")
    }
    api_url = f"http://127.0.0.1:{api_port}"
    return {
        **base,
        "PATH": f"{VENV_BIN}{os.pathsep}{base.get('PATH', '')}",
        "PYTHONUNBUFFERED": "1",
        "AIRFLOW__CORE__DAGS_FOLDER": str(dags),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
        "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
        "AIRFLOW__CORE__PARALLELISM": "32",
        "AIRFLOW__CORE__FERNET_KEY": Fernet.generate_key().decode(),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": postgres.url,
        "AIRFLOW__CELERY__BROKER_URL": redis.url,
        "AIRFLOW__CELERY__RESULT_BACKEND": f"db+postgresql+psycopg2://airflow@127.0.0.1:{postgres.port}/postgres",
        "AIRFLOW__CELERY__WORKER_CONCURRENCY": str(WORKER_CONCURRENCY),
        # One task message at a time per pool slot: twelve tasks spread over both workers.
        "AIRFLOW__CELERY__WORKER_PREFETCH_MULTIPLIER": "1",
        # Twelve tasks starting at once on a loaded 2-core machine keep the one API server busy for longer than
        # the Execution API client's 5 s: a task's start call then times out five times and the try fails
        # before it ran (seen here). Airflow's advice for high load: a longer timeout.
        "AIRFLOW__WORKERS__EXECUTION_API_TIMEOUT": "30",
        "AIRFLOW__API__BASE_URL": api_url,
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{api_url}/execution/",
        "AIRFLOW__API_AUTH__JWT_SECRET": "deployment-test-jwt-secret-0123456789abcdef",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
        "AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": "False",  # only the runs a test makes
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
        "AIRFLOW__TRIGGERER__CAPACITY": str(TRIGGERER_CAPACITY),
        "AIRFLOW__TRIGGERER__TRIGGERER_HEALTH_CHECK_THRESHOLD": str(HEALTH_CHECK_THRESHOLD),
        "AIRFLOW__TRIGGERER__JOB_HEARTBEAT_SEC": "1",
        "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": str(TASK_HEARTBEAT_TIMEOUT),
        "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT_DETECTION_INTERVAL": "5",
        "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
        "AIRFLOW_CONN_OPENAI_DEFAULT": json.dumps(
            {"conn_type": "openai_batch", "host": emulator_url, "password": TEST_API_KEY}
        ),
        "AIRFLOW_CONN_AWS_TEST": json.dumps(aws_conn),
        "AIRFLOW_VAR_OPENAI_BATCH_DEPLOY_BASE": storage_base,
    }
