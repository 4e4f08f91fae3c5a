"""Follow-up rounds: the original requests whose last outcome says they are worth sending again.

Pure except for the hook's ``download_file`` it is handed; the planner decides when a round is due.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from airflow_provider_openai_batch.requests_input.spool import SpoolResult, spool_requests
from airflow_provider_openai_batch.statuses import should_resubmit


def _downloaded_lines(hook: Any, file_id: str, path: Path) -> Iterator[dict[str, Any]]:
    """Download an OpenAI file to ``path`` (streamed) and yield its JSON lines one at a time."""
    hook.download_file(file_id, local_path=path)
    with open(path, "rb") as fh:
        for raw in fh:
            if raw.strip():
                yield json.loads(raw)


def collect_retryable(
    hook: Any,
    batches: Sequence[Mapping[str, Any]],
    workdir: str,
    *,
    endpoint: str,
    source_name: str,
    include_cancelled: bool = False,
) -> SpoolResult | None:
    """Spool the original requests whose last outcome was worth a resend; None when there are none.

    :param include_cancelled: also the requests a cancel stopped (a new try after a cancelled batch).
    """
    work = Path(workdir)
    with_errors = [b for b in batches if b.get("error_file_id")]
    retry_ids = {
        line["custom_id"]
        for batch in with_errors
        for line in _downloaded_lines(hook, batch["error_file_id"], work / f"{batch['id']}.errors.jsonl")
        if should_resubmit(line, include_cancelled=include_cancelled)
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
