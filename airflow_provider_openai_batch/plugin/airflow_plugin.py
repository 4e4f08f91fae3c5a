"""The Airflow plugin that puts the batch pages into Airflow's UI, registered by the ``airflow.plugins`` entry point.

It mounts the pages' FastAPI app (:mod:`.app`) on the API server under ``/openai-batch`` and adds two
external views: "OpenAI Batches" in the navigation (Browse) and a "Batch" tab on every task instance (the tab
says so when the task ran no batch). The app is built on the first request: every Airflow process loads
plugins, and only the API server needs FastAPI and the auth code.
"""

from __future__ import annotations

from typing import Any

from airflow.plugins_manager import AirflowPlugin

URL_PREFIX = "/openai-batch"


class _AppOnFirstRequest:
    """An ASGI app that imports and builds the pages' app when the API server first routes a request to it."""

    def __init__(self) -> None:
        self._app: Any = None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if self._app is None:
            from airflow_provider_openai_batch.plugin.app import create_app

            self._app = create_app()
        await self._app(scope, receive, send)


class OpenAIBatchPlugin(AirflowPlugin):
    name = "openai_batch"
    fastapi_apps = [{"app": _AppOnFirstRequest(), "url_prefix": URL_PREFIX, "name": "OpenAI Batch pages"}]
    external_views = [
        {
            "name": "OpenAI Batches",
            "href": f"{URL_PREFIX}/",
            "destination": "nav",
            "category": "browse",
            "url_route": "openai-batches",
        },
        {
            "name": "Batch",
            "href": f"{URL_PREFIX}/task?dag_id={{DAG_ID}}&run_id={{RUN_ID}}&task_id={{TASK_ID}}&map_index={{MAP_INDEX}}",
            "destination": "task_instance",
            "url_route": "openai-batch-task",
        },
    ]
