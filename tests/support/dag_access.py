"""An auth manager for tests of per-DAG access: Airflow's SimpleAuthManager, with some DAGs hidden from some users.

The simple auth manager knows roles only (a viewer reads every DAG), so per-DAG authorisation is tested
through the auth manager interface Airflow's API server calls: ``is_authorized_dag`` (and so
``get_authorized_dag_ids``) answer False for the DAGs in ``OPENAI_BATCH_TEST_HIDDEN_DAGS`` (comma-separated)
when asked for a user in ``OPENAI_BATCH_TEST_RESTRICTED_USERS``. Everything else is the simple auth manager's.
"""

from __future__ import annotations

import os
from typing import Any

from airflow.api_fastapi.auth.managers.simple.simple_auth_manager import SimpleAuthManager


def _names(variable: str) -> set[str]:
    return {n.strip() for n in os.environ.get(variable, "").split(",") if n.strip()}


class PerDagAuthManager(SimpleAuthManager):
    def is_authorized_dag(
        self, *, method: Any, user: Any, access_entity: Any = None, details: Any = None
    ) -> bool:
        dag_id = getattr(details, "id", None)
        if user.get_name() in _names("OPENAI_BATCH_TEST_RESTRICTED_USERS") and (
            dag_id is None or dag_id in _names("OPENAI_BATCH_TEST_HIDDEN_DAGS")
        ):
            return False
        return super().is_authorized_dag(
            method=method, user=user, access_entity=access_entity, details=details
        )
