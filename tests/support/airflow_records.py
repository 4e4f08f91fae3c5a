"""Readers of what Airflow's metadata DB recorded about a test's DAG run: task tries and asset events.

Integration tests assert on these because they are what a user sees in the UI: how many tries a task spent,
and which asset events (with which ``extra``) a downstream DAG would be scheduled on.
"""

from __future__ import annotations

from typing import Any


def task_tries(dag_id: str, run_id: str, task_id: str) -> tuple[str, int]:
    """The state and try number of one task instance of a DAG run.

    :param dag_id: the DAG.
    :param run_id: the DAG run.
    :param task_id: the task.
    :return: ``(state, try_number)``, the state as its string value.
    """
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        ti = session.scalar(
            select(TaskInstance).where(
                TaskInstance.dag_id == dag_id, TaskInstance.run_id == run_id, TaskInstance.task_id == task_id
            )
        )
        assert ti is not None, f"Expected task instance {dag_id}.{task_id} in run {run_id} but found none"
        state = ti.state.value if hasattr(ti.state, "value") else ti.state
        return str(state), int(ti.try_number)


def asset_events(asset_name: str) -> list[dict[str, Any]]:
    """Every event of the asset named ``asset_name``, oldest first, as the metadata DB holds them.

    :param asset_name: the asset's name (``Asset("name")``).
    :return: dicts of ``extra``, ``source_dag_id``, ``source_task_id`` and ``source_run_id``.
    """
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        rows = session.execute(
            select(AssetEvent)
            .join(AssetModel, AssetModel.id == AssetEvent.asset_id)
            .where(AssetModel.name == asset_name)
            .order_by(AssetEvent.id)
        ).scalars()
        return [
            {
                "extra": dict(row.extra or {}),
                "source_dag_id": row.source_dag_id,
                "source_task_id": row.source_task_id,
                "source_run_id": row.source_run_id,
            }
            for row in rows
        ]
