"""Small HTML pages for people: ``/batches`` lists recent batches, ``/batches/{id}`` shows one, as
platform.openai.com does, so an Airflow extra link can point somewhere when the emulator stands in for the
service.

Each page is self-contained (inline style, no script, no external asset; the Content-Security-Policy says so)
and every value is HTML-escaped, since metadata, custom ids and error messages are user data.
"""

from __future__ import annotations

import datetime
import html
import urllib.parse
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse

from .checks import int_param
from .errors import APIError
from .state import emulator_of
from .store import TIMESTAMPS, Store, paginate

HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'",
    "X-Content-Type-Options": "nosniff",
}
_STYLE = (
    "body{font:14px system-ui,sans-serif;margin:2em;color:#222}table{border-collapse:collapse}"
    "td,th{border:1px solid #ccc;padding:.3em .6em;text-align:left;vertical-align:top}"
    "th{background:#f4f4f4}code{font-size:13px}.muted{color:#777}"
)
_TIMESTAMPS = ("created_at", *TIMESTAMPS)  # every *_at a batch can carry, creation first
_FILES = ("input_file_id", "output_file_id", "error_file_id")


def add_routes(api: FastAPI) -> None:
    """Register the ``/batches`` pages on ``api``."""

    @api.get("/batches")
    async def batch_list_page(request: Request) -> HTMLResponse:
        batches = {batch.id: batch for batch in emulator_of(request).store.batches_newest_first()}
        try:  # a bad limit or cursor is a page saying so, like any other answer a browser gets here
            limit = int_param(request, "limit", 100, 1, 1000)
            page, has_more = paginate(list(batches), request.query_params.get("after"), limit)
        except APIError as exc:
            body = f'<p>{_e(exc.message)}</p><p><a href="/batches">All batches</a></p>'
            return _page("Batches", body, status=400)
        return _page("Batches", render_list([batches[i].to_api() for i in page], has_more, limit))

    @api.get("/batches/{batch_id}")
    async def batch_page(request: Request, batch_id: str) -> HTMLResponse:
        store = emulator_of(request).store
        batch = store.batches.get(batch_id)
        if batch is None:
            body = (
                f'<p>No such batch: <code>{_e(batch_id)}</code>.</p><p><a href="/batches">All batches</a></p>'
            )
            return _page("Batch not found", body, status=404)
        return _page(f"Batch {batch_id}", render_batch(batch.to_api(), store))


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _href(*segments: str) -> str:
    return _e("/" + "/".join(urllib.parse.quote(segment, safe="") for segment in segments))


def _page(title: str, body: str, status: int = 200) -> HTMLResponse:
    document = (
        f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{_e(title)}</title>'
        f"<style>{_STYLE}</style></head><body><h1>{_e(title)}</h1>{body}</body></html>"
    )
    return HTMLResponse(document, status_code=status, headers=HEADERS)


def _when(timestamp: int | None) -> str:
    if timestamp is None:
        return '<span class="muted">-</span>'
    moment = datetime.datetime.fromtimestamp(timestamp, datetime.UTC)
    return f'<time datetime="{moment.isoformat()}">{moment:%Y-%m-%d %H:%M:%S} UTC</time>'


def _rows(pairs: list[tuple[str, str]]) -> str:
    """Table rows of (header, already-escaped cell)."""
    return "".join(f"<tr><th>{_e(name)}</th><td>{cell}</td></tr>" for name, cell in pairs)


def render_batch(batch: dict[str, Any], store: Store) -> str:
    """The body of one batch's page.

    :param batch: the batch as the API returns it (``BatchRecord.to_api()``).
    :param store: where to see whether each file still exists.
    """
    counts = batch["request_counts"]
    summary = [
        ("id", f'<code>{_e(batch["id"])}</code> (<a href="{_href("v1", "batches", batch["id"])}">JSON</a>)'),
        ("status", f"<strong>{_e(batch['status'])}</strong>"),
        ("endpoint", f"<code>{_e(batch['endpoint'])}</code>"),
        ("model", _e(batch.get("model") or "-")),
        ("completion window", _e(batch["completion_window"])),
        (
            "requests",
            f"{_e(counts['total'])} total, {_e(counts['completed'])} completed, "
            f"{_e(counts['failed'])} failed",
        ),
    ]
    files = []
    for name in _FILES:
        file_id = batch.get(name)
        if file_id is None:
            files.append((name, '<span class="muted">-</span>'))
        elif file_id in store.files:
            files.append(
                (name, f'<a href="{_href("v1", "files", file_id, "content")}"><code>{_e(file_id)}</code></a>')
            )
        else:
            files.append(
                (name, f'<code>{_e(file_id)}</code> <span class="muted">(deleted or never stored)</span>')
            )
    times = [(name, _when(batch.get(name))) for name in _TIMESTAMPS if batch.get(name) is not None]
    metadata = batch.get("metadata") or {}
    parts = [
        f"<table>{_rows(summary)}</table>",
        f"<h2>Files</h2><table>{_rows(files)}</table>",
        f"<h2>Timestamps</h2><table>{_rows(times)}</table>",
        "<h2>Metadata</h2>"
        + (
            f"<table>{_rows([(key, _e(value)) for key, value in metadata.items()])}</table>"
            if metadata
            else '<p class="muted">none</p>'
        ),
        "<h2>Errors</h2>" + _errors_table(batch.get("errors")),
        '<p><a href="/batches">All batches</a></p>',
    ]
    return "".join(parts)


def _errors_table(errors: dict[str, Any] | None) -> str:
    data = (errors or {}).get("data") or []
    if not data:
        return '<p class="muted">none</p>'
    head = "<tr><th>code</th><th>line</th><th>param</th><th>message</th></tr>"
    rows = "".join(
        "<tr>"
        + "".join(
            f"<td>{_e(error.get(key) if error.get(key) is not None else '-')}</td>"
            for key in ("code", "line", "param", "message")
        )
        + "</tr>"
        for error in data
    )
    return f"<table>{head}{rows}</table>"


def render_list(batches: list[dict[str, Any]], has_more: bool, limit: int) -> str:
    """The body of the batch list page: one row per batch, newest first, with a link to older ones.

    :param batches: the page of batches as the API returns them.
    :param has_more: whether older batches follow.
    :param limit: the page size, kept in the link to the next page.
    """
    if not batches:
        return '<p class="muted">No batches yet.</p>'
    columns = ("id", "status", "endpoint", "requests", "created", "metadata")
    head = "<tr>" + "".join(f"<th>{column}</th>" for column in columns) + "</tr>"
    rows = []
    for batch in batches:
        counts = batch["request_counts"]
        metadata = ", ".join(f"{key}={value}" for key, value in (batch.get("metadata") or {}).items())
        rows.append(
            f'<tr><td><a href="{_href("batches", batch["id"])}"><code>{_e(batch["id"])}</code></a></td>'
            f"<td>{_e(batch['status'])}</td><td><code>{_e(batch['endpoint'])}</code></td>"
            f"<td>{_e(counts['completed'])}/{_e(counts['total'])}</td><td>{_when(batch['created_at'])}</td>"
            f"<td>{_e(metadata)}</td></tr>"
        )
    more = ""
    if has_more:
        query = urllib.parse.urlencode({"after": batches[-1]["id"], "limit": limit})
        more = f'<p><a href="{_e("/batches?" + query)}">Older batches</a></p>'
    return f"<table>{head}{''.join(rows)}</table>{more}"
