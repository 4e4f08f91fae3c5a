"""What Airflow's own records say about batch tasks: the XComs the operator pushes, with task and run states.

A task is a batch task when it pushed its batch ids (``openai_batch_ids``) before deferring, or a BatchResult
when it landed. One query reads every such XCom of the DAGs a user may read, one more the task instances and
runs they belong to; nothing here calls the API (:mod:`.api_cache` does, once per connection).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from airflow.models.dagrun import DagRun
from airflow.models.taskinstance import TaskInstance
from airflow.models.xcom import XComModel
from sqlalchemy import select, tuple_
from sqlalchemy.orm import Session

from airflow_provider_openai_batch.links.openai_batch import (
    BATCH_CONN_XCOM_KEY,
    BATCH_IDS_XCOM_KEY,
    BATCH_URL_XCOM_KEY,
    QUEUE_WAIT_XCOM_KEY,
)
from airflow_provider_openai_batch.operators.openai_batch import RESULT_XCOM_KEY

KEYS = (BATCH_IDS_XCOM_KEY, BATCH_URL_XCOM_KEY, BATCH_CONN_XCOM_KEY, QUEUE_WAIT_XCOM_KEY, RESULT_XCOM_KEY)


@dataclass
class BatchTask:
    """One batch task instance as Airflow recorded it."""

    dag_id: str
    run_id: str
    task_id: str
    map_index: int
    logical_date: datetime | None = None
    state: str | None = None
    try_number: int | None = None
    batch_ids: list[str] = field(default_factory=list)
    conn_id: str | None = None
    dashboard_url: str | None = None
    queue_wait: dict[str, Any] | None = None
    result: dict[str, Any] | None = None
    updated: datetime | None = None

    @property
    def key(self) -> tuple[str, str, str, int]:
        return self.dag_id, self.run_id, self.task_id, self.map_index

    def all_batch_ids(self) -> list[str]:
        """The batch ids pushed before deferring, and those of the BatchResult (every round, in order)."""
        landed = list((self.result or {}).get("batch_ids") or [])
        return list(dict.fromkeys([*self.batch_ids, *landed]))


def _set(task: BatchTask, key: str, value: Any) -> None:
    if key == BATCH_IDS_XCOM_KEY and isinstance(value, list):
        task.batch_ids = [str(v) for v in value]
    elif key == BATCH_CONN_XCOM_KEY and isinstance(value, str):
        task.conn_id = value
    elif key == BATCH_URL_XCOM_KEY and isinstance(value, str):
        task.dashboard_url = value
    elif key == QUEUE_WAIT_XCOM_KEY and isinstance(value, dict):
        task.queue_wait = value
    elif key == RESULT_XCOM_KEY and isinstance(value, dict):
        task.result = value


def load_tasks(
    session: Session,
    dag_ids: Iterable[str] | None,
    *,
    since: datetime | None = None,
    run_id: str | None = None,
    task_id: str | None = None,
    map_index: int | None = None,
) -> list[BatchTask]:
    """Every batch task of ``dag_ids`` (None: all DAGs) with an XCom written since ``since``.

    :param dag_ids: the DAGs to read: the caller passes only those the user may read.
    :param run_id: / ``task_id`` / ``map_index``: narrow to one task instance (the Batch tab).
    :return: newest logical date first, then DAG and task.
    """
    query = select(
        XComModel.dag_id,
        XComModel.run_id,
        XComModel.task_id,
        XComModel.map_index,
        XComModel.key,
        XComModel.value,
        XComModel.timestamp,
    ).where(XComModel.key.in_(KEYS))
    if dag_ids is not None:
        query = query.where(XComModel.dag_id.in_(list(dag_ids)))
    if since is not None:
        query = query.where(XComModel.timestamp >= since)
    if run_id is not None:
        query = query.where(XComModel.run_id == run_id)
    if task_id is not None:
        query = query.where(XComModel.task_id == task_id)
    if map_index is not None:
        query = query.where(XComModel.map_index == map_index)
    tasks: dict[tuple[str, str, str, int], BatchTask] = {}
    for row in session.execute(query):
        key = (row.dag_id, row.run_id, row.task_id, row.map_index)
        task = tasks.get(key) or tasks.setdefault(key, BatchTask(*key))
        _set(task, row.key, XComModel.deserialize_value(row))
        task.updated = max(filter(None, (task.updated, row.timestamp)), default=None)
    tasks = {k: t for k, t in tasks.items() if t.batch_ids or t.result}
    if tasks:
        _add_states(session, tasks)
    return sorted(
        tasks.values(),
        key=lambda t: (-(t.logical_date or t.updated or datetime.min).timestamp(), t.dag_id, t.task_id),
    )


def _add_states(session: Session, tasks: dict[tuple[str, str, str, int], BatchTask]) -> None:
    """The task instances' states and the runs' logical dates, a query each for everything shown."""
    ti_rows = session.execute(
        select(
            TaskInstance.dag_id,
            TaskInstance.run_id,
            TaskInstance.task_id,
            TaskInstance.map_index,
            TaskInstance.state,
            TaskInstance.try_number,
        ).where(
            tuple_(
                TaskInstance.dag_id, TaskInstance.run_id, TaskInstance.task_id, TaskInstance.map_index
            ).in_(list(tasks))
        )
    )
    for row in ti_rows:
        task = tasks.get((row.dag_id, row.run_id, row.task_id, row.map_index))
        if task is not None:
            task.state, task.try_number = getattr(row.state, "value", row.state), row.try_number
    runs = {(t.dag_id, t.run_id) for t in tasks.values()}
    run_rows = session.execute(
        select(DagRun.dag_id, DagRun.run_id, DagRun.logical_date, DagRun.run_after).where(
            tuple_(DagRun.dag_id, DagRun.run_id).in_(list(runs))
        )
    )
    dates = {(r.dag_id, r.run_id): r.logical_date or r.run_after for r in run_rows}
    for task in tasks.values():
        task.logical_date = dates.get((task.dag_id, task.run_id))
