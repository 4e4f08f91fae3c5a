"""Extra link from a task to its batch where a person can see it, following the task's connection.

The URL is worked out while the task runs (it needs the connection:
:func:`~airflow_provider_openai_batch.hooks.connection.batch_dashboard_url`) and kept in XCom, so the link costs the
API server no connection lookup and works while the task is deferred: OpenAI's dashboard for api.openai.com,
the Azure portal's batch jobs for Azure OpenAI, the host's own ``/batches/{id}`` page for any other server
(the bundled emulator serves one).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperatorLink
from airflow.sdk.execution_time.xcom import XCom

if TYPE_CHECKING:
    from airflow.sdk.types import TaskInstanceKey

#: The operator pushes its batch ids under this key before it defers.
BATCH_IDS_XCOM_KEY = "openai_batch_ids"
#: ... and the first batch's page, which the link shows, under this one.
BATCH_URL_XCOM_KEY = "openai_batch_url"


class OpenAIBatchLink(BaseOperatorLink):
    """Link to the task's first batch (the only one unless the input was sharded)."""

    name = "OpenAI Batch"

    def get_link(self, operator: Any, *, ti_key: TaskInstanceKey) -> str:
        url = XCom.get_value(key=BATCH_URL_XCOM_KEY, ti_key=ti_key)
        return str(url) if url else ""
