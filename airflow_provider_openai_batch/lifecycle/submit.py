"""The paying side of a try: read and validate the input once, bound its cost, upload shards once, create
batches through the ledger, and build follow-up rounds. Each function is one step the planner can ask for.
"""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from airflow_provider_openai_batch import storage
from airflow_provider_openai_batch.cost.estimate import check_budget as refuse_over_budget
from airflow_provider_openai_batch.cost.estimate import describe, estimate_upper_bound
from airflow_provider_openai_batch.exceptions import OpenAIBatchInputError
from airflow_provider_openai_batch.lifecycle import answers, resubmit
from airflow_provider_openai_batch.lifecycle.ledger import Ledger, Upload
from airflow_provider_openai_batch.lifecycle.queue import CONFIG_OPTION, RoomRequest, configured_limits
from airflow_provider_openai_batch.lifecycle.record import SubmissionRecord
from airflow_provider_openai_batch.lifecycle.state import RunState
from airflow_provider_openai_batch.lifecycle.tags import check_user_metadata, label, parse_label
from airflow_provider_openai_batch.requests_input.problems import InvalidRequestsError
from airflow_provider_openai_batch.requests_input.shards import Limits, Shard
from airflow_provider_openai_batch.requests_input.spool import SpoolResult, spool_requests

log = logging.getLogger(__name__)

UPLOAD_CONCURRENCY_OPTION = "upload_concurrency"
#: Shard files uploaded at once: each streams from its file, so memory does not grow with it.
DEFAULT_UPLOAD_CONCURRENCY = 4


@dataclass(frozen=True)
class Job:
    """What the operator's arguments say about the batches to create; exactly one of ``input_path`` and
    ``requests`` is given."""

    task_id: str
    endpoint: str
    completion_window: str = "24h"
    metadata: dict[str, Any] | None = None
    output_expires_after: dict[str, Any] | None = None
    input_path: str | None = None
    requests: Iterable[dict[str, Any]] | Callable[[], Iterable[dict[str, Any]]] | None = None
    custom_id_prefix: str | None = None
    limits: Limits = Limits()

    def __post_init__(self) -> None:
        if (self.input_path is None) == (self.requests is None):
            given = "both" if self.input_path is not None else "neither"
            raise ValueError(f"Expected exactly one of `input_path` or `requests` but received {given}")

    @property
    def source_name(self) -> str:
        return str(self.input_path) if self.input_path is not None else f"<requests of task {self.task_id}>"


def read_input(job: Job, workdir: str, token_limits: dict[str, int] | None = None) -> SpoolResult:
    """Validate every request and spool them to shard files under ``workdir``; the input is read once.

    :param token_limits: enqueued-token limits by model: shards are cut so that each fits its model's.
    """
    try:
        if job.input_path is not None:
            with storage.open_input(job.input_path) as source:
                spool = spool_requests(
                    source,
                    endpoint=job.endpoint,
                    workdir=workdir,
                    source_name=job.source_name,
                    limits=job.limits,
                    token_limits=token_limits,
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
                token_limits=token_limits,
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
    estimate = estimate_upper_bound(shards, endpoint=job.endpoint, model=model)
    log.info("Cost of the %d batch(es) to create: %s", len(shards), describe(estimate))
    refuse_over_budget(estimate, max_cost_usd)


def upload_shards(
    job: Job, ledger: Ledger, record: SubmissionRecord, shards: list[Shard], total: int, concurrency: int = 1
) -> None:
    """Upload each shard once, ``concurrency`` at a time; waves and later tries create from the recorded ids."""
    uploads = [Upload(label(0, s.index, total), s.path, f"{job.task_id}-{s.index:05d}.jsonl") for s in shards]
    ledger.upload(record, uploads, concurrency)


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


def configured_token_limits() -> dict[str, int]:
    """``[openai_batch] enqueued_token_limits``: the organisation's batch queue per model, when configured."""
    from airflow_provider_openai_batch.version_compat import conf

    return configured_limits(conf.get("openai_batch", CONFIG_OPTION, fallback=None))


def configured_upload_concurrency() -> int:
    """``[openai_batch] upload_concurrency``: how many shard files are uploaded at once."""
    from airflow_provider_openai_batch.version_compat import conf

    value = int(conf.getint("openai_batch", UPLOAD_CONCURRENCY_OPTION, fallback=DEFAULT_UPLOAD_CONCURRENCY))
    if value < 1:
        raise ValueError(
            f"Expected a positive integer for [openai_batch] {UPLOAD_CONCURRENCY_OPTION} but received {value}"
        )
    return value


def note_sizes(state: RunState, spool: SpoolResult) -> None:
    """What the spool learned about the queue: the limit it cut under and each shard's prompt tokens."""
    if spool.token_limit is not None and (state.queue.limit is None or not state.queue.learned):
        state.queue.limit = spool.token_limit
    total = len(spool.shards)
    state.queue.tokens = {
        label(0, s.index, total): s.prompt_tokens for s in spool.shards if s.prompt_tokens is not None
    }
    # Cut again the same way, the shards that waited still wait; cut otherwise, every shard is new.
    state.queue.admitted([lbl for lbl in state.queue.waiting if lbl not in state.record.files])


def create_wave(job: Job, ledger: Ledger, state: RunState, action: Any) -> None:
    """Create a wave of round-0 shards; those held back (no room for them) start waiting without a create."""
    n, queue = state.record.shard_count, state.queue
    if action.hold:
        queue.wait([label(0, i, n) for i in action.hold], time.time())
    create(job, ledger, state.record, [label(0, i, n) for i in action.shards])


def readmit(job: Job, ledger: Ledger, state: RunState, labels: list[str]) -> None:
    """Create waiting shards again from their recorded uploads, now that the queue let them in."""
    state.queue.last_create = time.time()
    state.queue.admitted(labels)
    create(job, ledger, state.record, labels)


def requeue(ledger: Ledger, state: RunState, action: Any) -> None:
    """Batches a full queue refused are free: forget them (their uploads stay recorded) and let them wait."""
    queue = state.queue
    for lbl in action.labels:
        log.info(
            "Batch %s (shard %s) found the %s batch queue full: not billed, not counted; the shard waits for "
            "room and is created again from its upload %s",
            state.record.batches[lbl],
            lbl,
            state.model,
            state.record.files.get(lbl),
        )
        del state.record.batches[lbl]
    queue.free_failures += len(action.labels)
    if action.limit is not None and (queue.limit is None or queue.learned):
        queue.limit, queue.learned = action.limit, True
        state.record.queue_limits[state.model or "*"] = action.limit  # the next try cuts under it at once
    queue.wait(list(action.labels), time.time())
    ledger.store.save(state.record)


def room_request(state: RunState, context: Any, poll_interval: float) -> RoomRequest:
    """The first waiting shard, as the status board admits it: earliest logical date, then shard order."""
    queue = state.queue
    first = queue.waiting[0]
    date = context.get("logical_date")
    index = parse_label(first)
    return RoomRequest(
        model=state.model,
        tokens=queue.tokens.get(first, 0),
        limit=queue.limit,
        order=(date.isoformat() if date is not None else "", index.index if index is not None else 0),
        not_before=queue.last_create + poll_interval if queue.last_create else 0.0,
    )


def list_page(hook: Any) -> Callable[[str | None], tuple[list[dict[str, Any]], bool]]:
    """One page of ``GET /batches`` (newest first) after a batch id, as dicts, and whether older ones follow:
    where batches leaving a queue show."""

    def page(after: str | None) -> tuple[list[dict[str, Any]], bool]:
        got = hook.list_batches(after=after, limit=100)
        return got.data, got.has_more

    return page


def resubmit_round(job: Job, hook: Any, ledger: Ledger, state: RunState, include_cancelled: bool) -> bool:
    """Build the next follow-up round (or finish one a crash left half made); False if nothing is worth it."""
    broken = state.record.incomplete_round()
    round_no = broken.round if broken is not None else len(state.rounds)
    sources = [ledger.batch(b) for b in state.rounds[round_no - 1]]
    with tempfile.TemporaryDirectory(prefix="openai-batch-retry-") as workdir:
        spool = resubmit.collect_retryable(
            hook,
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


def resend_invalid_round(job: Job, hook: Any, ledger: Ledger, state: RunState, output_schema: Any) -> bool:
    """Build the follow-up round of the requests whose structured answers are invalid (or finish one a crash
    left half made); False when every answer is valid."""
    broken = state.record.incomplete_round()
    round_no = broken.round if broken is not None else len(state.rounds)
    rounds = [[ledger.batch(b) for b in rnd] for rnd in state.rounds[:round_no]]
    with tempfile.TemporaryDirectory(prefix="openai-batch-invalid-") as workdir:
        spool = answers.collect_invalid(
            hook, rounds, workdir, output_schema, endpoint=job.endpoint, source_name=job.source_name
        )
        if spool is None:
            return False
        _follow_up(job, ledger, state, spool, round_no, invalid_output=True)
    return True


def _follow_up(job: Job, ledger: Ledger, state: RunState, spool: Any, round_no: int, **kind: bool) -> None:
    log.info("Resubmitting %d request(s) as round %d", spool.total_requests, round_no)
    n = len(spool.shards)
    uploads = [
        Upload(label(round_no, s.index, n, **kind), s.path, f"{job.task_id}-r{round_no}-{s.index:05d}.jsonl")
        for s in spool.shards
    ]
    ledger.upload(state.record, uploads, configured_upload_concurrency())
    create(job, ledger, state.record, [u.label for u in uploads])
