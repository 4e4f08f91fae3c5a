"""In-memory stand-ins for unit tests of pure logic (integration tests use the emulator over real HTTP)."""

from __future__ import annotations

import itertools
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx2
import openai

from airflow_provider_openai_batch.hooks.download import ContentStream


def not_found(batch_id: str) -> openai.NotFoundError:
    request = httpx2.Request("GET", f"https://api.example/v1/batches/{batch_id}")
    return openai.NotFoundError("not found", response=httpx2.Response(404, request=request), body=None)


def server_error() -> openai.InternalServerError:
    request = httpx2.Request("GET", "https://api.example/v1/batches")
    return openai.InternalServerError("boom", response=httpx2.Response(500, request=request), body=None)


@dataclass
class FakeStore:
    """The task state store accessor."""

    values: dict[str, Any] = field(default_factory=dict)
    writes: int = 0

    def get(self, key: str, default: Any = None) -> Any:
        return self.values.get(key, default)

    writers: set[str] = field(default_factory=set)  # names of the threads that wrote

    def set(self, key: str, value: Any) -> None:
        self.writes += 1
        self.writers.add(threading.current_thread().name)
        self.values[key] = value


@dataclass
class FakeBatchHook:
    """Batches and file contents in memory, newest batch first in listings; counts the paid creates and
    records the downloads."""

    batches: list[dict[str, Any]] = field(default_factory=list)  # newest first
    files: dict[str, bytes] = field(default_factory=dict)  # file id → content, for download_file
    downloads: list[str] = field(default_factory=list)
    creates: int = 0
    uploads: int = 0
    list_calls: int = 0
    read_errors: dict[str, Exception] = field(default_factory=dict)
    upload_errors: dict[str, Exception] = field(default_factory=dict)  # filename → what its upload raises
    uploaded: list[str] = field(default_factory=list)  # filenames, in the order their uploads finished
    upload_gate: threading.Barrier | None = None  # when set, every upload waits for this many to be under way
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    clock: itertools.count = field(default_factory=lambda: itertools.count(2_000_000_000))

    def add(self, batch: dict[str, Any]) -> None:
        self.batches.insert(0, batch)

    def get_batch(self, batch_id: str) -> dict[str, Any]:
        if batch_id in self.read_errors:
            raise self.read_errors[batch_id]
        for batch in self.batches:
            if batch["id"] == batch_id:
                return batch
        raise not_found(batch_id)

    def list_batches(self, *, after: str | None = None, limit: int = 100) -> Any:
        self.list_calls += 1
        start = 0 if after is None else next(i for i, b in enumerate(self.batches) if b["id"] == after) + 1
        page = self.batches[start : start + limit]
        return SimpleNamespace(data=page, has_more=start + limit < len(self.batches))

    def upload_file(self, *, file: Any, filename: str, purpose: str = "batch") -> Any:
        if self.upload_gate is not None:
            self.upload_gate.wait()
        if filename in self.upload_errors:
            raise self.upload_errors[filename]
        with self._lock:
            self.uploads += 1
            self.uploaded.append(filename)
            return SimpleNamespace(id=f"file-{self.uploads}")

    def create_batch(
        self, *, input_file_id: str, metadata: dict[str, str], find_existing: Any = None, **_: Any
    ):
        self.creates += 1
        batch = {
            "id": f"batch_{self.creates}",
            "status": "validating",
            "input_file_id": input_file_id,
            "metadata": dict(metadata),
            "created_at": next(self.clock),
            "request_counts": {"total": 0, "completed": 0, "failed": 0},
        }
        self.add(batch)
        return batch

    def download_file(self, file_id: str, *, local_path: str | os.PathLike[str], **_: Any) -> tuple[int, int]:
        """Write the file's content to ``local_path``; ``(bytes, lines)`` as the real hook returns."""
        self.downloads.append(file_id)
        data = self.files[file_id]
        Path(local_path).write_bytes(data)
        return len(data), data.count(b"\n") + (not data.endswith(b"\n") if data else 0)

    def stream_file(
        self, file_id: str, consume: Any, *, keep: Any = None, check: Any = None, **_: Any
    ) -> Any:
        """Feed the file's content to ``consume`` through the real ContentStream, in small odd-sized chunks."""
        self.downloads.append(file_id)
        data = self.files[file_id]
        stream = ContentStream(
            iter([data[i : i + 7] for i in range(0, len(data), 7)]), len(data), keep, check
        )
        return consume(stream), stream
