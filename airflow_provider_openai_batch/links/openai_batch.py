"""Extra link from a task to its batch in the OpenAI dashboard; works while the task is deferred."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperatorLink
from airflow.sdk.execution_time.xcom import XCom

if TYPE_CHECKING:
    from airflow.models.taskinstancekey import TaskInstanceKey

# The operator pushes its batch ids under this key before it defers.
BATCH_IDS_XCOM_KEY = "openai_batch_ids"
DASHBOARD_URL = "https://platform.openai.com/batches/{batch_id}"


class OpenAIBatchLink(BaseOperatorLink):
    """Link to the task's first batch (the only one unless the input was sharded)."""

    name = "OpenAI Batch"

    def get_link(self, operator: Any, *, ti_key: TaskInstanceKey) -> str:
        batch_ids = XCom.get_value(key=BATCH_IDS_XCOM_KEY, ti_key=ti_key)
        if not batch_ids:
            return ""
        return DASHBOARD_URL.format(batch_id=batch_ids[0])
