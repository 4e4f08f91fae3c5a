"""Landing: every round's output and error files downloaded, joined and written to storage, manifest last.

A folder being rewritten must never look complete: the old manifest is removed first (a failure to remove it
fails the task), files are written under temporary names and moved into place, and each landed file's line count
is checked against what was downloaded before the manifest goes in. With follow-up rounds, a request's error line
is dropped from a round whose next round sent it again, so every ``custom_id`` lands once, with its last outcome.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from airflow_provider_openai_batch import cost, results, storage
from airflow_provider_openai_batch.exceptions import OpenAIBatchError
from airflow_provider_openai_batch.lifecycle import answers
from airflow_provider_openai_batch.statuses import is_stopped_line, should_resubmit

OUTPUT_FILE, ERROR_FILE = "output.jsonl", "errors.jsonl"


@dataclass(frozen=True)
class Landed:
    output_path: str
    error_path: str | None
    manifest_path: str
    output_lines: int
    error_lines: int
    failed_lines: int  # error lines of requests that ran and failed (not ones a stop left unrun)
    invalid_output: dict[str, Any] | None = None  # with an output schema: invalid answers among output lines


def land(
    hook: Any,
    output_path: str,
    rounds: Sequence[Sequence[Mapping[str, Any]]],
    resubmitted_cancelled: list[bool],
    workdir: str,
    *,
    output_schema: Any = None,
    invalid_round: int | None = None,
) -> Landed:
    """Download and land every round's files on ``output_path``; the caller writes the manifest with :func:`finish`.

    :param rounds: each round's batches (dicts, as re-read on the worker), round 0 first.
    :param resubmitted_cancelled: per round but the last, whether the next round also resent the requests a
        cancel stopped (so their ``batch_cancelled`` lines are superseded too).
    :param output_schema: count the output lines whose structured answer is invalid (see
        :class:`~airflow_provider_openai_batch.structured.validate.OutputSchema`).
    :param invalid_round: the follow-up round that resent invalid answers: earlier rounds' output lines of
        the requests it resent are dropped, and it supersedes no error line.
    """
    folder = storage.to_path(output_path)
    storage.remove_if_exists(folder / storage.MANIFEST)
    outputs: list[Path] = []
    errors: list[Path] = []
    expected_out = expected_err = failed = 0
    work = Path(workdir)
    tally = answers.empty_tally() if output_schema is not None else None
    needs_input = output_schema == "auto"
    resent = answers.input_ids(hook, rounds[invalid_round], work) if invalid_round else set()
    for r, batches in enumerate(rounds):
        superseded = r + 1 < len(rounds) and r + 1 != invalid_round
        for batch in batches:
            if batch.get("output_file_id"):
                path = work / f"{batch['id']}.output.jsonl"
                _, lines = hook.download_file(batch["output_file_id"], local_path=path)
                _check_complete(batch, lines)
                if invalid_round and r < invalid_round:
                    path, lines = answers.drop_lines(path, resent)
                if tally is not None:
                    inp = work / f"{batch['id']}.input.jsonl"
                    if needs_input and not inp.exists():
                        hook.download_file(batch["input_file_id"], local_path=inp)
                    answers.tally(path, output_schema, inp, tally)
                outputs.append(path)
                expected_out += lines
            if batch.get("error_file_id"):
                path = Path(workdir, f"{batch['id']}.errors.jsonl")
                _, lines = hook.download_file(batch["error_file_id"], local_path=path)
                if len(rounds) > 1:
                    cancelled = superseded and resubmitted_cancelled[r]
                    path, lines, ran = _keep_last_outcomes(path, superseded=superseded, cancelled=cancelled)
                    failed += ran
                errors.append(path)
                expected_err += lines
    output_file, error_file = folder / OUTPUT_FILE, folder / ERROR_FILE
    _written(storage.write_concatenated(outputs, output_file), expected_out, output_file)
    if expected_err:
        _written(storage.write_concatenated(errors, error_file), expected_err, error_file)
    else:
        storage.remove_if_exists(error_file)
    return Landed(
        output_path=str(output_file),
        error_path=str(error_file) if expected_err else None,
        manifest_path=str(folder / storage.MANIFEST),
        output_lines=expected_out,
        error_lines=expected_err,
        failed_lines=failed,
        invalid_output=tally,
    )


def finish(landed: Landed, manifest: Mapping[str, Any]) -> None:
    """Write the manifest, last: from now on the folder is complete."""
    storage.write_json(dict(manifest), storage.to_path(landed.manifest_path))


def _check_complete(batch: Mapping[str, Any], lines: int) -> None:
    expected = (batch.get("request_counts") or {}).get("completed")
    if batch.get("status") == "completed" and expected is not None and lines != expected:
        raise OpenAIBatchError(
            f"Batch {batch['id']}: downloaded {lines} output line(s) but OpenAI counts {expected} completed "
            "requests; the download was incomplete."
        )


def _written(written: int, expected: int, where: Any) -> None:
    if written != expected:
        raise OpenAIBatchError(
            f"Landed {written} line(s) at {where} but downloaded {expected}: the landed file is not trusted "
            "and no manifest was written."
        )


def _keep_last_outcomes(path: Path, *, superseded: bool, cancelled: bool) -> tuple[Path, int, int]:
    """One pass over an error file: drop the lines the next round sent again (when ``superseded``); return the
    file to land, its line count, and how many of its lines are requests that ran and failed."""
    kept = path.with_suffix(".kept.jsonl")
    count = ran = 0
    with open(path, "rb") as src, open(kept, "wb") as dst:
        for raw in src:
            if not raw.strip():
                continue
            line = json.loads(raw)
            if superseded and should_resubmit(line, include_cancelled=cancelled):
                continue
            dst.write(raw if raw.endswith(b"\n") else raw + b"\n")
            count += 1
            ran += not is_stopped_line(line)
    return kept, count, ran


def already_landed(output_path: str, batch_ids: list[str], fingerprint: str) -> results.BatchResult | None:
    """The manifest at ``output_path`` if it records exactly these batches for this input (the results are there)."""
    manifest = storage.to_path(output_path) / storage.MANIFEST
    try:
        data = json.loads(manifest.read_bytes()) if manifest.exists() else None
    except (OSError, ValueError):
        return None
    if (
        isinstance(data, dict)
        and data.get("batch_ids") == batch_ids
        and data.get("input_fingerprint") == fingerprint
    ):
        return cast(results.BatchResult, data)  # the manifest is the BatchResult that land_result wrote
    return None


def delete_openai_files(
    hook: Any, rounds: Sequence[Sequence[Mapping[str, Any]]], uploads: list[str], log: Any
) -> list[str]:
    """Delete on OpenAI every input, output and error file of these batches, and uploads no batch used."""
    ids = [
        b.get(k) for rnd in rounds for b in rnd for k in ("input_file_id", "output_file_id", "error_file_id")
    ]
    deleted = []
    for file_id in dict.fromkeys([*(i for i in ids if i), *uploads]):
        try:
            hook.delete_file(file_id)
            deleted.append(file_id)
        except Exception as err:  # best effort: the results have landed; a file left behind expires anyway
            log.warning("Could not delete OpenAI file %s: %s", file_id, type(err).__name__)
    log.info("Deleted %d OpenAI file(s) of this task's batches", len(deleted))
    return deleted


def land_result(
    hook: Any,
    output_path: str,
    rounds: Sequence[Sequence[Mapping[str, Any]]],
    state: Any,
    *,
    custom_id_prefix: str | None,
    log: Any,
    output_schema: Any = None,
) -> results.BatchResult:
    """Land every round, build the BatchResult with its cost estimate, and write it as the manifest, last."""
    cancelled = [state.round_includes_cancelled(r + 1) for r in range(len(rounds) - 1)]
    invalid_round = next((r for r in range(1, len(rounds)) if state.round_resends_invalid(r)), None)
    with tempfile.TemporaryDirectory(prefix="openai-batch-land-") as workdir:
        landed = land(
            hook,
            output_path,
            rounds,
            cancelled,
            workdir,
            output_schema=output_schema,
            invalid_round=invalid_round,
        )
    result = results.build_result(
        rounds,
        output_path=landed.output_path,
        error_path=landed.error_path,
        manifest_path=landed.manifest_path,
        output_lines=landed.output_lines,
        error_lines=landed.error_lines,
        failed_lines=landed.failed_lines,
        fingerprint=state.record.fingerprint,
        custom_id_prefix=custom_id_prefix,
        invalid_output=landed.invalid_output,
    )
    estimate = cost.cost_of_usage(result["model"] or state.model, result["usage"])
    result["cost"] = estimate
    finish(landed, result)
    log.info(
        "Landed %d output line(s) at %s and %d error line(s)%s%s. Cost: %s",
        landed.output_lines,
        landed.output_path,
        landed.error_lines,
        f" at {landed.error_path}" if landed.error_path else "",
        f"; {landed.invalid_output['total']} invalid answer(s) {landed.invalid_output['reasons']}"
        if landed.invalid_output
        else "",
        cost.describe(estimate),
    )
    return result
