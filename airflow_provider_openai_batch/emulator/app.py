"""The HTTP API: ``/v1/files`` and ``/v1/batches`` as the service serves them; the app that also mounts the
``/_emulator`` admin API and the batch pages.

Every route module registers its routes the same way: an ``add_routes(api)``-style function whose handlers
take the ``Request``, reach the state through :func:`~.state.emulator_of` and return a response object.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from starlette.exceptions import HTTPException

from ..statuses import TERMINAL
from . import admin, pages
from .checks import check_endpoint, check_metadata, expires_seconds, int_param
from .engine import BatchWorker
from .errors import APIError, error_body, json_object
from .faults import FaultMiddleware, Faults, Journal, note_created
from .settings import Settings
from .state import Emulator, emulator_of
from .store import BatchRecord, Store, new_batch_id, paginate
from .uploads import read_upload

UPLOAD_PURPOSES = ("assistants", "batch", "fine-tune", "vision", "user_data", "evals")
BATCH_FILE_TTL = 30 * 24 * 3600


def create_app(settings: Settings, data_dir: Path) -> Any:
    """The ASGI app: the FastAPI routes wrapped in the fault-injection and journal middleware.

    :param settings: the settings at start, which a reset returns to.
    :param data_dir: where file bytes are stored.
    """
    emulator = Emulator(
        store=Store(data_dir), settings=settings, defaults=settings, faults=Faults(), journal=Journal()
    )
    api = FastAPI(title="OpenAI Files + Batch API emulator", openapi_url=None, docs_url=None, redoc_url=None)
    api.state.emulator = emulator
    _add_error_handlers(api)
    _add_file_routes(api)
    _add_batch_routes(api)
    admin.add_routes(api)
    pages.add_routes(api)
    app = FaultMiddleware(api, emulator.faults, emulator.journal)
    app.emulator = emulator  # type: ignore[attr-defined]
    return app


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


def _add_file_routes(api: FastAPI) -> None:
    @api.post("/v1/files")
    async def create_file(request: Request) -> JSONResponse:
        emulator = emulator_of(request)
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
                ttl = expires_seconds(after, "expires_after")
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
            note_created(request.scope, record.id)
        finally:
            tmp.unlink(missing_ok=True)
        return JSONResponse(record.to_api())

    @api.get("/v1/files")
    async def list_files(request: Request) -> JSONResponse:
        store = emulator_of(request).store
        limit = int_param(request, "limit", 10000, 1, 10000)
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
        return JSONResponse(emulator_of(request).store.get_file(file_id).to_api())

    @api.get("/v1/files/{file_id}/content")
    async def file_content(request: Request, file_id: str) -> FileResponse:
        record = emulator_of(request).store.get_file(file_id)
        return FileResponse(record.path, media_type="application/octet-stream")

    @api.delete("/v1/files/{file_id}")
    async def delete_file(request: Request, file_id: str) -> JSONResponse:
        emulator_of(request).store.delete_file(file_id)
        return JSONResponse({"id": file_id, "object": "file", "deleted": True})


def _add_batch_routes(api: FastAPI) -> None:
    @api.post("/v1/batches")
    async def create_batch(request: Request) -> JSONResponse:
        emulator = emulator_of(request)
        body = await json_object(request)
        endpoint = check_endpoint(body.get("endpoint"))
        window = body.get("completion_window")
        if window != "24h":
            raise APIError(
                400, f"Expected `completion_window` '24h' but received {window!r}.", param="completion_window"
            )
        metadata = check_metadata(body.get("metadata"))
        output_expires = body.get("output_expires_after")
        seconds = (
            expires_seconds(output_expires, "output_expires_after") if output_expires is not None else None
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
            input_file_id=record.id,  # the id asked for, now known to be a str
            completion_window=window,
            created_at=int(now),
            deadline=now + window_seconds,
            expires_at=int(now + window_seconds),
            metadata=metadata,
            output_expires_seconds=seconds,
        )
        emulator.store.add_batch(batch)
        note_created(request.scope, batch.id)  # the journal then says which batch a 200 paid for
        BatchWorker(emulator.store, batch, emulator.settings).start()
        return JSONResponse(batch.to_api())

    @api.get("/v1/batches")
    async def list_batches(request: Request) -> JSONResponse:
        limit = int_param(request, "limit", 20, 1, 100)
        batches = {batch.id: batch for batch in emulator_of(request).store.batches_newest_first()}
        page, has_more = paginate(list(batches), request.query_params.get("after"), limit)
        result: dict[str, Any] = {
            "object": "list",
            "data": [batches[i].to_api() for i in page],
            "has_more": has_more,
        }
        if page:
            result.update(first_id=page[0], last_id=page[-1])
        return JSONResponse(result)

    @api.get("/v1/batches/{batch_id}")
    async def retrieve_batch(request: Request, batch_id: str) -> JSONResponse:
        return JSONResponse(emulator_of(request).store.get_batch(batch_id).to_api())

    @api.post("/v1/batches/{batch_id}/cancel")
    async def cancel_batch(request: Request, batch_id: str) -> JSONResponse:
        batch = emulator_of(request).store.get_batch(batch_id)
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
