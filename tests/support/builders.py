"""Builders of requests, input files and batch dicts, shaped as the Batch API has them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

ENDPOINT = "/v1/chat/completions"


def request(custom_id: str, status: int | None = None, *, model: str = "gpt-4o-mini") -> dict[str, Any]:
    """A chat completions request; ``status`` makes the emulator fail it with that HTTP status."""
    body: dict[str, Any] = {"model": model, "messages": [{"role": "user", "content": f"q {custom_id}"}]}
    if status is not None:
        body["x_emulator_status"] = status
    return {"custom_id": custom_id, "method": "POST", "url": ENDPOINT, "body": body}


def write_input(path: Path, ids: list[str], failing: dict[str, int] | None = None) -> Path:
    failing = failing or {}
    path.write_text("".join(json.dumps(request(cid, failing.get(cid))) + "\n" for cid in ids))
    return path


def batch(
    batch_id: str = "batch_1",
    status: str = "completed",
    *,
    counts: tuple[int, int, int] = (3, 3, 0),
    metadata: dict[str, str] | None = None,
    created_at: int = 1_700_000_000,
    **extra: Any,
) -> dict[str, Any]:
    total, completed, failed = counts
    return {
        "id": batch_id,
        "object": "batch",
        "status": status,
        "endpoint": ENDPOINT,
        "input_file_id": f"file-in-{batch_id}",
        "output_file_id": f"file-out-{batch_id}" if completed else None,
        "error_file_id": f"file-err-{batch_id}" if failed else None,
        "request_counts": {"total": total, "completed": completed, "failed": failed},
        "metadata": metadata or {},
        "created_at": created_at,
        **extra,
    }
