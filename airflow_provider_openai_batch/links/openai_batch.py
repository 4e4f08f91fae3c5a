"""Extra link from a task to its batch where a person can see it, following the task's connection.

The URL is worked out while the task runs (it needs the connection) and held by the operator; Airflow 3 asks
the link for it when the try ends (a deferral included) and stores it in XCom for the UI, so the link costs
the API server no connection lookup and works while the task is deferred: OpenAI's dashboard for
api.openai.com, the Azure portal's batch jobs for Azure OpenAI, the host's own ``/batches/{id}`` page for any
other server (the bundled emulator serves one). The link reads no XCom: a task that never knew a batch (it
failed on its input) has no link, and no lookup of a missing XCom logs an error.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperatorLink

if TYPE_CHECKING:
    from airflow.sdk.types import TaskInstanceKey

#: The operator pushes its batch ids under this key whenever it knows them (before waiting, on a re-land).
BATCH_IDS_XCOM_KEY = "openai_batch_ids"
#: ... and the current batch's page, which the link shows, under this one.
BATCH_URL_XCOM_KEY = "openai_batch_url"
OPENAI_DASHBOARD_URL = "https://platform.openai.com/batches/{batch_id}"
#: The Azure AI Foundry (formerly Azure OpenAI Studio) batch jobs page. A page of one resource's batch needs
#: the resource's Azure id (subscription, resource group, account), which an API connection does not hold;
#: this page lists the batches of the resource picked there. A connection extra ``dashboard_url`` can give
#: the exact page instead.
AZURE_BATCH_JOBS_URL = "https://oai.azure.com/resource/batch"


def batch_dashboard_url(kind: str, client_kwargs: Mapping[str, Any], batch_id: str) -> str:
    """
    The page where a person can see batch ``batch_id``, from the client a connection makes.

    :param kind: ``"openai"`` or ``"azure"``, as :func:`~airflow_provider_openai_batch.hooks.connection.
        client_kwargs_from_connection` returns it.
    :param client_kwargs: the client arguments; only ``base_url`` (OpenAI) is read, never the key.
    :param batch_id: the batch's id.
    :return: OpenAI's dashboard for api.openai.com (or no base URL), the Azure batch jobs page for Azure,
        else the base URL's scheme and host followed by ``/batches/{batch_id}``.
    """
    if not batch_id or not isinstance(batch_id, str):
        raise ValueError(f"Expected a non-empty value for `batch_id` but received {batch_id!r}")
    quoted = urllib.parse.quote(batch_id, safe="")
    if kind == "azure":
        return AZURE_BATCH_JOBS_URL
    base_url = client_kwargs.get("base_url")
    if not base_url:
        return OPENAI_DASHBOARD_URL.format(batch_id=quoted)
    parts = urllib.parse.urlsplit(str(base_url) if "://" in str(base_url) else f"https://{base_url}")
    host = (parts.hostname or "").lower()
    if host == "openai.com" or host.endswith(".openai.com"):
        return OPENAI_DASHBOARD_URL.format(batch_id=quoted)
    netloc = parts.netloc.rpartition("@")[2]  # credentials in a URL never reach a link
    return f"{parts.scheme}://{netloc}/batches/{quoted}"


class OpenAIBatchLink(BaseOperatorLink):
    """Link to the task's batch (the first of the current round when the input was sharded)."""

    name = "OpenAI Batch"

    def get_link(self, operator: Any, *, ti_key: TaskInstanceKey) -> str:
        # Airflow 3 calls this on the worker with the operator that ran the try, and keeps the answer.
        return str(getattr(operator, "batch_page_url", None) or "")
