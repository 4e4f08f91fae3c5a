"""Fault injection and the call journal, as an ASGI middleware wrapped around the whole app.

A fault matches on method and path (and, with ``query``, only calls whose query string has that parameter, such
as ``after`` for a cursor) and affects the next ``times`` matching calls:

- ``status``: answer with an OpenAI error of ``status`` (and ``Retry-After: retry_after`` when given), whose
  message is ``message`` when given (a gateway's own words, or one that echoes what it was sent);
- ``latency``: wait ``delay`` seconds, then answer normally;
- ``hold``: answer normally, but hold the finished answer ``delay`` seconds before sending it: the call has
  taken effect (a batch is created) while the client still waits, so a client killed meanwhile never hears it;
- ``drop``: abort the TCP connection before any byte of the response is sent;
- ``drop_mid_body``: answer normally but abort the connection after ``after_bytes`` bytes of the body
  (default: half of it), so the client sees an incomplete read.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import fnmatch
import json
import re
import time
import urllib.parse
from collections.abc import MutableMapping
from typing import Any

from .errors import error_body

KINDS = ("status", "latency", "hold", "drop", "drop_mid_body")


@dataclasses.dataclass
class Fault:
    """One armed fault. ``times=None`` keeps it armed until cleared."""

    path: str
    kind: str = "status"
    method: str = "*"
    status: int = 500
    retry_after: float | None = None
    delay: float = 0.0
    after_bytes: int | None = None
    times: int | None = 1
    message: str | None = None
    query: str | None = None

    def __post_init__(self) -> None:
        self.method = self.method.upper()
        if self.kind not in KINDS:
            raise ValueError(f"Expected fault kind in {KINDS} but received {self.kind!r}")
        if self.kind == "status" and not 400 <= int(self.status) <= 599:
            raise ValueError(f"Expected a fault status between 400 and 599 but received {self.status!r}")
        if self.times is not None and int(self.times) < 1:
            raise ValueError(f"Expected `times` >= 1 or null but received {self.times!r}")
        if self.path.startswith("re:"):
            self._regex = re.compile(self.path[3:])
        else:
            self._regex = re.compile(fnmatch.translate(self.path))

    def matches(self, method: str, path: str, query: str = "") -> bool:
        if self.query is not None and self.query not in urllib.parse.parse_qs(query, keep_blank_values=True):
            return False
        return self.method in ("*", method) and self._regex.fullmatch(path) is not None

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}


def parse_fault_spec(spec: str) -> Fault:
    """Parse ``METHOD:PATH:KIND[:key=value...]``; KIND may be a status code, e.g. ``POST:/v1/batches:429:retry_after=1``."""
    parts = spec.split(":")
    if len(parts) < 3:
        raise ValueError(f"Expected a fault spec METHOD:PATH:KIND[:key=value...] but received {spec!r}")
    method, path, kind, options = parts[0], parts[1], parts[2], parts[3:]
    fields: dict[str, Any] = {"method": method, "path": path}
    if kind.isdigit():
        fields.update(kind="status", status=int(kind))
    else:
        fields["kind"] = kind
    for option in options:
        key, sep, value = option.partition("=")
        if not sep or key not in ("status", "retry_after", "delay", "after_bytes", "times", "query"):
            raise ValueError(f"Unknown fault option {option!r} in {spec!r}")
        if key == "times" and value in ("inf", "always"):
            fields[key] = None
        elif key == "query":
            fields[key] = value
        elif key in ("retry_after", "delay"):
            fields[key] = float(value)
        else:
            fields[key] = int(value)
    return Fault(**fields)


class Faults:
    """The armed faults; the first one matching a call fires and counts down."""

    def __init__(self) -> None:
        self.armed: list[Fault] = []

    def add(self, fault: Fault) -> None:
        self.armed.append(fault)

    def clear(self) -> None:
        self.armed.clear()

    def take(self, method: str, path: str, query: str = "") -> Fault | None:
        for fault in self.armed:
            if fault.matches(method, path, query):
                if fault.times is not None:
                    fault.times -= 1
                    if fault.times <= 0:
                        self.armed.remove(fault)
                return fault
        return None


JOURNAL_ENTRY = "emulator.journal_entry"  # the ASGI scope key under which a route finds its journal entry


def is_api_call(path: str) -> bool:
    """Whether ``path`` is journalled and may be faulted: the ``/v1`` API, not the admin API, the batch
    pages or what a browser fetches along with them (``/favicon.ico``)."""
    return path == "/v1" or path.startswith("/v1/")


def note_created(scope: MutableMapping[str, Any], object_id: str) -> None:
    """Record in the call's journal entry the id of the object the call created."""
    entry = scope.get(JOURNAL_ENTRY)
    if entry is not None:
        entry["id"] = object_id


class Journal:
    """The API calls received (only ``/v1`` ones), oldest first, capped in size."""

    def __init__(self, maxlen: int = 100_000) -> None:
        self.entries: collections.deque[dict[str, Any]] = collections.deque(maxlen=maxlen)

    def record(self, method: str, path: str, query: str) -> dict[str, Any]:
        entry = {
            "method": method,
            "path": path,
            "status": None,
            "query": dict(urllib.parse.parse_qsl(query)),
            "time": time.time(),
        }
        self.entries.append(entry)
        return entry


class _Dropped(Exception):
    pass


def _abort_connection(receive: Any) -> bool:
    """Abort the client's TCP connection. uvicorn's ``receive`` is a method of the cycle owning the transport."""
    transport = getattr(getattr(receive, "__self__", None), "transport", None)
    if transport is None:
        return False
    transport.abort()
    return True


class FaultMiddleware:
    """Records every API call in the journal and applies the first matching fault."""

    def __init__(self, app: Any, faults: Faults, journal: Journal) -> None:
        self.app = app
        self.faults = faults
        self.journal = journal

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or not is_api_call(scope["path"]):
            await self.app(scope, receive, send)
            return
        method, path = scope["method"], scope["path"]
        query = scope.get("query_string", b"").decode("latin-1")
        entry = self.journal.record(method, path, query)
        scope[JOURNAL_ENTRY] = entry
        fault = self.faults.take(method, path, query)
        if fault is not None:
            entry["fault"] = fault.kind

        async def recording_send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                entry["status"] = message["status"]
            await send(message)

        if fault is None or fault.kind == "latency":
            if fault is not None:
                await asyncio.sleep(fault.delay)
            await self.app(scope, receive, recording_send)
        elif fault.kind == "hold":
            await self._hold(fault, scope, receive, entry, send)
        elif fault.kind == "status":
            await self._send_status(fault, recording_send)
        elif fault.kind == "drop":
            await self._drop(receive)
        else:
            await self._drop_mid_body(fault, scope, receive, recording_send)

    async def _hold(
        self, fault: Fault, scope: dict[str, Any], receive: Any, entry: dict[str, Any], send: Any
    ) -> None:
        held: list[dict[str, Any]] = []

        async def holding_send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                entry["status"] = message["status"]  # the call took effect now, whether or not it is heard
            held.append(message)

        await self.app(scope, receive, holding_send)
        await asyncio.sleep(fault.delay)
        for message in held:
            await send(message)  # uvicorn drops what is sent to a client that has gone

    async def _send_status(self, fault: Fault, send: Any) -> None:
        message = fault.message if fault.message is not None else f"Emulated fault: HTTP {fault.status}."
        body = json.dumps(error_body(fault.status, message)).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        if fault.retry_after is not None:
            headers.append((b"retry-after", f"{fault.retry_after:g}".encode()))
        await send({"type": "http.response.start", "status": fault.status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def _drop(self, receive: Any) -> None:
        if not _abort_connection(receive):
            raise RuntimeError("cannot drop the connection: the server is not uvicorn")
        await asyncio.sleep(0)  # let uvicorn see the connection lost, so it does not try to answer

    async def _drop_mid_body(self, fault: Fault, scope: dict[str, Any], receive: Any, send: Any) -> None:
        state: dict[str, Any] = {"sent": 0, "limit": fault.after_bytes, "dropped": False}

        async def truncating_send(message: dict[str, Any]) -> None:
            if state["dropped"]:
                raise _Dropped()
            if message["type"] == "http.response.start" and state["limit"] is None:
                length = dict(message.get("headers", [])).get(b"content-length")
                state["limit"] = int(length) // 2 if length else 1
            if message["type"] == "http.response.body":
                body = message.get("body", b"")
                room = state["limit"] - state["sent"]
                if len(body) >= room:
                    await send({"type": "http.response.body", "body": body[:room], "more_body": True})
                    state["dropped"] = True
                    await self._drop(receive)
                    raise _Dropped()
                state["sent"] += len(body)
            await send(message)

        try:
            await self.app(scope, receive, truncating_send)
        except Exception:
            if not state["dropped"]:
                raise
