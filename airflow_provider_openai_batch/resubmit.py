"""Follow-up rounds for requests that failed through no fault of their own (429, 5xx, expiry).

Pure except for the two hook calls it is handed; the operator decides when to use it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from airflow_provider_openai_batch.batch_input import SpoolResult, spool_requests
from airflow_provider_openai_batch.results import RETRYABLE_ERROR_CODES

RETRYABLE_HTTP_STATUSES = frozenset({408, 409, 429})


def is_retryable(line: Mapping[str, Any]) -> bool:
    """Whether an error-file line is worth sending again: rate limits, server errors, expiry."""
    error = line.get("error") or {}
    if error.get("code") in RETRYABLE_ERROR_CODES - {"batch_cancelled"}:
        return True
    status = (line.get("response") or {}).get("status_code")
    return isinstance(status, int) and (status in RETRYABLE_HTTP_STATUSES or status >= 500)


def _downloaded_lines(hook: Any, file_id: str, path: Path) -> Iterator[dict[str, Any]]:
    """Download an OpenAI file to ``path`` (streamed) and yield its JSON lines one at a time."""
    hook.download_file(file_id, path)
    with open(path, "rb") as fh:
        for raw in fh:
            if raw.strip():
                yield json.loads(raw)


def collect_retryable(
    hook: Any, batches: list[Mapping[str, Any]], workdir: str, *, endpoint: str, source_name: str
) -> SpoolResult | None:
    """Spool the original requests whose last outcome was a retryable failure; None when there are none."""
    work = Path(workdir)
    with_errors = [b for b in batches if b.get("error_file_id")]
    retry_ids = {
        line["custom_id"]
        for batch in with_errors
        for line in _downloaded_lines(hook, batch["error_file_id"], work / f"{batch['id']}.errors.jsonl")
        if is_retryable(line)
    }
    if not retry_ids:
        return None
    retry_requests = (
        request
        for batch in with_errors
        for request in _downloaded_lines(hook, batch["input_file_id"], work / f"{batch['id']}.input.jsonl")
        if request.get("custom_id") in retry_ids
    )
    return spool_requests(
        retry_requests, endpoint=endpoint, workdir=work / "spool", source_name=f"{source_name} (resubmission)"
    )
