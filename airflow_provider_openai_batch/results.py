"""The BatchResult returned through XCom, and the pure bookkeeping behind it (no Airflow import).

A task may run several OpenAI batches (shards of one input, or follow-up rounds of failed requests); a
BatchResult sums them into one answer for the task.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

TERMINAL_STATUSES = frozenset({"completed", "failed", "expired", "cancelled"})
_USAGE_KEYS = ("input_tokens", "output_tokens", "total_tokens")

# Error codes OpenAI puts on requests that did not run through no fault of the request itself.
RETRYABLE_ERROR_CODES = frozenset({"batch_expired", "batch_cancelled", "rate_limit_exceeded", "server_error"})


def as_dict(batch: Any) -> dict[str, Any]:
    """A plain dict of an ``openai.types.Batch`` (or a dict already)."""
    if isinstance(batch, Mapping):
        return dict(batch)
    return batch.model_dump(mode="json", exclude_none=False)


def combined_status(statuses: Iterable[str]) -> str:
    """The status a task reports for several batches: the worst one wins."""
    statuses = list(statuses)
    for status in ("failed", "expired", "cancelled"):
        if status in statuses:
            return status
    if statuses and all(s == "completed" for s in statuses):
        return "completed"
    return next((s for s in statuses if s not in TERMINAL_STATUSES), "unknown")


def sum_counts(batches: Iterable[Mapping[str, Any]]) -> dict[str, int]:
    total = {"total": 0, "completed": 0, "failed": 0}
    for batch in batches:
        counts = batch.get("request_counts") or {}
        for key in total:
            total[key] += int(counts.get(key) or 0)
    return total


def sum_usage(batches: Iterable[Mapping[str, Any]]) -> dict[str, int]:
    usage = dict.fromkeys(_USAGE_KEYS, 0) | {"cached_tokens": 0, "reasoning_tokens": 0}
    for batch in batches:
        u = batch.get("usage") or {}
        for key in _USAGE_KEYS:
            usage[key] += int(u.get(key) or 0)
        usage["cached_tokens"] += int((u.get("input_tokens_details") or {}).get("cached_tokens") or 0)
        usage["reasoning_tokens"] += int((u.get("output_tokens_details") or {}).get("reasoning_tokens") or 0)
    return usage


def failure_details(batch: Mapping[str, Any]) -> str:
    """``errors.data`` of a failed batch, one line per error, as the exception message shows them."""
    data = ((batch.get("errors") or {}).get("data")) or []
    if not data:
        return "  (OpenAI gave no error details)"
    lines = []
    for err in data:
        where = f"line {err['line']}: " if err.get("line") is not None else ""
        param = f" (param {err['param']})" if err.get("param") else ""
        lines.append(f"  {where}[{err.get('code')}] {err.get('message')}{param}")
    return "\n".join(lines)


def shard_summary(batch: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "batch_id": batch["id"],
        "status": batch["status"],
        "input_file_id": batch.get("input_file_id"),
        "output_file_id": batch.get("output_file_id"),
        "error_file_id": batch.get("error_file_id"),
        "request_counts": sum_counts([batch]),
    }


def build_result(
    batches: list[Mapping[str, Any]],
    *,
    output_path: str | None,
    error_path: str | None,
    manifest_path: str | None,
    output_lines: int,
    error_lines: int,
) -> dict[str, Any]:
    """The BatchResult dict: what the task returns through XCom (JSON-safe, no secrets)."""
    ids = [b["id"] for b in batches]
    return {
        "batch_id": ids[0] if ids else None,
        "batch_ids": ids,
        "status": combined_status(b["status"] for b in batches),
        "output_path": output_path,
        "error_path": error_path,
        "manifest_path": manifest_path,
        "output_file_id": batches[0].get("output_file_id") if len(batches) == 1 else None,
        "error_file_id": batches[0].get("error_file_id") if len(batches) == 1 else None,
        "output_file_ids": [b["output_file_id"] for b in batches if b.get("output_file_id")],
        "error_file_ids": [b["error_file_id"] for b in batches if b.get("error_file_id")],
        "request_counts": sum_counts(batches),
        "output_lines": output_lines,
        "error_lines": error_lines,
        "usage": sum_usage(batches),
        "shards": [shard_summary(b) for b in batches],
    }
