"""The paying side of a try: read and validate the input once, bound its cost, upload shards once, create
batches through the ledger, and build follow-up rounds. Each function is one step the planner can ask for.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from airflow_provider_openai_batch import cost, resubmit, storage
from airflow_provider_openai_batch.batch_input import (
    InvalidRequestsError,
    Limits,
    Shard,
    SpoolResult,
    spool_requests,
)
from airflow_provider_openai_batch.exceptions import OpenAIBatchInputError
from airflow_provider_openai_batch.lifecycle import answers
from airflow_provider_openai_batch.lifecycle.ledger import (
    Ledger,
    SubmissionRecord,
    check_user_metadata,
    label,
)
from airflow_provider_openai_batch.lifecycle.state import RunState

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Job:
    """What the operator's arguments say about the batches to create (rendered, one try)."""

    task_id: str
    endpoint: str
    completion_window: str = "24h"
    metadata: dict[str, Any] | None = None
    output_expires_after: dict[str, Any] | None = None
    input_path: str | None = None
    requests: Iterable[dict[str, Any]] | Callable[[], Iterable[dict[str, Any]]] | None = None
    custom_id_prefix: str | None = None
    limits: Limits = Limits()

    @property
    def source_name(self) -> str:
        return str(self.input_path) if self.input_path is not None else f"<requests of task {self.task_id}>"


def read_input(job: Job, workdir: str) -> SpoolResult:
    """Validate every request and spool them to shard files under ``workdir``; the input is read once."""
    try:
        if job.input_path is not None:
            with storage.open_input(job.input_path) as source:
                spool = spool_requests(
                    source,
                    endpoint=job.endpoint,
                    workdir=workdir,
                    source_name=job.source_name,
                    limits=job.limits,
                )
        else:
            requests = job.requests() if callable(job.requests) else job.requests
            spool = spool_requests(
                requests,  # type: ignore[arg-type]
                endpoint=job.endpoint,
                workdir=workdir,
                source_name=job.source_name,
                limits=job.limits,
                custom_id_prefix=job.custom_id_prefix,
            )
    except InvalidRequestsError as err:
        raise OpenAIBatchInputError(err.source, err.problems, err.total) from None
    log.info(
        "Validated %d requests from %s into %d shard(s); input fingerprint %s",
        spool.total_requests,
        job.source_name,
        len(spool.shards),
        spool.fingerprint[:16],
    )
    return spool


def check_budget(job: Job, shards: list[Shard], model: str | None, max_cost_usd: float | None) -> None:
    """``max_cost_usd``: bound what this try would create, before anything is uploaded."""
    if max_cost_usd is None or not shards:
        return
    estimate = cost.estimate_upper_bound(shards, endpoint=job.endpoint, model=model)
    log.info("Cost of the %d batch(es) to create: %s", len(shards), cost.describe(estimate))
    cost.check_budget(estimate, max_cost_usd)


def upload_shards(
    job: Job, ledger: Ledger, record: SubmissionRecord, shards: list[Shard], total: int
) -> None:
    """Upload each shard once; waves and later tries create from the recorded file ids."""
    for shard in shards:
        name = f"{job.task_id}-{shard.index:05d}.jsonl"
        ledger.upload(record, label(0, shard.index, total), shard.path, name)


def create(job: Job, ledger: Ledger, record: SubmissionRecord, labels: list[str]) -> None:
    """Create (pay for) the batches of these labels, each exactly once."""
    user_metadata = check_user_metadata(job.metadata)
    for lbl in labels:
        batch = ledger.create(
            record,
            lbl,
            user_metadata=user_metadata,
            endpoint=job.endpoint,
            completion_window=job.completion_window,
            output_expires_after=job.output_expires_after,
        )
        log.debug("Batch %s (%s) is %s", batch["id"], lbl, batch["status"])


def resubmit_round(job: Job, ledger: Ledger, state: RunState, include_cancelled: bool) -> bool:
    """Build the next follow-up round (or finish one a crash left half made); False if nothing is worth it."""
    broken = state.record.incomplete_round()
    round_no = broken.round if broken is not None else len(state.rounds)
    sources = [ledger.seen.get(b) or ledger.read(b) for b in state.rounds[round_no - 1]]
    with tempfile.TemporaryDirectory(prefix="openai-batch-retry-") as workdir:
        spool = resubmit.collect_retryable(
            ledger.hook,
            sources,
            workdir,
            endpoint=job.endpoint,
            source_name=job.source_name,
            include_cancelled=include_cancelled,
        )
        if spool is None:
            return False
        _follow_up(job, ledger, state, spool, round_no, include_cancelled=include_cancelled)
    return True


def resend_invalid_round(job: Job, ledger: Ledger, state: RunState, output_schema: Any) -> bool:
    """Build the follow-up round of the requests whose structured answers are invalid (or finish one a crash
    left half made); False when every answer is valid."""
    broken = state.record.incomplete_round()
    round_no = broken.round if broken is not None else len(state.rounds)
    rounds = [[ledger.seen.get(b) or ledger.read(b) for b in rnd] for rnd in state.rounds[:round_no]]
    with tempfile.TemporaryDirectory(prefix="openai-batch-invalid-") as workdir:
        spool = answers.collect_invalid(
            ledger.hook, rounds, workdir, output_schema, endpoint=job.endpoint, source_name=job.source_name
        )
        if spool is None:
            return False
        _follow_up(job, ledger, state, spool, round_no, invalid_output=True)
    return True


def _follow_up(job: Job, ledger: Ledger, state: RunState, spool: Any, round_no: int, **kind: bool) -> None:
    log.info("Resubmitting %d request(s) as round %d", spool.total_requests, round_no)
    labels = []
    for shard in spool.shards:
        lbl = label(round_no, shard.index, len(spool.shards), **kind)
        ledger.upload(state.record, lbl, shard.path, f"{job.task_id}-r{round_no}-{shard.index:05d}.jsonl")
        labels.append(lbl)
    create(job, ledger, state.record, labels)


def check_arguments(
    input_path: Any, requests: Any, on_timeout: str, on_input_change: str, ratio: float, in_flight: int | None
) -> None:
    if (input_path is None) == (requests is None):
        given = "both" if input_path is not None else "neither"
        raise ValueError(f"Expected exactly one of `input_path` or `requests` but received {given}")
    if on_timeout not in ("cancel", "keep"):
        raise ValueError(f"Expected `on_timeout` to be 'cancel' or 'keep' but received {on_timeout!r}")
    if on_input_change not in ("resubmit", "fail"):
        raise ValueError(
            f"Expected `on_input_change` to be 'resubmit' or 'fail' but received {on_input_change!r}"
        )
    if not 0.0 <= ratio <= 1.0:
        raise ValueError(f"Expected `max_failed_ratio` between 0 and 1 but received {ratio!r}")
    if in_flight is not None and in_flight < 1:
        raise ValueError(f"Expected `max_shards_in_flight` >= 1 or None but received {in_flight!r}")
