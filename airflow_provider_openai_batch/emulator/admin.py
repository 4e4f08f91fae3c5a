"""The ``/_emulator`` admin API: faults, journal, reset, settings, forced expiry and seeded batches.

These routes are for tests: they are not journalled and never faulted.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from .checks import check_endpoint, check_metadata
from .errors import APIError, json_object
from .faults import Fault
from .settings import SettingsError
from .state import emulator_of
from .store import BatchRecord, new_batch_id, new_file_id

MAX_SEED = 10_000
# The timestamps a batch in each status carries, so a seeded batch looks like one that got there.
SEED_TIMESTAMPS: dict[str, tuple[str, ...]] = {
    "validating": (),
    "failed": ("failed_at",),
    "in_progress": ("in_progress_at",),
    "finalizing": ("in_progress_at", "finalizing_at"),
    "completed": ("in_progress_at", "finalizing_at", "completed_at"),
    "expired": ("in_progress_at", "expired_at"),
    "cancelling": ("in_progress_at", "cancelling_at"),
    "cancelled": ("in_progress_at", "cancelling_at", "cancelled_at"),
}
_SEED_FIELDS = ("count", "status", "metadata", "endpoint", "created_at")


def add_routes(api: FastAPI) -> None:
    """Register the ``/_emulator`` routes on ``api``."""

    @api.get("/_emulator/health")
    async def health(_request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok"})

    @api.get("/_emulator/faults")
    async def list_faults(request: Request) -> JSONResponse:
        return JSONResponse([fault.to_dict() for fault in emulator_of(request).faults.armed])

    @api.post("/_emulator/faults")
    async def add_fault(request: Request) -> JSONResponse:
        spec = await json_object(request)
        allowed = {f.name for f in dataclasses.fields(Fault)}
        if "path" not in spec or set(spec) - allowed:
            raise APIError(
                400,
                f"Expected fault fields from {sorted(allowed)} including 'path' but received {sorted(spec)}.",
            )
        try:
            fault = Fault(**spec)
        except (TypeError, ValueError) as exc:
            raise APIError(400, str(exc)) from exc
        emulator_of(request).faults.add(fault)
        return JSONResponse(fault.to_dict())

    @api.delete("/_emulator/faults")
    async def clear_faults(request: Request) -> JSONResponse:
        emulator_of(request).faults.clear()
        return JSONResponse({"cleared": True})

    @api.get("/_emulator/journal")
    async def journal(request: Request) -> JSONResponse:
        emulator = emulator_of(request)
        entries = [dict(entry) for entry in list(emulator.journal.entries)]
        for entry in entries:
            batch = emulator.store.batches.get(entry.get("id") or "")
            if batch is not None and batch.unbilled:
                entry["billed"] = False  # created, then refused by a full queue: OpenAI bills nothing
        return JSONResponse(entries)

    @api.post("/_emulator/reset")
    async def reset(request: Request) -> JSONResponse:
        emulator = emulator_of(request)
        emulator.store.reset()
        emulator.faults.clear()
        emulator.journal.entries.clear()
        emulator.settings = emulator.defaults
        return JSONResponse({"reset": True})

    @api.get("/_emulator/config")
    async def get_config(request: Request) -> JSONResponse:
        return JSONResponse(emulator_of(request).settings.model_dump())

    @api.post("/_emulator/config")
    async def set_config(request: Request) -> JSONResponse:
        emulator = emulator_of(request)
        try:
            emulator.settings = emulator.settings.changed(await json_object(request))
        except SettingsError as exc:
            raise APIError(400, str(exc)) from exc
        return JSONResponse(emulator.settings.model_dump())

    @api.post("/_emulator/batches/{batch_id}/expire")
    async def expire_batch(request: Request, batch_id: str) -> JSONResponse:
        batch = emulator_of(request).store.get_batch(batch_id)
        with batch.lock:
            if batch.status not in ("validating", "in_progress"):
                raise APIError(409, f"Cannot expire a batch with status '{batch.status}'.", param="batch_id")
            batch.expire_requested = True
            batch.wake.set()
        return JSONResponse(batch.to_api())

    @api.post("/_emulator/batches/seed")
    async def seed_batches(request: Request) -> JSONResponse:
        store = emulator_of(request).store
        batches = seeded_batches(await json_object(request))
        for batch in batches:
            store.add_batch(batch)
        return JSONResponse({"ids": [batch.id for batch in batches]})


def seeded_batches(spec: dict[str, Any]) -> list[BatchRecord]:
    """Batches built from a seed request, with no input file and no worker: they never change status.

    :param spec: ``{"count": N, "status": "completed", "metadata": {...}, "endpoint": "/v1/...",
        "created_at": unix_seconds}``; only ``count`` is required.
    """
    unknown = sorted(set(spec) - set(_SEED_FIELDS))
    if unknown:
        raise APIError(400, f"Expected seed fields from {list(_SEED_FIELDS)} but received {unknown}.")
    count = spec.get("count")
    if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= MAX_SEED:
        raise APIError(
            400, f"Expected `count` between 1 and {MAX_SEED} but received {count!r}.", param="count"
        )
    status = spec.get("status", "completed")
    if status not in SEED_TIMESTAMPS:
        raise APIError(
            400, f"Expected `status` in {list(SEED_TIMESTAMPS)} but received {status!r}.", param="status"
        )
    created_at = spec.get("created_at", int(time.time()))
    if isinstance(created_at, bool) or not isinstance(created_at, int) or created_at < 0:
        raise APIError(
            400, f"Expected `created_at` as Unix seconds but received {created_at!r}.", param="created_at"
        )
    endpoint = check_endpoint(spec.get("endpoint", "/v1/chat/completions"))
    metadata = check_metadata(spec.get("metadata"))
    stamps: dict[str, Any] = dict.fromkeys(SEED_TIMESTAMPS[status], created_at)  # BatchRecord's *_at fields
    return [
        BatchRecord(
            id=new_batch_id(),
            endpoint=endpoint,
            input_file_id=new_file_id(),
            completion_window="24h",
            created_at=created_at,
            deadline=created_at + 24 * 3600,
            expires_at=created_at + 24 * 3600,
            metadata=dict(metadata) if metadata is not None else None,
            status=status,
            **stamps,
        )
        for _ in range(count)
    ]
