"""Builders of requests, JSONL bytes, input files and batch dicts, shaped as the Batch API has them.

One builder per shape, so a test states only what matters to it (an id, a failing status, an extra body field)
and every suite writes the same request lines.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

ENDPOINT = "/v1/chat/completions"


def request(
    custom_id: str,
    status: int | None = None,
    *,
    model: str = "gpt-4o-mini",
    url: str = ENDPOINT,
    content: str | None = None,
    **body: Any,
) -> dict[str, Any]:
    """A chat completions request line.

    :param custom_id: the request's ``custom_id``.
    :param status: makes the emulator fail this request with that HTTP status (``x_emulator_status``).
    :param model: the body's ``model``.
    :param url: the line's ``url`` (another endpoint's url makes the line invalid for a chat batch).
    :param content: the user message; ``"q {custom_id}"`` when not given.
    :param body: more fields of the body, after ``model`` and ``messages``.
    """
    payload: dict[str, Any] = {
        "model": model,
        "messages": [{"role": "user", "content": f"q {custom_id}" if content is None else content}],
    }
    if status is not None:
        payload["x_emulator_status"] = status
    payload.update(body)
    return {"custom_id": custom_id, "method": "POST", "url": url, "body": payload}


def line(obj: Any) -> bytes:
    """One compact JSON line, without its newline."""
    return json.dumps(obj, separators=(",", ":")).encode()


def jsonl(*rows: Any) -> bytes:
    """JSONL bytes: each row as :func:`line`, a ``bytes`` row as it is (a blank or broken line), each + newline."""
    return b"".join((row if isinstance(row, bytes) else line(row)) + b"\n" for row in rows)


def write_input(path: Path, ids: Iterable[str], failing: dict[str, int] | None = None) -> Path:
    """An input file with one :func:`request` per id.

    :param path: the file to write.
    :param ids: the custom_ids, in order.
    :param failing: custom_id → the HTTP status the emulator answers that request with.
    :return: ``path``.
    """
    failing = failing or {}
    path.write_text("".join(json.dumps(request(cid, failing.get(cid))) + "\n" for cid in ids))
    return path


def write_requests(
    path: Path, n: int, *, prefix: str = "req", fail: dict[int, int] | None = None
) -> list[str]:
    """``n`` requests ``{prefix}-{i}`` in ``path`` (its folder created).

    :param fail: request index → the HTTP status the emulator answers it with.
    :return: the custom_ids, in order.
    """
    ids = [f"{prefix}-{i}" for i in range(n)]
    path.parent.mkdir(parents=True, exist_ok=True)
    write_input(path, ids, {ids[i]: status for i, status in (fail or {}).items()})
    return ids


def batch(
    batch_id: str = "batch_1",
    status: str = "completed",
    *,
    counts: tuple[int, int, int] = (3, 3, 0),
    metadata: dict[str, str] | None = None,
    created_at: int = 1_700_000_000,
    **extra: Any,
) -> dict[str, Any]:
    """A batch as ``GET /v1/batches/{id}`` returns it.

    :param counts: ``(total, completed, failed)``; an output file id when something completed, an error file id
        when something failed.
    :param extra: more fields, or replacements (``usage=...``, ``output_file_id=None``).
    """
    total, completed, failed = counts
    return {
        "id": batch_id,
        "object": "batch",
        "status": status,
        "endpoint": ENDPOINT,
        "completion_window": "24h",
        "input_file_id": f"file-in-{batch_id}",
        "output_file_id": f"file-out-{batch_id}" if completed else None,
        "error_file_id": f"file-err-{batch_id}" if failed else None,
        "request_counts": {"total": total, "completed": completed, "failed": failed},
        "metadata": metadata or {},
        "created_at": created_at,
        **extra,
    }


def http_error_line(status: int, custom_id: str = "c") -> dict[str, Any]:
    """An error-file line of a request that ran and got an HTTP error."""
    return {
        "id": f"batch_req_{custom_id}",
        "custom_id": custom_id,
        "response": {"status_code": status, "request_id": "req_1", "body": {"error": {"message": "x"}}},
        "error": None,
    }


def batch_error_line(code: str, custom_id: str = "c") -> dict[str, Any]:
    """An error-file line of a request the batch itself stopped or refused (``error.code``)."""
    return {
        "id": f"batch_req_{custom_id}",
        "custom_id": custom_id,
        "response": None,
        "error": {"code": code, "message": "x"},
    }
