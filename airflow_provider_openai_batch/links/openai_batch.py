"""Extra link from a task to its batch where a person can see it, following the task's connection.

The URL is worked out while the task runs (it needs the connection:
:func:`~airflow_provider_openai_batch.hooks.connection.batch_dashboard_url`) and held by the operator; Airflow 3 asks
the link for it when the try ends (a deferral included) and stores it in XCom for the UI, so the link costs
the API server no connection lookup and works while the task is deferred: OpenAI's dashboard for
api.openai.com, the Azure portal's batch jobs for Azure OpenAI, the host's own ``/batches/{id}`` page for any
other server (the bundled emulator serves one). The link reads no XCom: a task that never knew a batch (it
failed on its input) has no link, and no lookup of a missing XCom logs an error.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperatorLink

if TYPE_CHECKING:
    from airflow.sdk.types import TaskInstanceKey

#: The operator pushes its batch ids under this key whenever it knows them (before waiting, on a re-land).
BATCH_IDS_XCOM_KEY = "openai_batch_ids"
#: ... and the current batch's page, which the link shows, under this one.
BATCH_URL_XCOM_KEY = "openai_batch_url"
#: ... and the connection the batches run on, so the batch pages know which API to ask.
BATCH_CONN_XCOM_KEY = "openai_batch_conn_id"
#: While the task waits for room in the organisation's queue, ``{"since": unix time, "reason": str}`` under
#: this key (``None`` once it no longer waits); the batch pages show "waiting for queue" from it.
QUEUE_WAIT_XCOM_KEY = "openai_batch_queue_wait"


class OpenAIBatchLink(BaseOperatorLink):
    """Link to the task's batch (the first of the current round when the input was sharded)."""

    name = "OpenAI Batch"

    def get_link(self, operator: Any, *, ti_key: TaskInstanceKey) -> str:
        # Airflow 3 calls this on the worker with the operator that ran the try, and keeps the answer.
        return str(getattr(operator, "batch_page_url", None) or "")
