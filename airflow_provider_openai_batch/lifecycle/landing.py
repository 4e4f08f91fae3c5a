"""Landing: every round's output and error files downloaded, joined and written to storage, manifest last.

A folder being rewritten must never look complete: the old manifest is removed first (a failure to remove it
fails the task), files are written under temporary names and moved into place (on S3, completed only once all
are whole), and each landed file's line count is checked against what was downloaded before the manifest goes
in. On object storage several OpenAI files land as one object each (:mod:`..files`), since joining objects means
copying them; files of an earlier landing that this one did not write are removed before the manifest. With
follow-up rounds, a request's error line is dropped from a round whose next round sent it again, so every
``custom_id`` lands once, with its last outcome.
"""

from __future__ import annotations

import json
import logging
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, cast

import openai
import orjson

from airflow_provider_openai_batch import results, storage, transfer
from airflow_provider_openai_batch.cost.estimate import describe
from airflow_provider_openai_batch.cost.prices import cost_of_usage, price_age
from airflow_provider_openai_batch.exceptions import OpenAIBatchError, OpenAIBatchFilesDeleted
from airflow_provider_openai_batch.files import (
    ERRORS,
    LANDED_NAME,
    MANIFEST,
    OUTPUT,
    describe_files,
    numbered,
)
from airflow_provider_openai_batch.lifecycle import answers
from airflow_provider_openai_batch.lifecycle.tags import TAG_RUN
from airflow_provider_openai_batch.statuses import is_stopped_line, should_resubmit
from airflow_provider_openai_batch.transfer import TransferSettings

log = logging.getLogger(__name__)
#: Failures of the download side of landing, raised as they are (the rest names the storage URL).
_NOT_STORAGE = (OpenAIBatchError, openai.OpenAIError)


@dataclass(frozen=True)
class Landed:
    output_paths: list[str]
    error_paths: list[str]  # the error files with lines
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
    settings: TransferSettings | None = None,
) -> Landed:
    """Stream every round's files onto ``output_path``; the caller writes the manifest with :func:`finish`.

    :param rounds: each round's batches (dicts, as re-read on the worker), round 0 first.
    :param resubmitted_cancelled: per round but the last, whether the next round also resent the requests a
        cancel stopped (so their ``batch_cancelled`` lines are superseded too).
    :param workdir: local scratch for the batches' input files, read only with an output schema or an
        invalid-answers round (landed files never pass through it).
    :param output_schema: count the output lines whose structured answer is invalid (see
        :class:`~airflow_provider_openai_batch.structured.validate.OutputSchema`).
    :param invalid_round: the follow-up round that resent invalid answers: earlier rounds' output lines of
        the requests it resent are dropped, and it supersedes no error line.
    :param settings: part size and concurrency (default: the ``[openai_batch]`` options).
    """
    settings = settings or TransferSettings.from_config()
    folder = storage.to_path(output_path)
    storage.remove_if_exists(folder / MANIFEST)
    work = Path(workdir)
    resent = answers.input_ids(hook, rounds[invalid_round], work) if invalid_round else set()
    outputs: list[transfer.Source] = []
    output_batches: list[Mapping[str, Any]] = []
    errors: list[_ErrorSource] = []
    for r, batches in enumerate(rounds):
        superseded = r + 1 < len(rounds) and r + 1 != invalid_round
        for batch in batches:
            if batch.get("output_file_id"):
                drop = resent if invalid_round and r < invalid_round else None
                outputs.append(_OutputSource(hook, batch, output_path, drop))
                output_batches.append(batch)
            if batch.get("error_file_id"):
                cancelled = superseded and len(rounds) > 1 and resubmitted_cancelled[r]
                errors.append(
                    _ErrorSource(
                        hook,
                        batch,
                        output_path,
                        superseded=superseded,
                        cancelled=cancelled,
                        filtered=len(rounds) > 1,
                    )
                )
    output_files = _destinations(folder, OUTPUT, len(outputs))
    output_counts = _write(outputs, output_files, folder, settings)
    tally = None
    if output_schema is not None:  # one read of each landed output, joined to its inputs if the schema needs
        tally = answers.empty_tally()
        for landed_file, its in zip(output_files, _batches_of(output_files, output_batches), strict=True):
            inputs = [_input_file(hook, b, work) for b in its] if output_schema == "auto" else []
            answers.tally(landed_file, output_schema, inputs, tally)
    error_files = _destinations(folder, ERRORS, len(errors)) if errors else []
    error_counts = _write(errors, error_files, folder, settings) if errors else []
    kept_errors = [path for path, lines in zip(error_files, error_counts, strict=True) if lines]
    _remove_stale(folder, keep={path.name for path in [*output_files, *kept_errors]})
    return Landed(
        output_paths=[str(path) for path in output_files],
        error_paths=[str(path) for path in kept_errors],
        manifest_path=str(folder / MANIFEST),
        output_lines=sum(output_counts),
        error_lines=sum(error_counts),
        failed_lines=sum(e.ran for e in errors) if len(rounds) > 1 else 0,
        invalid_output=tally,
    )


def _destinations(folder: Any, name: str, sources: int) -> list[Any]:
    """Where ``sources`` files land: joined into ``name``, or on object storage with several, one object each
    (:func:`..files.numbered`)."""
    if sources <= 1 or folder.protocol == "file":
        return [folder / name]
    return [folder / numbered(name, i) for i in range(sources)]


def _write(
    sources: Sequence[transfer.Source], destinations: list[Any], folder: Any, settings: TransferSettings
) -> list[int]:
    """The lines landed at each of ``destinations``: the sources joined into one local file, or one each (no
    source: an empty file, so readers find one)."""
    where = destinations[0] if len(destinations) == 1 else folder
    with storage.about("write", where, keep=_NOT_STORAGE):
        if folder.protocol == "file":
            return [sum(transfer.write_joined(sources, destinations[0], settings))]
        if not sources:
            destinations[0].write_bytes(b"")
            return [0]
        return transfer.write_each(sources, destinations, settings)


def _batches_of(files: list[Any], batches: list[Mapping[str, Any]]) -> list[list[Mapping[str, Any]]]:
    """The batches whose answers each landed output file holds: all of them when joined, else one each."""
    return [batches] if len(files) == 1 else [[batch] for batch in batches]


def _remove_stale(folder: Any, keep: set[str]) -> None:
    """Remove the output and error files an earlier landing left that this one did not write (a landing with
    another number of files, or with error lines where this one has none)."""
    folder.fs.invalidate_cache(folder.path)  # the files were written past fsspec: list them afresh
    try:
        names = [path.name for path in folder.iterdir()] if folder.exists() else []
    except FileNotFoundError:
        names = []
    for name in names:
        if LANDED_NAME.fullmatch(name) and name not in keep:
            storage.remove_if_exists(folder / name)


class _OutputSource:
    """One batch's output file as a :data:`~..transfer.Source`: checked against the batch's count of completed
    requests before its copy completes; with ``drop``, those custom_ids' lines are left out (resent later)."""

    def __init__(self, hook: Any, batch: Mapping[str, Any], output_path: str, drop: set[str] | None) -> None:
        self.hook, self.batch, self.output_path, self.drop = hook, batch, output_path, drop

    def keep(self, raw: bytes) -> bool:
        return orjson.loads(raw).get("custom_id") not in self.drop  # type: ignore[operator]

    def __call__(self, sink: Callable[[BinaryIO], None]) -> int:
        keep = self.keep if self.drop else None
        return _stream(self.hook, self.batch, "output_file_id", sink, self.output_path, keep, _check_complete)


class _ErrorSource:
    """One batch's error file as a :data:`~..transfer.Source`. With follow-up rounds: drops the lines the next
    round sent again (when ``superseded``) and counts in ``ran`` the kept lines of requests that ran and
    failed."""

    def __init__(
        self,
        hook: Any,
        batch: Mapping[str, Any],
        output_path: str,
        *,
        superseded: bool,
        cancelled: bool,
        filtered: bool,
    ) -> None:
        self.hook, self.batch, self.output_path = hook, batch, output_path
        self.superseded, self.cancelled, self.filtered = superseded, cancelled, filtered
        self.ran = 0

    def keep(self, raw: bytes) -> bool:
        line = json.loads(raw)
        if self.superseded and should_resubmit(line, include_cancelled=self.cancelled):
            return False
        self.ran += not is_stopped_line(line)
        return True

    def __call__(self, sink: Callable[[BinaryIO], None]) -> int:
        def fresh(stream: BinaryIO) -> None:  # each attempt counts anew
            self.ran = 0
            sink(stream)

        keep = self.keep if self.filtered else None
        return _stream(self.hook, self.batch, "error_file_id", fresh, self.output_path, keep, None)


def _input_file(hook: Any, batch: Mapping[str, Any], work: Path) -> Path:
    path = work / f"{batch['id']}.input.jsonl"
    if not path.exists():
        hook.download_file(batch["input_file_id"], local_path=path)
    return path


def _stream(
    hook: Any,
    batch: Mapping[str, Any],
    key: str,
    sink: Callable[[BinaryIO], None],
    output_path: str,
    keep: Callable[[bytes], bool] | None,
    check: Callable[[Mapping[str, Any], Any], None] | None,
) -> int:
    """Stream one of a batch's files into ``sink``; a file deleted on OpenAI fails at once, saying who did."""
    try:
        _, stream = hook.stream_file(
            batch[key],
            sink,
            keep=keep,
            check=(lambda s: check(batch, s)) if check else None,
            where=output_path,
        )
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
    return int(stream.lines)


def finish(landed: Landed, manifest: Mapping[str, Any]) -> None:
    """Write the manifest, last: from now on the folder is complete."""
    storage.write_json(dict(manifest), storage.to_path(landed.manifest_path))


def _check_complete(batch: Mapping[str, Any], stream: Any) -> None:
    """A completed batch's output file holds one line per completed request, else the download was cut short."""
    expected = (batch.get("request_counts") or {}).get("completed")
    if batch.get("status") == "completed" and expected is not None and stream.seen != expected:
        raise OpenAIBatchError(
            f"Batch {batch['id']}: downloaded {stream.seen} output line(s) but OpenAI counts {expected} "
            "completed requests; the download was incomplete and nothing was landed."
        )


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
        output_paths=landed.output_paths,
        error_paths=landed.error_paths,
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
        describe_files(landed.output_paths),
        landed.error_lines,
        f" at {describe_files(landed.error_paths)}" if landed.error_paths else "",
        f"; {landed.invalid_output['total']} invalid answer(s) {landed.invalid_output['reasons']}"
        if landed.invalid_output
        else "",
        describe(estimate),
    )
    if (stale := price_age(estimate)) is not None:  # once per task: the budget line does not repeat it
        log.warning(stale)
    return result
