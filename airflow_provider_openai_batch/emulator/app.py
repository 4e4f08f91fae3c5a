"""The HTTP API: ``/v1/files`` and ``/v1/batches`` as the service serves them, plus the ``/_emulator`` admin API."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from starlette.exceptions import HTTPException

from . import admin
from .engine import BatchWorker
from .errors import APIError, error_body, json_object
from .faults import FaultMiddleware, Faults, Journal
from .settings import Settings
from .store import TERMINAL, BatchRecord, Store, new_batch_id, paginate
from .uploads import read_upload

ENDPOINTS = (
    "/v1/responses",
    "/v1/chat/completions",
    "/v1/embeddings",
    "/v1/completions",
    "/v1/moderations",
    "/v1/images/generations",
    "/v1/images/edits",
    "/v1/videos",
)
UPLOAD_PURPOSES = ("assistants", "batch", "fine-tune", "vision", "user_data", "evals")
BATCH_FILE_TTL = 30 * 24 * 3600


@dataclasses.dataclass
class Emulator:
    """Everything one emulator process holds; ``defaults`` are the settings a reset returns to."""

    store: Store
    settings: Settings
    defaults: Settings
    faults: Faults
    journal: Journal


def create_app(settings: Settings, data_dir: Path) -> Any:
    """The ASGI app: the FastAPI routes wrapped in the fault-injection and journal middleware."""
    emulator = Emulator(
        store=Store(data_dir),
        settings=settings,
        defaults=dataclasses.replace(settings),
        faults=Faults(),
        journal=Journal(),
    )
    api = FastAPI(title="OpenAI Files + Batch API emulator", openapi_url=None, docs_url=None, redoc_url=None)
    api.state.emulator = emulator
    api.include_router(admin.router)
    _add_error_handlers(api)
    _add_file_routes(api)
    _add_batch_routes(api)
    app = FaultMiddleware(api, emulator.faults, emulator.journal)
    app.emulator = emulator  # type: ignore[attr-defined]
    return app


def _state(request: Request) -> Emulator:
    return request.app.state.emulator


def _add_error_handlers(api: FastAPI) -> None:
    @api.exception_handler(APIError)
    async def api_error(_request: Request, exc: APIError) -> JSONResponse:
        return JSONResponse(exc.body(), status_code=exc.status)

    @api.exception_handler(HTTPException)
    async def http_error(_request: Request, exc: HTTPException) -> JSONResponse:
        return JSONResponse(error_body(exc.status_code, str(exc.detail)), status_code=exc.status_code)

    @api.exception_handler(RequestValidationError)
    async def validation_error(_request: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse(error_body(400, str(exc.errors())), status_code=400)

    @api.exception_handler(Exception)
    async def server_error(_request: Request, exc: Exception) -> JSONResponse:
        return JSONResponse(error_body(500, f"Emulator error: {exc!r}"), status_code=500)


def _int_param(request: Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        value = low - 1
    if not low <= value <= high:
        raise APIError(400, f"Expected `{name}` between {low} and {high} but received {raw!r}.", param=name)
    return value


def _expires_seconds(value: Any, param: str) -> int:
    seconds = value.get("seconds") if isinstance(value, dict) else None
    if (
        not isinstance(value, dict)
        or value.get("anchor") != "created_at"
        or isinstance(seconds, bool)
        or not isinstance(seconds, int)
        or not 3600 <= seconds <= 2592000
    ):
        raise APIError(
            400,
            f'Expected `{param}` as {{"anchor": "created_at", "seconds": 3600..2592000}} but received {value!r}.',
            param=param,
        )
    return seconds


def _add_file_routes(api: FastAPI) -> None:
    @api.post("/v1/files")
    async def create_file(request: Request) -> JSONResponse:
        emulator = _state(request)
        limit = emulator.settings.max_file_bytes
        tmp = emulator.store.data_dir / f".upload-{time.monotonic_ns()}.tmp"
        try:
            upload = await read_upload(request, tmp, limit)
            purpose = upload.fields.get("purpose")
            if upload.filename is None:
                raise APIError(400, "Missing required parameter: 'file'.", param="file")
            if purpose not in UPLOAD_PURPOSES:
                raise APIError(
                    400,
                    f"Expected `purpose` in {list(UPLOAD_PURPOSES)} but received {purpose!r}.",
                    param="purpose",
                )
            ttl = BATCH_FILE_TTL if purpose == "batch" else None
            if "expires_after[anchor]" in upload.fields or "expires_after[seconds]" in upload.fields:
                raw = upload.fields.get("expires_after[seconds]", "")
                after = {
                    "anchor": upload.fields.get("expires_after[anchor]"),
                    "seconds": int(raw) if raw.isdigit() else raw,
                }
                ttl = _expires_seconds(after, "expires_after")
            if purpose == "batch":
                if not upload.filename.endswith(".jsonl"):
                    raise APIError(400, "Invalid file format for Batch API. Must be .jsonl", param="file")
                if upload.size > limit:
                    raise APIError(
                        413,
                        f"File is too large: {upload.size} bytes; the limit for purpose batch is {limit} bytes.",
                        param="file",
                        code="file_too_large",
                    )
            record = emulator.store.add_file(tmp, upload.filename, purpose, ttl)
        finally:
            tmp.unlink(missing_ok=True)
        return JSONResponse(record.to_api())

    @api.get("/v1/files")
    async def list_files(request: Request) -> JSONResponse:
        store = _state(request).store
        limit = _int_param(request, "limit", 10000, 1, 10000)
        order = request.query_params.get("order", "desc")
        if order not in ("asc", "desc"):
            raise APIError(400, f"Expected `order` 'asc' or 'desc' but received {order!r}.", param="order")
        purpose = request.query_params.get("purpose")
        records = {f.id: f for f in store.file_list() if purpose is None or f.purpose == purpose}
        ids = list(records)
        if order == "desc":
            ids.reverse()
        page, has_more = paginate(ids, request.query_params.get("after"), limit)
        # The schema requires first_id/last_id as strings, so an empty page carries "".
        return JSONResponse(
            {
                "object": "list",
                "data": [records[i].to_api() for i in page],
                "first_id": page[0] if page else "",
                "last_id": page[-1] if page else "",
                "has_more": has_more,
            }
        )

    @api.get("/v1/files/{file_id}")
    async def retrieve_file(request: Request, file_id: str) -> JSONResponse:
        return JSONResponse(_state(request).store.get_file(file_id).to_api())

    @api.get("/v1/files/{file_id}/content")
    async def file_content(request: Request, file_id: str) -> FileResponse:
        record = _state(request).store.get_file(file_id)
        return FileResponse(record.path, media_type="application/octet-stream")

    @api.delete("/v1/files/{file_id}")
    async def delete_file(request: Request, file_id: str) -> JSONResponse:
        _state(request).store.delete_file(file_id)
        return JSONResponse({"id": file_id, "object": "file", "deleted": True})


def _check_metadata(metadata: Any) -> dict[str, str] | None:
    if metadata is None:
        return None
    if not isinstance(metadata, dict) or len(metadata) > 16:
        raise APIError(400, "Expected `metadata` as an object of at most 16 pairs.", param="metadata")
    for key, value in metadata.items():
        if len(key) > 64 or not isinstance(value, str) or len(value) > 512:
            raise APIError(
                400,
                f"Invalid metadata pair {key!r}: keys are at most 64 characters, values strings of at most 512.",
                param=f"metadata.{key}",
            )
    return metadata


def _add_batch_routes(api: FastAPI) -> None:
    @api.post("/v1/batches")
    async def create_batch(request: Request) -> JSONResponse:
        emulator = _state(request)
        body = await json_object(request)
        endpoint = body.get("endpoint")
        if endpoint not in ENDPOINTS:
            raise APIError(
                400, f"Expected `endpoint` in {list(ENDPOINTS)} but received {endpoint!r}.", param="endpoint"
            )
        window = body.get("completion_window")
        if window != "24h":
            raise APIError(
                400, f"Expected `completion_window` '24h' but received {window!r}.", param="completion_window"
            )
        metadata = _check_metadata(body.get("metadata"))
        output_expires = body.get("output_expires_after")
        seconds = (
            _expires_seconds(output_expires, "output_expires_after") if output_expires is not None else None
        )
        input_file_id = body.get("input_file_id")
        record = emulator.store.files.get(input_file_id) if isinstance(input_file_id, str) else None
        if record is None:
            raise APIError(400, f"No such file: {input_file_id!r}.", param="input_file_id")
        if record.purpose != "batch":
            raise APIError(
                400,
                f"File {input_file_id} has purpose {record.purpose!r}; batch input files need purpose 'batch'.",
                param="input_file_id",
            )
        now = time.time()
        window_seconds = 24 * 3600 * emulator.settings.time_scale
        batch = BatchRecord(
            id=new_batch_id(),
            endpoint=endpoint,
            input_file_id=input_file_id,
            completion_window=window,
            created_at=int(now),
            deadline=now + window_seconds,
            expires_at=int(now + window_seconds),
            metadata=metadata,
            output_expires_seconds=seconds,
        )
        emulator.store.batches[batch.id] = batch
        BatchWorker(emulator.store, batch, dataclasses.replace(emulator.settings)).start()
        return JSONResponse(batch.to_api())

    @api.get("/v1/batches")
    async def list_batches(request: Request) -> JSONResponse:
        store = _state(request).store
        limit = _int_param(request, "limit", 20, 1, 100)
        ids = list(reversed(store.batches))
        page, has_more = paginate(ids, request.query_params.get("after"), limit)
        result: dict[str, Any] = {
            "object": "list",
            "data": [store.batches[i].to_api() for i in page],
            "has_more": has_more,
        }
        if page:
            result.update(first_id=page[0], last_id=page[-1])
        return JSONResponse(result)

    @api.get("/v1/batches/{batch_id}")
    async def retrieve_batch(request: Request, batch_id: str) -> JSONResponse:
        return JSONResponse(_state(request).store.get_batch(batch_id).to_api())

    @api.post("/v1/batches/{batch_id}/cancel")
    async def cancel_batch(request: Request, batch_id: str) -> JSONResponse:
        batch = _state(request).store.get_batch(batch_id)
        with batch.lock:
            if batch.status in TERMINAL or batch.status == "finalizing":
                raise APIError(
                    409,
                    f"Cannot cancel a batch with status '{batch.status}'.",
                    param="batch_id",
                    code="batch_not_cancellable",
                )
            if batch.status != "cancelling":
                batch.cancel_requested = True
                batch.status = "cancelling"
                batch.cancelling_at = int(time.time())
                batch.wake.set()
        return JSONResponse(batch.to_api())
