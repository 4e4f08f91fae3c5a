"""The batch pages, served by Airflow's API server: a "Batch" tab on task instances and an "OpenAI Batches" page.

A FastAPI app mounted by the plugin under ``/openai-batch``. Every route needs a logged-in user (Airflow's own
``get_user``: the UI's cookie or a bearer token) and shows only DAGs the auth manager lets that user read: the
tab checks the DAG's task instances, the list asks for the readable DAG ids. Pages are rendered on the server by
Jinja with autoescaping, with a Content-Security-Policy that allows no script at all and only the page's own
inline style (by hash); they refresh themselves with a meta refresh.
"""

from __future__ import annotations

import base64
import hashlib
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import jinja2
from airflow.api_fastapi.app import get_auth_manager
from airflow.api_fastapi.auth.managers.models.resource_details import DagAccessEntity
from airflow.api_fastapi.core_api.security import GetUserDep, get_user, requires_access_dag
from airflow.utils.session import create_session
from fastapi import Depends, FastAPI, Query, Request, Response
from fastapi.responses import HTMLResponse

from airflow_provider_openai_batch.cost.prices import load_prices
from airflow_provider_openai_batch.plugin import api_cache, records, view

_TEMPLATES = Path(__file__).parent / "templates"
_ENV = jinja2.Environment(
    loader=jinja2.FileSystemLoader(_TEMPLATES),
    autoescape=True,  # every value a page shows is escaped: metadata, custom ids, errors are user data
    undefined=jinja2.StrictUndefined,
)
_STYLE = (_TEMPLATES / "style.css").read_text()
_STYLE_HASH = base64.b64encode(hashlib.sha256(_STYLE.encode()).digest()).decode()
CSP = (
    f"default-src 'none'; style-src 'sha256-{_STYLE_HASH}'; img-src 'self'; form-action 'self'; "
    "base-uri 'none'; frame-ancestors 'self'"
)


def _refresh_seconds() -> int:
    return max(1, round(api_cache.CACHE.ttl))


class _Timing:
    """Where a view's time went, sent as a ``Server-Timing`` header (the bench reads it)."""

    def __init__(self) -> None:
        self.parts: list[tuple[str, float]] = []
        self._last = time.perf_counter()

    def mark(self, name: str) -> None:
        now = time.perf_counter()
        self.parts.append((name, (now - self._last) * 1000))
        self._last = now

    def header(self) -> str:
        return ", ".join(f"{name};dur={ms:.1f}" for name, ms in self.parts)


def _live(tasks: list[records.BatchTask]) -> dict[str, set[str]]:
    """Per connection, the batches whose state only the API knows (no BatchResult yet)."""
    wanted: dict[str, set[str]] = {}
    for task in tasks:
        if task.result is None and task.conn_id and task.batch_ids:
            wanted.setdefault(task.conn_id, set()).update(task.batch_ids)
    return wanted


def build_views(
    tasks: list[records.BatchTask], cache: api_cache.BatchCache, timing: _Timing | None = None
) -> tuple[list[view.TaskView], float | None, list[str]]:
    """Task views from records and one snapshot per connection; the oldest snapshot time and any errors."""
    api_batches: dict[str, dict[str, Any]] = {}
    as_of: list[float] = []
    errors: list[str] = []
    for conn_id, wanted in sorted(_live(tasks).items()):
        snap = cache.snapshot(conn_id, wanted)
        api_batches.update({b: snap.batches[b] for b in wanted if b in snap.batches})
        if snap.as_of is not None:
            as_of.append(snap.as_of)
        if snap.error:
            errors.append(f"{conn_id}: {snap.error}")
    if timing is not None:
        timing.mark("api")
    try:
        prices: dict[str, Any] | None = load_prices()
    except ValueError:
        prices = None
    return [view.task_view(t, api_batches, prices) for t in tasks], min(as_of, default=None), errors


def _render(name: str, timing: _Timing, **values: Any) -> HTMLResponse:
    html = _ENV.get_template(name).render(style=_STYLE, refresh=_refresh_seconds(), **values)
    timing.mark("render")
    headers = {"Content-Security-Policy": CSP, "Cache-Control": "no-store", "Server-Timing": timing.header()}
    return HTMLResponse(html, headers=headers)


def _as_of_text(as_of: float | None) -> str:
    moment = datetime.fromtimestamp(as_of if as_of is not None else time.time(), tz=timezone.utc)
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC")


def create_app() -> FastAPI:
    app = FastAPI(
        title="OpenAI Batch pages",
        dependencies=[Depends(get_user)],  # no route without a logged-in user
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )

    @app.middleware("http")
    async def security_headers(request: Request, call_next: Any) -> Response:
        response: Response = await call_next(request)
        response.headers.setdefault("Content-Security-Policy", CSP)
        response.headers["X-Content-Type-Options"] = "nosniff"
        return response

    @app.get(
        "/task",
        response_class=HTMLResponse,
        dependencies=[Depends(requires_access_dag("GET", DagAccessEntity.TASK_INSTANCE))],
    )
    def batch_tab(dag_id: str, run_id: str, task_id: str, map_index: str = "-1") -> HTMLResponse:
        """The Batch tab of one task instance (the DAG's task instances must be readable).

        ``map_index`` is a string: the UI leaves its ``{MAP_INDEX}`` placeholder in place for unmapped tasks.
        """
        timing = _Timing()
        index = int(map_index) if map_index.lstrip("-").isdigit() else -1
        with create_session() as session:
            tasks = records.load_tasks(session, [dag_id], run_id=run_id, task_id=task_id, map_index=index)
        timing.mark("db")
        views, as_of, errors = build_views(tasks, api_cache.CACHE, timing)
        timing.mark("views")
        return _render(
            "task.html",
            timing,
            task=views[0] if views else None,
            dag_id=dag_id,
            run_id=run_id,
            task_id=task_id,
            as_of=_as_of_text(as_of),
            errors=errors,
        )

    @app.get("/", response_class=HTMLResponse)
    def batches_page(
        user: GetUserDep,
        dag_id: str | None = None,
        state: str | None = None,
        days: int = Query(default=7, ge=1, le=90),
    ) -> HTMLResponse:
        """Every batch task of the readable DAGs with an XCom in the last ``days`` days, by DAG and run."""
        timing = _Timing()
        readable = set(get_auth_manager().get_authorized_dag_ids(user=user, method="GET"))
        timing.mark("auth")
        shown = readable if not dag_id else readable & {dag_id}
        since = datetime.now(timezone.utc) - timedelta(days=days)
        with create_session() as session:
            tasks = records.load_tasks(session, shown, since=since) if shown else []
        timing.mark("db")
        views, as_of, errors = build_views(tasks, api_cache.CACHE, timing)
        timing.mark("views")
        filtered = [t for t in views if view.matches_state(t, state)]
        return _render(
            "batches.html",
            timing,
            runs=view.group_runs(filtered),
            dag_ids=sorted({t.dag_id for t in views} | ({dag_id} if dag_id else set())),
            states=sorted({t.state for t in views} | {b.status for t in views for b in t.batches}),
            dag_id=dag_id or "",
            state=state or "",
            days=days,
            as_of=_as_of_text(as_of),
            errors=errors,
        )

    return app
