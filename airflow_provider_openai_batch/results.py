"""The BatchResult a task returns through XCom (and writes as ``_manifest.json``), built in one place.

A task may run several OpenAI batches (shards of one input, follow-up rounds of failed or unfinished requests);
the BatchResult sums them into one answer for the task. Pure: no Airflow import, no network.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, TypedDict

from airflow_provider_openai_batch.statuses import combined_status

_USAGE_KEYS = ("input_tokens", "output_tokens", "total_tokens")


class RequestCounts(TypedDict):
    total: int
    completed: int
    failed: int


class Usage(TypedDict):
    input_tokens: int
    output_tokens: int
    total_tokens: int
    cached_tokens: int
    reasoning_tokens: int


class ShardSummary(TypedDict):
    batch_id: str
    status: str
    input_file_id: str | None
    output_file_id: str | None
    error_file_id: str | None
    request_counts: RequestCounts


class BatchResult(TypedDict):
    """What the task returns (XCom ``return_value``) and what ``_manifest.json`` holds.

    ``batch_id`` is the first batch (the only one unless sharded or resubmitted); ``batch_ids`` every batch of
    every round; ``rounds`` the batch ids per round (round 0: the input's shards). ``output_file_id`` and
    ``error_file_id`` are set for a single batch; ``*_file_ids`` list every round's. ``output_paths`` and
    ``error_paths`` are the landed files (see :mod:`airflow_provider_openai_batch.files`): one ``output.jsonl``
    on local disk, one object per OpenAI file on object storage when there are several; ``output_path`` and
    ``error_path`` name the file when there is exactly one (else None: read them all, or use ``read_results``).
    ``request_counts`` count each request once, by its last outcome; ``output_lines`` / ``error_lines`` are the
    landed files' lines.
    ``cost`` is an estimate from the price table (``total_usd`` None for an unknown model).
    ``invalid_output`` (with ``output_schema``; else None) counts the output lines whose structured answer did
    not validate: ``{"total", "reasons": {"truncated", "refusal", "no_answer", "invalid_json",
    "schema_mismatch", "no_schema"}}``; they are among ``completed``, and count as failed for
    ``max_failed_ratio``.
    ``cost`` is an estimate from the price table (``total_usd`` None for an unknown model). ``paid_twice`` lists
    twins of a counted batch that already ran (a create repeated by a gateway, or two runs racing): billed, unused.
    ``written_by`` names the task that landed the folder (``dag_id``, ``task_id``, ``map_index``, ``run_id``):
    another task's folder is refused unless ``overwrite_other_results``.
    """

    batch_id: str | None
    batch_ids: list[str]
    status: str
    output_path: str | None
    error_path: str | None
    output_paths: list[str]
    error_paths: list[str]
    manifest_path: str | None
    output_file_id: str | None
    error_file_id: str | None
    output_file_ids: list[str]
    error_file_ids: list[str]
    request_counts: RequestCounts
    output_lines: int
    error_lines: int
    usage: Usage
    cost: dict[str, Any] | None
    model: str | None
    shards: list[ShardSummary]
    rounds: list[list[str]]
    input_fingerprint: str
    custom_id_prefix: str | None
    invalid_output: dict[str, Any] | None
    paid_twice: list[dict[str, Any]]
    written_by: dict[str, Any] | None


def sum_counts(batches: Iterable[Mapping[str, Any]]) -> RequestCounts:
    total: RequestCounts = {"total": 0, "completed": 0, "failed": 0}
    for batch in batches:
        counts = batch.get("request_counts") or {}
        for key in ("total", "completed", "failed"):
            total[key] += int(counts.get(key) or 0)
    return total


def sum_usage(batches: Iterable[Mapping[str, Any]]) -> Usage:
    usage: Usage = {
        "input_tokens": 0,
        "output_tokens": 0,
        "total_tokens": 0,
        "cached_tokens": 0,
        "reasoning_tokens": 0,
    }
    for batch in batches:
        u = batch.get("usage") or {}
        for key in _USAGE_KEYS:
            usage[key] += int(u.get(key) or 0)  # type: ignore[literal-required]
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


def shard_summary(batch: Mapping[str, Any]) -> ShardSummary:
    return {
        "batch_id": batch["id"],
        "status": batch["status"],
        "input_file_id": batch.get("input_file_id"),
        "output_file_id": batch.get("output_file_id"),
        "error_file_id": batch.get("error_file_id"),
        "request_counts": sum_counts([batch]),
    }


def build_result(
    rounds: Sequence[Sequence[Mapping[str, Any]]],
    *,
    output_paths: Sequence[str],
    error_paths: Sequence[str],
    manifest_path: str | None,
    output_lines: int,
    error_lines: int,
    failed_lines: int | None = None,
    fingerprint: str = "",
    custom_id_prefix: str | None = None,
    cost: dict[str, Any] | None = None,
    invalid_output: dict[str, Any] | None = None,
    paid_twice: Sequence[Mapping[str, Any]] = (),
    written_by: dict[str, Any] | None = None,
) -> BatchResult:
    """The BatchResult of every round's batches (JSON-safe, no secrets).

    :param rounds: the batches (dicts) of each round, round 0 first.
    :param failed_lines: landed error lines of requests that ran and failed; with follow-up rounds a request is
        in the counts of every round it ran in, so the counts are then taken from the landed lines instead.
    """
    batches = [b for rnd in rounds for b in rnd]
    counts = sum_counts(batches)
    if len(rounds) > 1:
        # Each request once: a resent one's earlier lines were dropped at landing.
        counts = {
            "total": sum_counts(rounds[0])["total"],
            "completed": output_lines,
            "failed": int(failed_lines or 0),
        }
    single = batches[0] if len(batches) == 1 else {}
    return {
        "batch_id": batches[0]["id"] if batches else None,
        "batch_ids": [b["id"] for b in batches],
        "status": combined_status(b["status"] for b in (rounds[-1] if rounds else [])),
        "output_path": output_paths[0] if len(output_paths) == 1 else None,
        "error_path": error_paths[0] if len(error_paths) == 1 else None,
        "output_paths": list(output_paths),
        "error_paths": list(error_paths),
        "manifest_path": manifest_path,
        "output_file_id": single.get("output_file_id"),
        "error_file_id": single.get("error_file_id"),
        "output_file_ids": [b["output_file_id"] for b in batches if b.get("output_file_id")],
        "error_file_ids": [b["error_file_id"] for b in batches if b.get("error_file_id")],
        "request_counts": counts,
        "output_lines": output_lines,
        "error_lines": error_lines,
        "usage": sum_usage(batches),
        "cost": cost,
        "model": next((b.get("model") for b in batches if b.get("model")), None),
        "shards": [shard_summary(b) for b in batches],
        "rounds": [[b["id"] for b in rnd] for rnd in rounds],
        "input_fingerprint": fingerprint,
        "custom_id_prefix": custom_id_prefix,
        "invalid_output": invalid_output,
        "paid_twice": [dict(e) for e in paid_twice],
        "written_by": written_by,
    }


def summary(result: BatchResult) -> dict[str, Any]:
    """What an asset event's ``extra`` holds: enough for a downstream DAG to find and judge the results
    (``read_results(event.extra)`` reads them)."""
    return {
        "batch_ids": result["batch_ids"],
        "status": result["status"],
        "request_counts": dict(result["request_counts"]),
        "usage": dict(result["usage"]),
        "output_path": result["output_path"],
        "error_path": result["error_path"],
        "output_paths": list(result["output_paths"]),
        "error_paths": list(result["error_paths"]),
        "manifest_path": result["manifest_path"],
        "custom_id_prefix": result["custom_id_prefix"],
        "cost": result.get("cost"),
        "invalid_output": result.get("invalid_output"),
    }
