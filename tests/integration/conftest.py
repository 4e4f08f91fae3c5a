"""Fixtures for running DAGs through Airflow against the emulator and moto_server."""

from __future__ import annotations

import json
import os
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import pytest

from tests.conftest import DAGS_FOLDER

# Recognisable, so tests can prove it never reaches logs, XCom, triggers or exceptions.
TEST_API_KEY = "sk-test-SECRET-7f3a9c1e5b2d4680aceg"


@dataclass
class DagRunResult:
    run: Any
    xcoms: dict[tuple[str, str], Any] = field(default_factory=dict)

    @property
    def state(self) -> str:
        return str(self.run.state.value if hasattr(self.run.state, "value") else self.run.state)

    def ti_states(self) -> dict[str, str]:
        return {
            ti.task_id: str(ti.state.value if hasattr(ti.state, "value") else ti.state)
            for ti in self.run.get_task_instances()
        }


@pytest.fixture
def openai_conn(openai_emulator, monkeypatch):
    """`openai_default` pointing at the emulator, with a recognisable fake key."""
    monkeypatch.setenv(
        "AIRFLOW_CONN_OPENAI_DEFAULT",
        json.dumps({"conn_type": "openai_batch", "host": openai_emulator.base_url, "password": TEST_API_KEY}),
    )
    monkeypatch.setenv("OPENAI_BATCH_EXAMPLE_POLL_INTERVAL", "0.2")
    return openai_emulator


@pytest.fixture
def run_dag(airflow_db):
    """Run a DAG from the test dags folder for a logical date with dag.test(); returns state and XComs."""
    import pendulum

    try:
        from airflow.dag_processing.dagbag import DagBag
    except ImportError:  # Airflow 3.1
        from airflow.models.dagbag import DagBag
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    def _run(
        dag_id: str,
        date: str | None = "2026-11-01",
        *,
        retries: int | None = 0,
        retry_delay: float = 0.5,
        clear: bool = False,
        run_after: str | None = None,
        **kwargs: Any,
    ) -> DagRunResult:
        bag = DagBag(dag_folder=str(DAGS_FOLDER))
        assert not bag.import_errors, bag.import_errors
        dag = bag.get_dag(dag_id)
        # dag.test() honours retries with their real delay: tests keep them short (or off) to stay fast.
        for task in dag.tasks:
            if retries is not None:
                task.retries = retries
            task.retry_delay = timedelta(seconds=retry_delay)
        when = pendulum.parse(date) if date else None
        with ExitStack() as stack:
            if clear:
                stack.enter_context(_reusing_existing_run())
            # The same run_after gives the same run_id each time for a date; another one makes another DAG run.
            after = pendulum.parse(run_after) if run_after else when
            run = dag.test(logical_date=when, run_after=after, **kwargs)
        result = DagRunResult(run)
        with create_session() as session:
            for x in session.scalars(XComModel.get_many(run_id=run.run_id, dag_ids=dag_id)).all():
                result.xcoms[(x.task_id, x.key)] = XComModel.deserialize_value(x)
            result.run = session.merge(run)
            result.ti_states()
        return result

    return _run


@contextmanager
def _reusing_existing_run():
    """Make dag.test() clear and rerun the existing DagRun of a date, as the UI's "Clear" does, instead of
    deleting it and creating a new one (which also drops its task state store rows)."""
    from unittest import mock

    from airflow.models import dagrun as dagrun_module
    from airflow.utils.state import DagRunState
    from sqlalchemy import select

    original = dagrun_module.get_or_create_dagrun

    def get_existing(*, dag, run_id, session, **kwargs):
        existing = session.scalar(
            select(dagrun_module.DagRun).where(
                dagrun_module.DagRun.dag_id == dag.dag_id, dagrun_module.DagRun.run_id == run_id
            )
        )
        if existing is None:
            return original(dag=dag, run_id=run_id, session=session, **kwargs)
        existing.state = DagRunState.RUNNING
        existing.dag = dag
        session.commit()
        return existing

    with mock.patch.object(dagrun_module, "get_or_create_dagrun", get_existing):
        yield


def storage_env(monkeypatch, *, base: str) -> None:
    monkeypatch.setenv("AIRFLOW_VAR_OPENAI_BATCH_EXAMPLE_BASE", base)
    os.environ.pop("AIRFLOW_VAR_OPENAI_BATCH_LOCAL_BASE", None)
