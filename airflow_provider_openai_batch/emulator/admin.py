"""The ``/_emulator`` admin API: faults, journal, reset, config, forced expiry."""

from __future__ import annotations

import dataclasses
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from .errors import APIError, json_object
from .faults import Fault

router = APIRouter(prefix="/_emulator")


@router.get("/health")
async def health() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/faults")
async def list_faults(request: Request) -> list[dict[str, Any]]:
    return [fault.to_dict() for fault in request.app.state.emulator.faults.armed]


@router.post("/faults")
async def add_fault(request: Request) -> dict[str, Any]:
    spec = await json_object(request)
    allowed = {f.name for f in dataclasses.fields(Fault)}
    if "path" not in spec or set(spec) - allowed:
        raise APIError(
            400, f"Expected fault fields from {sorted(allowed)} including 'path'; received {sorted(spec)}."
        )
    try:
        fault = Fault(**spec)
    except (TypeError, ValueError) as exc:
        raise APIError(400, str(exc)) from exc
    request.app.state.emulator.faults.add(fault)
    return fault.to_dict()


@router.delete("/faults")
async def clear_faults(request: Request) -> dict[str, bool]:
    request.app.state.emulator.faults.clear()
    return {"cleared": True}


@router.get("/journal")
async def journal(request: Request) -> list[dict[str, Any]]:
    return list(request.app.state.emulator.journal.entries)


@router.post("/reset")
async def reset(request: Request) -> dict[str, bool]:
    emulator = request.app.state.emulator
    emulator.store.reset()
    emulator.faults.clear()
    emulator.journal.entries.clear()
    emulator.settings.update(emulator.defaults.as_dict())
    return {"reset": True}


@router.get("/config")
async def get_config(request: Request) -> dict[str, Any]:
    return request.app.state.emulator.settings.as_dict()


@router.post("/config")
async def set_config(request: Request) -> dict[str, Any]:
    settings = request.app.state.emulator.settings
    try:
        settings.update(await json_object(request))
    except ValueError as exc:
        raise APIError(400, str(exc)) from exc
    return settings.as_dict()


@router.post("/batches/{batch_id}/expire")
async def expire_batch(request: Request, batch_id: str) -> JSONResponse:
    batch = request.app.state.emulator.store.get_batch(batch_id)
    with batch.lock:
        if batch.status not in ("validating", "in_progress"):
            raise APIError(409, f"Cannot expire a batch with status '{batch.status}'.", param="batch_id")
        batch.expire_requested = True
        batch.wake.set()
    return JSONResponse(batch.to_api())
