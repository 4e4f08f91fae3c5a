"""A real Airflow API server with the batch pages plugin, for the pages' tests and bench; and batch-task records.

:func:`start_api_server` runs ``airflow api-server`` on the test process's metadata DB with the simple auth
manager (users from a generated password file) narrowed per DAG by :mod:`tests.support.dag_access`.
:func:`push_batch_task` writes the XComs an OpenAIBatchOperator pushes before deferring, under the keys the
operator uses, for a task of an existing DAG run (the 500-batch view needs more tasks than a test can run).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[2]
RESTRICTED_USER = "restricted"


@dataclass
class ApiServer:
    url: str
    process: subprocess.Popen[bytes]
    passwords: dict[str, str]
    log: Path

    def token(self, user: str) -> str:
        answer = httpx.post(
            f"{self.url}/auth/token", json={"username": user, "password": self.passwords[user]}, timeout=30
        )
        answer.raise_for_status()
        return str(answer.json()["access_token"])

    def client(self, user: str | None) -> httpx.Client:
        """A client logged in as ``user`` (a bearer token), or anonymous for None."""
        headers = {"Authorization": f"Bearer {self.token(user)}"} if user else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=60)

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)


def start_api_server(
    home: Path, port: int, emulator_url: str, api_key: str, hidden_dags: str, refresh_seconds: float = 2.0
) -> ApiServer:
    """``airflow api-server`` on the metadata DB of the current environment (``AIRFLOW_*`` settings inherited).

    :param home: a folder for the password file and the server's log.
    :param emulator_url: the emulator's ``.../v1`` URL, the host of ``openai_default``.
    :param hidden_dags: comma-separated DAG ids the ``restricted`` user may not read.
    :param refresh_seconds: ``[openai_batch] page_refresh_seconds``.
    """
    passwords = home / "passwords.json"
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "AIRFLOW__CORE__AUTH_MANAGER": "tests.support.dag_access.PerDagAuthManager",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"admin:admin,{RESTRICTED_USER}:viewer",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "False",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords),
        "AIRFLOW__API__BASE_URL": f"http://127.0.0.1:{port}",
        "AIRFLOW__OPENAI_BATCH__PAGE_REFRESH_SECONDS": str(refresh_seconds),
        "OPENAI_BATCH_TEST_RESTRICTED_USERS": RESTRICTED_USER,
        "OPENAI_BATCH_TEST_HIDDEN_DAGS": hidden_dags,
        "AIRFLOW_CONN_OPENAI_DEFAULT": json.dumps(
            {"conn_type": "openai_batch", "host": emulator_url, "password": api_key}
        ),
    }
    log = home / "api-server.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [
                str(Path(sys.executable).parent / "airflow"),
                "api-server",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--workers",
                "1",
            ],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while True:
        try:
            if httpx.get(f"{url}/api/v2/monitor/health", timeout=2).status_code == 200 and passwords.exists():
                break
        except httpx.HTTPError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise RuntimeError(f"the API server did not start:\n{log.read_text()[-4000:]}")
        time.sleep(0.5)
    return ApiServer(url, process, json.loads(passwords.read_text()), log)


def push_batch_task(
    dag_id: str,
    run_id: str,
    task_id: str,
    map_index: int,
    batch_ids: list[str],
    conn_id: str = "openai_default",
) -> None:
    """A deferred task instance ``map_index`` (a copy of the run's ``task_id`` row) with the XComs the operator
    pushes before it defers: its batch ids and their connection."""
    import uuid

    from airflow.models.taskinstance import TaskInstance
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    from airflow_provider_openai_batch.links.openai_batch import BATCH_CONN_XCOM_KEY, BATCH_IDS_XCOM_KEY

    table = TaskInstance.__table__
    with create_session() as session:
        rows = session.execute(
            select(table).where(
                table.c.dag_id == dag_id, table.c.run_id == run_id, table.c.task_id == task_id
            )
        ).mappings()
        existing = {row["map_index"]: dict(row) for row in rows}
        if map_index not in existing:
            model = next(iter(existing.values()))
            new_id: uuid.UUID | str = uuid.uuid4()
            if not isinstance(model["id"], uuid.UUID):  # Airflow 3.1's column takes a string
                new_id = str(new_id)
            row = {
                **model,
                "id": new_id,
                "map_index": map_index,
                "state": "deferred",
            }
            session.execute(table.insert().values(**row))
        for key, value in ((BATCH_IDS_XCOM_KEY, batch_ids), (BATCH_CONN_XCOM_KEY, conn_id)):
            XComModel.set(
                key,
                value,
                dag_id=dag_id,
                task_id=task_id,
                run_id=run_id,
                map_index=map_index,
                session=session,
            )
