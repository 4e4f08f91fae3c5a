"""Landing: every round's output and error files downloaded, joined and written to storage, manifest last.

A folder being rewritten must never look complete: the old manifest is removed first (a failure to remove it
fails the task), files are written under temporary names and moved into place, and each landed file's line count
is checked against what was downloaded before the manifest goes in. With follow-up rounds, a request's error line
is dropped from a round whose next round sent it again, so every ``custom_id`` lands once, with its last outcome.
"""

from __future__ import annotations

import json
import logging
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from airflow_provider_openai_batch import results, storage
from airflow_provider_openai_batch.cost.estimate import describe
from airflow_provider_openai_batch.cost.prices import cost_of_usage, price_age
from airflow_provider_openai_batch.exceptions import OpenAIBatchError, OpenAIBatchFilesDeleted
from airflow_provider_openai_batch.files import ERRORS, MANIFEST, OUTPUT
from airflow_provider_openai_batch.lifecycle import answers
from airflow_provider_openai_batch.lifecycle.tags import TAG_RUN
from airflow_provider_openai_batch.statuses import is_stopped_line, should_resubmit

log = logging.getLogger(__name__)


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
    storage.remove_if_exists(folder / MANIFEST)
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
                lines = _download(hook, batch, "output_file_id", path, output_path)
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
                lines = _download(hook, batch, "error_file_id", path, output_path)
                if len(rounds) > 1:
                    cancelled = superseded and resubmitted_cancelled[r]
                    path, lines, ran = _keep_last_outcomes(path, superseded=superseded, cancelled=cancelled)
                    failed += ran
                errors.append(path)
                expected_err += lines
    output_file, error_file = folder / OUTPUT, folder / ERRORS
    _written(storage.write_concatenated(outputs, output_file), expected_out, output_file)
    if expected_err:
        _written(storage.write_concatenated(errors, error_file), expected_err, error_file)
    else:
        storage.remove_if_exists(error_file)
    return Landed(
        output_path=str(output_file),
        error_path=str(error_file) if expected_err else None,
        manifest_path=str(folder / MANIFEST),
        output_lines=expected_out,
        error_lines=expected_err,
        failed_lines=failed,
        invalid_output=tally,
    )


def _download(hook: Any, batch: Mapping[str, Any], key: str, path: Path, output_path: str) -> int:
    """Download one of a batch's files; a file deleted on OpenAI fails at once, saying who deleted it."""
    try:
        _, lines = hook.download_file(batch[key], local_path=path)
    except Exception as err:
        if getattr(err, "status_code", None) != 404:
            raise
        run = (batch.get("metadata") or {}).get(TAG_RUN)
        raise OpenAIBatchFilesDeleted(
            f"Batch {batch['id']} finished, but its {key.removesuffix('_id').replace('_', ' ')} {batch[key]} "
            f"is gone on OpenAI: DAG run {run!r} landed the results and then deleted the files (delete_files=True)"
            f", so they cannot be landed at {output_path} again. Read them where run {run!r} landed them, or "
            "set fresh_run=True to submit the requests anew (paid again)."
        ) from None
    return int(lines)


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
    manifest = storage.to_path(output_path) / MANIFEST
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
    hook: Any, rounds: Sequence[Sequence[Mapping[str, Any]]], uploads: list[str]
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
    resubmitted_cancelled: list[bool],
    *,
    fingerprint: str,
    model: str | None,
    custom_id_prefix: str | None,
    paid_twice: Sequence[Mapping[str, Any]] = (),
    output_schema: Any = None,
    invalid_round: int | None = None,
    written_by: dict[str, Any] | None = None,
) -> results.BatchResult:
    """Land every round, build the BatchResult with its cost estimate, and write it as the manifest, last.

    :param resubmitted_cancelled, output_schema, invalid_round: as :func:`land` takes them.
    :param model: the model the input names, for the cost when the batches do not say.
    :param paid_twice: the twins that already ran, as the record lists them.
    :param written_by: the task landing the folder (:func:`..storage.results_writer`), named in the manifest.
    """
    with tempfile.TemporaryDirectory(prefix="openai-batch-land-") as workdir:
        landed = land(
            hook,
            output_path,
            rounds,
            resubmitted_cancelled,
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
        fingerprint=fingerprint,
        custom_id_prefix=custom_id_prefix,
        invalid_output=landed.invalid_output,
        paid_twice=paid_twice,
        written_by=written_by,
    )
    estimate = cost_of_usage(result["model"] or model, result["usage"])
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
        describe(estimate),
    )
    if (stale := price_age(estimate)) is not None:  # once per task: the budget line does not repeat it
        log.warning(stale)
    return result
