"""Structured answers at landing: count the invalid ones (``output_schema=``) and resend them once
(``resubmit_invalid=True``).

Each downloaded output file is read once by the result reader with the task's schema (streamed, memory flat;
with ``"auto"`` joined to the batch's own input file), and the reasons are tallied. A follow-up round for the
invalid answers takes their original requests from the batches' input files, as the round for failed
requests does (:mod:`.resubmit`); at landing the earlier rounds' lines of the requests it resent are dropped,
so every ``custom_id`` lands once, with its last answer.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import orjson

from airflow_provider_openai_batch.batch_input import SpoolResult, spool_requests
from airflow_provider_openai_batch.reader import INVALID_OUTPUT, read_results
from airflow_provider_openai_batch.structured.validate import REASONS, OutputSchema


def empty_tally() -> dict[str, Any]:
    """The BatchResult's ``invalid_output``: ``{"total", "reasons": {reason: count}}``."""
    return {"total": 0, "reasons": dict.fromkeys(REASONS, 0)}


def _requests(paths: Sequence[Path]) -> Iterator[bytes]:
    """The requests of these input files, each custom_id once (a follow-up round resends its round's requests)."""
    seen: set[str] = set()
    for path in paths:
        with open(path, "rb") as fh:
            for raw in fh:
                if raw.strip() and (cid := orjson.loads(raw)["custom_id"]) not in seen:
                    seen.add(cid)
                    yield raw


def _invalid(location: Any, spec: Any, inputs: Sequence[Path]) -> Iterator[dict[str, Any]]:
    requests = _requests(inputs) if OutputSchema(spec).needs_requests else None
    with read_results(location, requests, include="output", schema=spec) as records:
        for record in records:
            if record["status"] == INVALID_OUTPUT:
                yield record


def tally(location: Any, spec: Any, inputs: Sequence[Path], into: dict[str, Any]) -> set[str]:
    """Add the invalid answers of output file ``location`` (a local path or a landed object) to ``into``;
    return their custom_ids.

    :param inputs: the input files of the batches whose answers it holds, downloaded (read with ``"auto"``
        only, joined by custom_id).
    """
    reasons: Counter[str] = Counter()
    ids: set[str] = set()
    for record in _invalid(location, spec, inputs):
        reasons[record["error"]["reason"]] += 1
        ids.add(record["custom_id"])
    into["total"] += sum(reasons.values())
    for reason, count in reasons.items():
        into["reasons"][reason] += count
    return ids


def drop_lines(path: Path, custom_ids: set[str]) -> tuple[Path, int]:
    """A copy of output file ``path`` without the lines of ``custom_ids`` (resent later); and its line count."""
    kept, count = path.with_suffix(".kept.jsonl"), 0
    with open(path, "rb") as src, open(kept, "wb") as dst:
        for raw in src:
            if raw.strip() and orjson.loads(raw).get("custom_id") not in custom_ids:
                dst.write(raw if raw.endswith(b"\n") else raw + b"\n")
                count += 1
    return kept, count


def input_ids(hook: Any, batches: Sequence[Mapping[str, Any]], workdir: Path) -> set[str]:
    """The custom_ids a round sent (read from its batches' input files)."""
    ids: set[str] = set()
    for batch in batches:
        path = workdir / f"{batch['id']}.input.jsonl"
        hook.download_file(batch["input_file_id"], local_path=path)
        with open(path, "rb") as fh:
            ids.update(orjson.loads(raw)["custom_id"] for raw in fh if raw.strip())
    return ids


def collect_invalid(
    hook: Any,
    rounds: Sequence[Sequence[Mapping[str, Any]]],
    workdir: str,
    spec: Any,
    *,
    endpoint: str,
    source_name: str,
) -> SpoolResult | None:
    """Spool the original requests of every invalid answer landed so far; None when there is none."""
    work = Path(workdir)
    invalid: dict[str, set[str]] = {}  # batch id -> its invalid custom_ids
    seen = empty_tally()
    for batches in rounds:
        for batch in batches:
            if not batch.get("output_file_id"):
                continue
            out, inp = work / f"{batch['id']}.output.jsonl", work / f"{batch['id']}.input.jsonl"
            hook.download_file(batch["output_file_id"], local_path=out)
            if OutputSchema(spec).needs_requests:
                hook.download_file(batch["input_file_id"], local_path=inp)
            if ids := tally(out, spec, [inp], seen):
                invalid[batch["id"]] = ids
    if not invalid:
        return None

    def requests() -> Iterator[dict[str, Any]]:
        for batches in rounds:
            for batch in batches:
                if batch["id"] not in invalid:
                    continue
                path = work / f"{batch['id']}.input.jsonl"
                if not path.exists():
                    hook.download_file(batch["input_file_id"], local_path=path)
                with open(path, "rb") as fh:
                    for raw in fh:
                        if (
                            raw.strip()
                            and (request := orjson.loads(raw))["custom_id"] in invalid[batch["id"]]
                        ):
                            yield request

    return spool_requests(
        requests(), endpoint=endpoint, workdir=work / "spool", source_name=f"{source_name} (invalid answers)"
    )
