"""In-memory records of files and batches; file bytes live on disk under ``data_dir``."""

from __future__ import annotations

import dataclasses
import secrets
import string
import threading
import time
from pathlib import Path
from typing import Any

from ..statuses import QUEUED
from .errors import APIError, not_found

_ALPHABET = string.ascii_letters + string.digits
THIRTY_DAYS = 30 * 24 * 3600


def new_file_id() -> str:
    return "file-" + "".join(secrets.choice(_ALPHABET) for _ in range(22))


def new_batch_id() -> str:
    return "batch_" + secrets.token_hex(16)


@dataclasses.dataclass
class FileRecord:
    id: str
    filename: str
    purpose: str
    bytes: int
    created_at: int
    path: Path
    expires_at: int | None = None

    def to_api(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "id": self.id,
            "object": "file",
            "bytes": self.bytes,
            "created_at": self.created_at,
            "filename": self.filename,
            "purpose": self.purpose,
            "status": "processed",
        }
        if self.expires_at is not None:
            body["expires_at"] = self.expires_at
        return body


TIMESTAMPS = (
    "in_progress_at",
    "expires_at",
    "finalizing_at",
    "completed_at",
    "failed_at",
    "expired_at",
    "cancelling_at",
    "cancelled_at",
)


@dataclasses.dataclass
class BatchRecord:
    """One batch. The worker thread writes counts and state; API handlers only read, or flag under ``lock``."""

    id: str
    endpoint: str
    input_file_id: str
    completion_window: str
    created_at: int
    deadline: float  # time.time() at which the (time-scaled) completion window ends
    metadata: dict[str, str] | None = None
    output_expires_seconds: int | None = None
    status: str = "validating"
    model: str | None = None
    errors: list[dict[str, Any]] | None = None
    output_file_id: str | None = None
    error_file_id: str | None = None
    in_progress_at: int | None = None
    expires_at: int | None = None
    finalizing_at: int | None = None
    completed_at: int | None = None
    failed_at: int | None = None
    expired_at: int | None = None
    cancelling_at: int | None = None
    cancelled_at: int | None = None
    total: int = 0
    completed: int = 0
    failed: int = 0
    input_tokens: int = 0
    cached_tokens: int = 0
    output_tokens: int = 0
    reasoning_tokens: int = 0
    #: Prompt tokens this batch holds in its model's queue (0: not admitted, or no limit applies).
    enqueued_tokens: int = 0
    #: Failed for a full queue: OpenAI bills nothing for it (the journal says so).
    unbilled: bool = False
    lock: threading.Lock = dataclasses.field(default_factory=threading.Lock, repr=False)
    # Set by cancel / forced expiry / reset; the worker waits on it instead of sleeping.
    wake: threading.Event = dataclasses.field(default_factory=threading.Event, repr=False)
    cancel_requested: bool = False
    expire_requested: bool = False
    stop_requested: bool = False

    def to_api(self) -> dict[str, Any]:
        # Optional fields the schema types as string/integer are omitted rather than sent as null.
        body: dict[str, Any] = {
            "id": self.id,
            "object": "batch",
            "endpoint": self.endpoint,
            "input_file_id": self.input_file_id,
            "completion_window": self.completion_window,
            "status": self.status,
            "created_at": self.created_at,
        }
        if self.model is not None:
            body["model"] = self.model
        if self.errors is not None:
            body["errors"] = {"object": "list", "data": list(self.errors)}
        if self.output_file_id is not None:
            body["output_file_id"] = self.output_file_id
        if self.error_file_id is not None:
            body["error_file_id"] = self.error_file_id
        for name in TIMESTAMPS:
            value = getattr(self, name)
            if value is not None:
                body[name] = value
        body["request_counts"] = {"total": self.total, "completed": self.completed, "failed": self.failed}
        body["usage"] = {
            "input_tokens": self.input_tokens,
            "input_tokens_details": {"cached_tokens": self.cached_tokens},
            "output_tokens": self.output_tokens,
            "output_tokens_details": {"reasoning_tokens": self.reasoning_tokens},
            "total_tokens": self.input_tokens + self.output_tokens,
        }
        body["metadata"] = self.metadata
        return body


class Store:
    """Files and batches of one emulator process. Dicts keep creation order, which pagination relies on."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = Path(data_dir)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.files: dict[str, FileRecord] = {}
        self.batches: dict[str, BatchRecord] = {}
        # Batch workers add output files from their threads while handlers list files.
        self._files_lock = threading.Lock()
        # Admission to a model's batch queue is one decision at a time.
        self._queue_lock = threading.Lock()

    def file_list(self) -> list[FileRecord]:
        """A snapshot of the files, oldest first."""
        with self._files_lock:
            return list(self.files.values())

    def path_for(self, file_id: str) -> Path:
        return self.data_dir / file_id

    def get_file(self, file_id: str) -> FileRecord:
        record = self.files.get(file_id)
        if record is None:
            raise not_found("File", file_id, "file_id")
        return record

    def get_batch(self, batch_id: str) -> BatchRecord:
        record = self.batches.get(batch_id)
        if record is None:
            raise not_found("batch", batch_id, "batch_id")
        return record

    def add_file(
        self, path: Path, filename: str, purpose: str, expires_after: int | None = None
    ) -> FileRecord:
        """Register bytes already written at ``path`` (moved to the file's own name) as a new file."""
        file_id = new_file_id()
        target = self.path_for(file_id)
        Path(path).replace(target)
        now = int(time.time())
        record = FileRecord(
            id=file_id,
            filename=filename,
            purpose=purpose,
            bytes=target.stat().st_size,
            created_at=now,
            path=target,
            expires_at=now + expires_after if expires_after else None,
        )
        with self._files_lock:
            self.files[file_id] = record
        return record

    def add_batch(self, batch: BatchRecord) -> None:
        self.batches[batch.id] = batch

    def enqueued_tokens(self, model: str | None) -> int:
        """Prompt tokens of ``model``'s admitted batches that are validating, in progress or finalizing."""
        return sum(
            b.enqueued_tokens
            for b in list(self.batches.values())
            if b.model == model and b.status in QUEUED and b.enqueued_tokens
        )

    def enqueue(self, batch: BatchRecord, model: str | None, tokens: int, limit: int) -> bool:
        """Admit ``batch`` (``tokens`` prompt tokens) to ``model``'s queue unless that would pass ``limit``."""
        with self._queue_lock:
            if self.enqueued_tokens(model) + tokens > limit:
                return False
            with batch.lock:
                batch.model, batch.enqueued_tokens = model, max(tokens, 1)
            return True

    def batches_newest_first(self) -> list[BatchRecord]:
        """Newest first by ``created_at``; among batches of the same second, the last created first.

        The tie order is fixed by creation, so cursor pages neither lose nor repeat a batch.
        """
        ordered = list(reversed(self.batches.values()))
        ordered.sort(key=lambda batch: batch.created_at, reverse=True)  # stable: ties keep creation order
        return ordered

    def delete_file(self, file_id: str) -> None:
        record = self.get_file(file_id)
        with self._files_lock:
            self.files.pop(file_id, None)
        record.path.unlink(missing_ok=True)

    def reset(self) -> None:
        for batch in self.batches.values():
            with batch.lock:
                batch.stop_requested = True
                batch.wake.set()
        self.batches.clear()
        with self._files_lock:
            records, self.files = list(self.files.values()), {}
        for record in records:
            record.path.unlink(missing_ok=True)


def paginate(ids: list[str], after: str | None, limit: int) -> tuple[list[str], bool]:
    """The page of ``ids`` following ``after`` (an unknown cursor is a 400), and ``has_more``."""
    start = 0
    if after:
        try:
            start = ids.index(after) + 1
        except ValueError as exc:
            raise APIError(400, f"Invalid cursor: no object with id '{after}'", param="after") from exc
    page = ids[start : start + limit]
    return page, start + limit < len(ids)
