"""Follow-up rounds for requests that failed through no fault of their own (429, 5xx, expiry).

Pure except for the two hook calls it is handed; the operator decides when to use it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
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


def collect_retryable(
    hook: Any, batches: list[Mapping[str, Any]], workdir: str, *, endpoint: str, source_name: str
) -> SpoolResult | None:
    """Spool the original requests whose last outcome was a retryable failure; None when there are none."""
    work = Path(workdir)
    retry_ids: set[str] = set()
    for batch in batches:
        if not batch.get("error_file_id"):
            continue
        errors = work / f"{batch['id']}.errors.jsonl"
        hook.download_file(batch["error_file_id"], errors)
        with open(errors, "rb") as fh:
            for raw in fh:
                if raw.strip():
                    line = json.loads(raw)
                    if is_retryable(line):
                        retry_ids.add(line["custom_id"])
    if not retry_ids:
        return None

    def retry_requests():
        for batch in batches:
            if not batch.get("error_file_id"):
                continue
            inputs = work / f"{batch['id']}.input.jsonl"
            hook.download_file(batch["input_file_id"], inputs)
            with open(inputs, "rb") as fh:
                for raw in fh:
                    if raw.strip():
                        request = json.loads(raw)
                        if request.get("custom_id") in retry_ids:
                            yield request

    return spool_requests(
        retry_requests(),
        endpoint=endpoint,
        workdir=work / "spool",
        source_name=f"{source_name} (resubmission)",
    )
