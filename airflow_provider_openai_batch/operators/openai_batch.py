"""OpenAIBatchOperator: one task turns a JSONL partition (or an iterator of requests) into landed batch results.

execute: validate and spool the input (nothing is uploaded if any line is bad) → re-attach to this task
instance's earlier batches, or upload and create them (recorded durably before and after the paid call) → defer
(or poll in place). execute_complete: check the event → optionally resubmit retryable failures → land the output
and error files on ``output_path`` → return the BatchResult, or raise the exception its status calls for.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from datetime import timedelta
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import openai
from airflow.sdk import BaseOperator
from airflow.sdk.configuration import conf

from airflow_provider_openai_batch import results, storage
from airflow_provider_openai_batch.batch_input import (
    InvalidRequestsError,
    Limits,
    SpoolResult,
    spool_requests,
)
from airflow_provider_openai_batch.exceptions import (
    OpenAIBatchCancelled,
    OpenAIBatchError,
    OpenAIBatchExpired,
    OpenAIBatchFailed,
    OpenAIBatchInputChanged,
    OpenAIBatchInputError,
    OpenAIBatchPollError,
    OpenAIBatchRequestsFailed,
    OpenAIBatchTimeout,
)
from airflow_provider_openai_batch.hooks.openai_batch import OpenAIBatchHook
from airflow_provider_openai_batch.links.openai_batch import BATCH_IDS_XCOM_KEY, OpenAIBatchLink
from airflow_provider_openai_batch.triggers.openai_batch import OpenAIBatchTrigger, TriggerStatus

if TYPE_CHECKING:
    from airflow.sdk import Context

STATE_KEY = "openai_batch"
# Batches a retry does not re-attach to: rejected (not billed) or stopped by someone.
_UNUSABLE_STATUSES = ("failed", "cancelled", "cancelling")
RESULT_XCOM_KEY = "batch_result"
# Metadata keys that tag every batch we create, so a lost record can be recovered by listing batches.
META_TASK, META_INPUT, META_SHARD = "airflow_task", "airflow_input", "airflow_shard"
OUR_METADATA_PAIRS = 3
MAX_METADATA_PAIRS = 16
# A cancel reaches `cancelled` within minutes (OpenAI says up to 10); wait that long for partial results.
CANCEL_GRACE_SECONDS = 15 * 60


class OpenAIBatchOperator(BaseOperator):
    """
    Run one OpenAI batch job (sharded past OpenAI's limits) and land its output and error files on storage.

    :param output_path: Directory (local path or ObjectStoragePath URL such as
        ``s3://aws_conn@bucket/results/{{ ds }}/``) where ``output.jsonl``, ``errors.jsonl`` and
        ``_manifest.json`` land. (templated)
    :param input_path: JSONL file of requests, local or any ObjectStoragePath URL. (templated)
    :param requests: Instead of ``input_path``: an iterable of request dicts, or a callable returning one.
        Streamed to a local spool file, never held in memory.
    :param endpoint: The batch endpoint; every request's ``url`` must equal it. (templated)
    :param openai_conn_id: Airflow connection (type ``openai_batch``, or ``openai`` from
        apache-airflow-providers-openai).
    :param completion_window: Only ``"24h"`` is accepted by OpenAI.
    :param metadata: Up to 13 key/value pairs added to each batch (3 more are used to find the batch again
        on retry). (templated)
    :param deferrable: Wait on the triggerer, holding no worker slot (default ``[operators] default_deferrable``).
    :param poll_interval: Seconds between status polls.
    :param timeout: Longest time to wait for the batch in this attempt (seconds or timedelta); ``None`` waits
        for OpenAI's own completion window.
    :param on_timeout: ``"cancel"`` (default) cancels the batch, lands what finished and raises
        OpenAIBatchTimeout; ``"keep"`` leaves it running and raises, so a retry re-attaches to it.
    :param max_failed_ratio: Largest share of failed requests a completed batch may have before the task fails
        (after landing). Default 0: any failed request fails the task.
    :param resubmit_failed: Rounds of follow-up batches for requests that failed with a retryable error
        (429, 5xx, ``batch_expired``). The landed files hold each ``custom_id`` once, with its last outcome.
    :param on_input_change: What a retry does when the input differs from the one its earlier batch was built
        from: ``"resubmit"`` (cancel the stale batch, submit the new input) or ``"fail"``.
    :param fresh_run: Ignore batches this task instance created before and submit anew.
    :param custom_id_prefix: For ``requests`` yielding bare request bodies: ids become
        ``f"{custom_id_prefix}-{position:06d}"``. (templated)
    :param limits: Per-batch limits used to shard the input (defaults: OpenAI's, with a safety margin).
    :param output_expires_after: Passed to ``batches.create`` (``{"anchor": "created_at", "seconds": N}``).
    :param max_shards_in_flight: Most shards of one input submitted at once; the next wave is submitted when the
        current one finishes. ``None`` submits all together.
    :param reattach_scan_pages: Pages of ``batches.list`` (100 each) searched for a batch whose creation was
        not recorded (a crash between create and record).
    """

    template_fields: Sequence[str] = ("input_path", "output_path", "endpoint", "metadata", "custom_id_prefix")
    template_fields_renderers = {"metadata": "json"}
    operator_extra_links = (OpenAIBatchLink(),)
    ui_color = "#d9f2ec"

    def __init__(
        self,
        *,
        output_path: str,
        input_path: str | None = None,
        requests: Iterable[dict[str, Any]] | Callable[[], Iterable[dict[str, Any]]] | None = None,
        endpoint: str = "/v1/chat/completions",
        openai_conn_id: str = OpenAIBatchHook.default_conn_name,
        completion_window: str = "24h",
        metadata: dict[str, str] | None = None,
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
        poll_interval: float = 60.0,
        timeout: timedelta | float | None = None,
        on_timeout: str = "cancel",
        max_failed_ratio: float = 0.0,
        resubmit_failed: int = 0,
        on_input_change: str = "resubmit",
        fresh_run: bool = False,
        custom_id_prefix: str | None = None,
        limits: Limits | None = None,
        output_expires_after: dict[str, Any] | None = None,
        reattach_scan_pages: int = 10,
        max_shards_in_flight: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if (input_path is None) == (requests is None):
            raise ValueError("Pass exactly one of `input_path` or `requests` to OpenAIBatchOperator.")
        if on_timeout not in ("cancel", "keep"):
            raise ValueError(f"Expected `on_timeout` to be 'cancel' or 'keep' but received {on_timeout!r}")
        if on_input_change not in ("resubmit", "fail"):
            raise ValueError(
                f"Expected `on_input_change` to be 'resubmit' or 'fail' but received {on_input_change!r}"
            )
        if not 0.0 <= max_failed_ratio <= 1.0:
            raise ValueError(f"Expected `max_failed_ratio` between 0 and 1 but received {max_failed_ratio!r}")
        self.output_path = output_path
        self.input_path = input_path
        self.requests = requests
        self.endpoint = endpoint
        self.openai_conn_id = openai_conn_id
        self.completion_window = completion_window
        self.metadata = metadata
        self.deferrable = deferrable
        self.poll_interval = poll_interval
        self.timeout_seconds = timeout.total_seconds() if isinstance(timeout, timedelta) else timeout
        self.on_timeout = on_timeout
        self.max_failed_ratio = max_failed_ratio
        self.resubmit_failed = resubmit_failed
        self.on_input_change = on_input_change
        self.fresh_run = fresh_run
        self.custom_id_prefix = custom_id_prefix
        self.limits = limits or Limits()
        self.output_expires_after = output_expires_after
        self.reattach_scan_pages = reattach_scan_pages
        if max_shards_in_flight is not None and max_shards_in_flight < 1:
            raise ValueError(
                f"Expected `max_shards_in_flight` >= 1 or None but received {max_shards_in_flight!r}"
            )
        self.max_shards_in_flight = max_shards_in_flight
        self._active_batch_ids: list[str] = []
        self._reattached = False
        # Statuses this process has just seen (re-attach checks, listing, create): the checks that follow a
        # re-attach read them instead of fetching every batch again.
        self._seen_status: dict[str, str] = {}

    @cached_property
    def hook(self) -> OpenAIBatchHook:
        return OpenAIBatchHook(openai_conn_id=self.openai_conn_id)

    # ----------------------------------------------------------------------------------------- submit
    def execute(self, context: Context) -> Any:
        key = _task_key(context)
        store = _StateRecord(context.get("task_state_store"))
        with tempfile.TemporaryDirectory(prefix="openai-batch-spool-") as workdir:
            spool = self._spool(workdir, context)
            self.log.info(
                "Validated %d requests from %s into %d shard(s); input fingerprint %s",
                spool.total_requests,
                self._source_name,
                len(spool.shards),
                spool.fingerprint[:16],
            )
            rounds = self._submit_idempotently(spool, key, store, context)
        run = {
            "phase": "run",
            "shards": len(spool.shards),
            "deadline": self._deadline(),
            "fingerprint": spool.fingerprint[:32],
        }
        rounds = self._finish_expired(context, rounds, run)
        return self._wait(context, rounds, run)

    def _spool(self, workdir: str, context: Context) -> SpoolResult:
        try:
            if self.input_path is not None:
                with storage.open_input(self.input_path) as source:
                    return spool_requests(
                        source,
                        endpoint=self.endpoint,
                        workdir=workdir,
                        source_name=self._source_name,
                        limits=self.limits,
                    )
            requests = self.requests() if callable(self.requests) else self.requests
            return spool_requests(
                requests,
                endpoint=self.endpoint,
                workdir=workdir,
                source_name=self._source_name,
                limits=self.limits,
                custom_id_prefix=self.custom_id_prefix,
            )
        except InvalidRequestsError as err:
            raise OpenAIBatchInputError(err.source, err.problems, err.total) from None

    @property
    def _source_name(self) -> str:
        return str(self.input_path) if self.input_path is not None else f"<requests of task {self.task_id}>"

    def _submit_idempotently(
        self, spool: SpoolResult, key: str, store: _StateRecord, context: Context, fresh: bool | None = None
    ) -> list[list[str]]:
        """The rounds of batch ids for this input: the ones this task instance already created, else new ones.

        The record in the task state store is written before each paid ``batches.create`` (``creating``) and
        after it (the id). Batches are also tagged with the task key and input fingerprint, so a record lost
        between the two writes is recovered by listing batches instead of creating a duplicate. With
        ``max_shards_in_flight``, only that many new shards are created per call; ``execute_complete`` calls
        again for the next wave (never ``fresh``: the first wave of this try is what it continues).
        """
        fresh = self.fresh_run if fresh is None else fresh
        record = None if fresh else store.load()
        fingerprint = spool.fingerprint[:32]
        n = len(spool.shards)
        if record and record.get("fingerprint") != fingerprint:
            self._handle_input_change(record)
            record = None
        if record and not self._reusable(record):
            record = None
        ids: dict[str, str] = dict(record.get("shards") or {}) if record and record.get("count") == n else {}
        later_rounds = [list(r) for r in (record or {}).get("rounds", [])[1:]] if ids else []
        # Creations that were not recorded: a crash between create and record, no state store, or a state
        # store wiped since (a deleted and recreated run, `[state_store] clear_on_success`). One page or a few.
        if not fresh and len(ids) < n:
            ids.update(self._find_created_batches(key, fingerprint, n, known=ids))
        self._reattached = bool(ids)
        if ids:
            self.log.info(
                "Re-attaching to %d batch(es) created by an earlier try: %s", len(ids), sorted(ids.values())
            )

        state: dict[str, Any] = {
            "fingerprint": fingerprint,
            "shards": ids,
            "count": n,
            "rounds": [],
            "creating": None,
        }
        missing = [shard for shard in spool.shards if str(shard.index) not in ids]
        wave = missing[: self.max_shards_in_flight] if self.max_shards_in_flight else missing
        metadata = self._user_metadata()
        for shard in wave:
            with open(shard.path, "rb") as fh:
                uploaded = self.hook.upload_file(
                    fh, filename=f"{context['ti'].task_id}-{shard.index:05d}.jsonl"
                )
            state["creating"] = shard.index
            store.save(state)
            batch = self._create_batch(
                input_file_id=uploaded.id,
                endpoint=self.endpoint,
                completion_window=self.completion_window,
                metadata={
                    **metadata,
                    META_TASK: key,
                    META_INPUT: fingerprint,
                    META_SHARD: f"{shard.index}/{n}",
                },
                output_expires_after=self.output_expires_after,
            )
            ids[str(shard.index)] = batch.id
            self._seen_status[batch.id] = batch.status
            state["creating"] = None
            store.save(state)
            self.log.info(
                "Created batch %s (shard %d of %d, %d requests)", batch.id, shard.index + 1, n, shard.requests
            )
        rounds = [[ids[k] for k in sorted(ids, key=int)], *later_rounds]
        state["rounds"] = rounds
        store.save(state)
        self._remember_batch_ids(context, [b for rnd in rounds for b in rnd])
        return rounds

    def _create_batch(self, **kwargs: Any) -> Any:
        """``batches.create`` retried without ever paying twice.

        The openai client retries a create whose answer was lost (a timeout, a dropped connection, a 5xx) by
        posting it again, yet the first post may have made the batch: a second, billed batch. So the client does
        not retry this call; after such a failure the newest batches are searched for one carrying this call's
        tags (task key, input fingerprint, shard) before posting again. A 429 made nothing: it is retried after
        its ``Retry-After``. Attempts: the connection's ``max_retries`` + 1, as the client would make.
        """
        tags = {k: kwargs["metadata"][k] for k in (META_TASK, META_INPUT, META_SHARD)}
        attempts = max(1, int(getattr(self.hook.client, "max_retries", 2) or 0) + 1)
        for attempt in range(1, attempts + 1):
            try:
                return self.hook.create_batch(**kwargs, max_retries=0)
            except openai.RateLimitError as err:
                if attempt == attempts:
                    raise
                delay = _retry_after(err, attempt)
                self.log.warning("batches.create got HTTP 429; retrying in %.1fs", delay)
                time.sleep(delay)
            except (openai.APIConnectionError, openai.APIStatusError) as err:
                if (
                    isinstance(err, openai.APIStatusError)
                    and err.status_code not in (408, 409)
                    and err.status_code < 500
                ):
                    raise  # a 4xx other than those the client would retry: the create was refused
                self.log.warning(
                    "batches.create failed (%s) on attempt %d of %d; the batch may exist: looking for it",
                    type(err).__name__,
                    attempt,
                    attempts,
                )
                time.sleep(_retry_after(err, attempt))
                try:
                    made = self._find_tagged(tags)
                except Exception:
                    raise err from None  # cannot tell whether it was made: a retry of the task looks again
                if made is not None:
                    self.log.info("batches.create did make batch %s although its answer was lost", made.id)
                    return made
                if attempt == attempts:
                    raise
        raise AssertionError("unreachable")

    def _find_tagged(self, tags: dict[str, str]) -> Any:
        """The newest usable batch (not failed or cancelled) carrying all ``tags``, from the newest page."""
        for batch in self.hook.list_batches(limit=100).data:
            meta = batch.metadata or {}
            if all(meta.get(k) == v for k, v in tags.items()) and batch.status not in _UNUSABLE_STATUSES:
                return batch
        return None

    def _handle_input_change(self, record: dict[str, Any]) -> None:
        stale = _recorded_batch_ids(record)
        if self.on_input_change == "fail":
            raise OpenAIBatchInputChanged(
                f"The input changed since this task instance created batch(es) {stale}. "
                "Set on_input_change='resubmit' or fresh_run=True to submit the new input."
            )
        self.log.warning(
            "The input changed since batch(es) %s were created: cancelling them and resubmitting", stale
        )
        self._cancel(stale)

    def _reusable(self, record: dict[str, Any]) -> bool:
        """Whether the recorded batches can be re-attached to (or re-landed) instead of submitting anew.

        ``failed`` batches (OpenAI rejected the file; nothing was billed) and ``cancelled`` ones (someone stopped
        them; a clear means "run it") are submitted anew; running, completed and expired ones are kept.
        """
        for batch_id in _recorded_batch_ids(record):
            try:
                status = self._seen_status[batch_id] = self.hook.get_batch(batch_id).status
            except Exception as err:  # a batch that cannot be read is not one to wait for
                self.log.warning(
                    "Recorded batch %s cannot be read (%s); submitting anew", batch_id, type(err).__name__
                )
                return False
            if status in _UNUSABLE_STATUSES:
                self.log.info("Recorded batch %s is %s; submitting anew", batch_id, status)
                return False
        return True

    def _find_created_batches(
        self, key: str, fingerprint: str, count: int, known: dict[str, str]
    ) -> dict[str, str]:
        found: dict[str, str] = {}
        for batch in self.hook.iter_batches(max_pages=self.reattach_scan_pages):
            meta = batch.metadata or {}
            if meta.get(META_TASK) != key or meta.get(META_INPUT) != fingerprint:
                continue
            index, _, total = str(meta.get(META_SHARD, "")).partition("/")
            if (
                index.isdigit()
                and total == str(count)
                and index not in known
                and index not in found
                and batch.status not in _UNUSABLE_STATUSES
            ):
                self.log.info(
                    "Found batch %s (shard %s) created by an earlier try that was not recorded",
                    batch.id,
                    index,
                )
                found[index] = batch.id
                self._seen_status[batch.id] = batch.status
        return found

    def _user_metadata(self) -> dict[str, str]:
        metadata = dict(self.metadata or {})
        if len(metadata) > MAX_METADATA_PAIRS - OUR_METADATA_PAIRS:
            raise ValueError(
                f"Expected at most {MAX_METADATA_PAIRS - OUR_METADATA_PAIRS} `metadata` pairs "
                f"(the operator adds {OUR_METADATA_PAIRS}) but received {len(metadata)}"
            )
        return {str(k): str(v) for k, v in metadata.items()}

    def _remember_batch_ids(self, context: Context, batch_ids: list[str]) -> None:
        # Pushed before deferring so the extra link works while the task waits.
        context["ti"].xcom_push(key=BATCH_IDS_XCOM_KEY, value=batch_ids)

    # ------------------------------------------------------------------------------------------- wait
    def _deadline(self) -> float | None:
        return time.time() + self.timeout_seconds if self.timeout_seconds else None

    def _wait(self, context: Context, rounds: list[list[str]], run: dict[str, Any]) -> Any:
        """Wait for the last round's batches: on the triggerer when deferrable, else polling in place.

        What execute_complete needs next (all rounds, and ``run``: the phase, the shard count, this try's
        deadline, the input fingerprint) travels in the trigger's ``context``, echoed in its event: deferral
        kwargs alone are not kept by every runner (dag.test() replaces them).
        """
        self._active_batch_ids = list(rounds[-1])
        deadline = run.get("deadline")
        state = {**run, "rounds": rounds}
        if self.deferrable and (ready := self._ready_event(rounds[-1], deadline)) is not None:
            # Nothing to wait for (a re-attach to finished batches, a deadline already passed): deferring would
            # only make the trigger fire at once, which Airflow 3.3 can mistake for a failed try (#72716).
            return self.execute_complete(context, event={**ready, "context": state})
        if self.deferrable:
            self.defer(
                trigger=OpenAIBatchTrigger(
                    batch_ids=rounds[-1],
                    openai_conn_id=self.openai_conn_id,
                    poll_interval=self.poll_interval,
                    deadline=deadline,
                    context=state,
                ),
                method_name="execute_complete",
            )
        event = self._poll_in_place(rounds[-1], deadline)
        return self.execute_complete(context, event={**event, "context": state})

    def _ready_event(self, batch_ids: list[str], deadline: float | None) -> dict[str, Any] | None:
        """The event the trigger would send at once, if it would; None when there is something to wait for."""
        statuses: dict[str, Any] = dict.fromkeys(batch_ids)
        if deadline is not None and time.time() >= deadline:
            return _event(TriggerStatus.TIMEOUT, batch_ids, statuses, "The operator's timeout passed")
        try:
            for batch_id in batch_ids:
                status = self._seen_status.get(batch_id) or self.hook.get_batch(batch_id).status
                if status not in results.TERMINAL_STATUSES:
                    return None
                statuses[batch_id] = status
        except openai.APIError:  # the trigger will poll, and report a lasting problem
            return None
        return _event(TriggerStatus.TERMINAL, batch_ids, statuses, "All batches were already terminal")

    def _poll_in_place(self, batch_ids: list[str], deadline: float | None) -> dict[str, Any]:
        """The non-deferrable wait: the same events the trigger sends, polled from the worker."""
        statuses: dict[str, str | None] = dict.fromkeys(batch_ids)
        errors = 0
        while True:
            for batch_id in batch_ids:
                if statuses[batch_id] in results.TERMINAL_STATUSES:
                    continue
                try:
                    batch = self.hook.get_batch(batch_id)
                    errors = 0
                except Exception as err:
                    errors += 1
                    self.log.warning(
                        "Polling batch %s failed (%d in a row): %s", batch_id, errors, type(err).__name__
                    )
                    if errors >= 5:
                        return _event(
                            TriggerStatus.ERROR,
                            batch_ids,
                            statuses,
                            f"Polling failed {errors} times in a row",
                        )
                    continue
                statuses[batch_id] = batch.status
                c = batch.request_counts
                self.log.info(
                    "Batch %s is %s (%s/%s/%s completed/failed/total)",
                    batch_id,
                    batch.status,
                    c and c.completed,
                    c and c.failed,
                    c and c.total,
                )
            if all(s in results.TERMINAL_STATUSES for s in statuses.values()):
                return _event(
                    TriggerStatus.TERMINAL, batch_ids, statuses, "All batches reached a terminal status"
                )
            if deadline is not None and time.time() >= deadline:
                return _event(TriggerStatus.TIMEOUT, batch_ids, statuses, "The operator's timeout passed")
            time.sleep(self.poll_interval)

    # --------------------------------------------------------------------------------------- complete
    def execute_complete(self, context: Context, event: dict[str, Any] | None = None) -> Any:
        """Resume after the wait: submit the next wave or round, else land the results and decide the state."""
        status = _check_event(event)
        assert event is not None
        echoed = event.get("context") or {}
        rounds = echoed.get("rounds") or ([list(event["batch_ids"])] if event.get("batch_ids") else None)
        if not rounds:
            raise OpenAIBatchPollError(f"The trigger event names no batch to finish: {event!r}")
        run = {k: v for k, v in echoed.items() if k != "rounds"}
        run.setdefault("phase", "run")
        run["shards"] = int(run.get("shards") or len(rounds[0]))
        phase, shards = run["phase"], run["shards"]
        current = list(rounds[-1])
        self._active_batch_ids = current
        if status == TriggerStatus.ERROR:
            raise OpenAIBatchPollError(
                f"Gave up polling batch(es) {current}: {event.get('message')}. They may still be running; "
                "a retry of this task re-attaches to them instead of creating new ones."
            )
        if status == TriggerStatus.TIMEOUT:
            if phase == "run" and self.on_timeout == "cancel":
                self.log.warning("Timeout: cancelling batch(es) %s and landing what finished", current)
                self._cancel(current)
                grace = time.time() + CANCEL_GRACE_SECONDS
                return self._wait(context, rounds, {**run, "phase": "timed_out", "deadline": grace})
            raise OpenAIBatchTimeout(
                f"Batch(es) {current} did not finish within the timeout "
                + (
                    "and are still running: a retry re-attaches to them."
                    if phase == "run"
                    else "nor after cancelling."
                ),
            )

        if phase == "run" and len(rounds) == 1 and len(rounds[0]) < shards:
            return self._submit_next_wave(context, run)
        batches = [results.as_dict(self.hook.get_batch(bid)) for bid in current]
        # A batch someone cancelled is not worked around: its requests are not resubmitted.
        stopped = any(b["status"] in ("cancelled", "cancelling") for b in batches)
        if phase == "run" and len(rounds) <= self.resubmit_failed and not stopped:
            follow_up = self._resubmit_retryable(context, rounds, batches, run)
            if follow_up:
                return self._wait(context, [*rounds, follow_up], run)

        all_batches = [
            results.as_dict(self.hook.get_batch(bid)) for rnd in rounds[:-1] for bid in rnd
        ] + batches
        result = self._land(context, rounds, all_batches)
        context["ti"].xcom_push(key=RESULT_XCOM_KEY, value=result)
        self._raise_for_status(result, batches, timed_out=phase == "timed_out")
        self._active_batch_ids = []
        return result

    def _submit_next_wave(self, context: Context, run: dict[str, Any]) -> Any:
        """With ``max_shards_in_flight``: re-read the input (checked against its fingerprint) and submit more."""
        store = _StateRecord(context.get("task_state_store"))
        with tempfile.TemporaryDirectory(prefix="openai-batch-spool-") as workdir:
            spool = self._spool(workdir, context)
            rounds = self._submit_idempotently(spool, _task_key(context), store, context, fresh=False)
        self.log.info("Submitted shards up to %d of %d", len(rounds[0]), len(spool.shards))
        return self._wait(
            context, rounds, {**run, "shards": len(spool.shards), "fingerprint": spool.fingerprint[:32]}
        )

    def _finish_expired(
        self, context: Context, rounds: list[list[str]], run: dict[str, Any]
    ) -> list[list[str]]:
        """A new try that re-attached to an expired round keeps what finished (it was paid for) and submits
        only the unfinished requests as a follow-up round, instead of re-landing the same partial result."""
        if not self._reattached or not any(
            self._seen_status.get(b, "expired") == "expired" for b in rounds[-1]
        ):
            return rounds
        try:
            last = [results.as_dict(self.hook.get_batch(bid)) for bid in rounds[-1]]
        except openai.APIError as err:  # the wait that follows reports a lasting problem
            self.log.warning("Could not read the re-attached batches (%s)", type(err).__name__)
            return rounds
        if not any(b["status"] == "expired" for b in last):
            return rounds
        self.log.info(
            "Batch(es) %s expired in an earlier try: resubmitting the unfinished requests", rounds[-1]
        )
        follow_up = self._resubmit_retryable(context, rounds, last, run)
        return [*rounds, follow_up] if follow_up else rounds

    def _land(
        self, context: Context, rounds: list[list[str]], batches: list[dict[str, Any]]
    ) -> dict[str, Any]:
        """Download every batch's output and error file and land them, merged, on ``output_path``."""
        by_id = {b["id"]: b for b in batches}
        folder = storage.to_path(self.output_path)
        manifest_path = folder / storage.MANIFEST
        # A folder being rewritten must not look complete: the manifest goes first and comes back last.
        storage.remove_if_exists(manifest_path)
        with tempfile.TemporaryDirectory(prefix="openai-batch-land-") as workdir:
            outputs: list[Path] = []
            errors: list[Path] = []
            output_lines = error_lines = failed_lines = 0
            for round_index, round_ids in enumerate(rounds):
                later_round = round_index + 1 < len(rounds)
                for batch_id in round_ids:
                    batch = by_id[batch_id]
                    if batch.get("output_file_id"):
                        path = Path(workdir, f"{batch_id}.output.jsonl")
                        _, lines = self.hook.download_file(batch["output_file_id"], path)
                        _verify_lines(batch, "completed", lines)
                        outputs.append(path)
                        output_lines += lines
                    if batch.get("error_file_id"):
                        path = Path(workdir, f"{batch_id}.errors.jsonl")
                        _, lines = self.hook.download_file(batch["error_file_id"], path)
                        if len(rounds) > 1:
                            # Resubmitted lines have their last outcome in a later round: drop them here.
                            path, lines, failed = _scan_errors(path, drop_retryable=later_round)
                            failed_lines += failed
                        errors.append(path)
                        error_lines += lines
            output_path = folder / "output.jsonl"
            error_path = folder / "errors.jsonl"
            storage.write_concatenated(outputs, output_path)
            if error_lines:
                storage.write_concatenated(errors, error_path)
            else:
                storage.remove_if_exists(error_path)
        result = results.build_result(
            batches,
            output_path=str(output_path),
            error_path=str(error_path) if error_lines else None,
            manifest_path=str(manifest_path),
            output_lines=output_lines,
            error_lines=error_lines,
        )
        if len(rounds) > 1:
            # A resubmitted request is in the counts of every round it ran in: count it once, by its last
            # outcome, so the counts (and max_failed_ratio) are about the task's requests, not the rounds.
            result["request_counts"] = {
                "total": results.sum_counts([by_id[b] for b in rounds[0]])["total"],
                "completed": results.sum_counts(batches)["completed"],
                "failed": failed_lines,
            }
        result["rounds"] = rounds
        result["custom_id_prefix"] = self.custom_id_prefix
        storage.write_json(result, manifest_path)
        self.log.info(
            "Landed %d output line(s) at %s and %d error line(s)%s",
            output_lines,
            output_path,
            error_lines,
            f" at {error_path}" if error_lines else "",
        )
        return result

    def _resubmit_retryable(
        self, context: Context, rounds: list[list[str]], batches: list[dict[str, Any]], run: dict[str, Any]
    ) -> list[str] | None:
        """Submit one follow-up round of the requests that failed retryably in this round, if any.

        Each follow-up batch is tagged with its round; a batch an earlier try made for the same round (a crash
        before the round was recorded) is found by its tags and reused rather than paid for again.
        """
        from airflow_provider_openai_batch import resubmit

        key = _task_key(context)
        store = _StateRecord(context.get("task_state_store"))
        with tempfile.TemporaryDirectory(prefix="openai-batch-retry-") as workdir:
            spool = resubmit.collect_retryable(
                self.hook, batches, workdir, endpoint=self.endpoint, source_name=self._source_name
            )
            if spool is None:
                return None
            round_no = len(rounds)
            self.log.info(
                "Resubmitting %d retryable failed request(s) as round %d", spool.total_requests, round_no
            )
            record = store.load() or {}
            fingerprint = run.get("fingerprint") or record.get("fingerprint", "")
            ids = []
            for shard in spool.shards:
                tags = {
                    META_TASK: key,
                    META_INPUT: fingerprint,
                    META_SHARD: f"r{round_no}.{shard.index}/{len(spool.shards)}",
                }
                batch = self._find_tagged(tags)
                if batch is None:
                    with open(shard.path, "rb") as fh:
                        uploaded = self.hook.upload_file(
                            fh, filename=f"{context['ti'].task_id}-r{round_no}-{shard.index:05d}.jsonl"
                        )
                    batch = self._create_batch(
                        input_file_id=uploaded.id,
                        endpoint=self.endpoint,
                        completion_window=self.completion_window,
                        metadata={**self._user_metadata(), **tags},
                        output_expires_after=self.output_expires_after,
                    )
                else:
                    self.log.info("Reusing follow-up batch %s made by an earlier try", batch.id)
                ids.append(batch.id)
                self._seen_status[batch.id] = batch.status
            record["rounds"] = [*rounds, ids]
            store.save(record)
            self._remember_batch_ids(context, [b for rnd in record["rounds"] for b in rnd])
            return ids

    def _raise_for_status(
        self, result: dict[str, Any], last_round: list[dict[str, Any]], timed_out: bool
    ) -> None:
        where = f"Results landed at {result['output_path']}" + (
            f" and {result['error_path']}" if result["error_path"] else ""
        )
        if timed_out and any(b["status"] != "completed" for b in last_round):
            raise OpenAIBatchTimeout(
                f"Batch(es) {result['batch_ids']} were cancelled after the timeout. {where}.", result
            )
        failed = [b for b in last_round if b["status"] == "failed"]
        if failed:
            details = "\n".join(f"Batch {b['id']} failed:\n{results.failure_details(b)}" for b in failed)
            raise OpenAIBatchFailed(f"{details}\n{where}.", result)
        if any(b["status"] == "expired" for b in last_round):
            raise OpenAIBatchExpired(
                f"Batch(es) {result['batch_ids']} expired before finishing: "
                f"{result['output_lines']} request(s) finished, {result['error_lines']} did not. {where}.",
                result,
            )
        if any(b["status"] == "cancelled" for b in last_round):
            raise OpenAIBatchCancelled(
                f"Batch(es) {result['batch_ids']} were cancelled: {result['output_lines']} request(s) finished. {where}.",
                result,
            )
        total = result["request_counts"]["total"] or 0
        if total and result["error_lines"] / total > self.max_failed_ratio:
            raise OpenAIBatchRequestsFailed(
                f"{result['error_lines']} of {total} request(s) failed, more than max_failed_ratio="
                f"{self.max_failed_ratio} allows. {where}.",
                result,
            )

    # ------------------------------------------------------------------------------------------- kill
    def on_kill(self) -> None:
        """Cancel the batches this task is waiting on (non-deferrable mode; the trigger does it when deferred)."""
        # A second SIGTERM (e.g. a scheduler shutdown) calls on_kill again: cancel once.
        batch_ids, self._active_batch_ids = self._active_batch_ids, []
        self._cancel(batch_ids)

    def _cancel(self, batch_ids: Iterable[str]) -> None:
        for batch_id in batch_ids:
            try:
                self.hook.cancel_batch(batch_id)
                self.log.info("Cancelled batch %s", batch_id)
            except Exception as err:  # best effort: a finished batch cannot be cancelled, and that is fine
                self.log.warning("Could not cancel batch %s: %s", batch_id, type(err).__name__)


# ------------------------------------------------------------------------------------------------ helpers
def _task_key(context: Context) -> str:
    """The idempotency key of a task instance: same DAG, task, run and map index → same key."""
    ti = context["ti"]
    map_index = getattr(ti, "map_index", -1)
    raw = json.dumps([ti.dag_id, ti.task_id, ti.run_id, -1 if map_index is None else map_index])
    return hashlib.sha256(raw.encode()).hexdigest()[:32]


class _StateRecord:
    """This task instance's submission record in Airflow's task state store (kept across retries and clears)."""

    def __init__(self, accessor: Any) -> None:
        self._store = accessor

    @property
    def available(self) -> bool:
        return self._store is not None

    def load(self) -> dict[str, Any] | None:
        if self._store is None:
            return None
        value = self._store.get(STATE_KEY)
        return value if isinstance(value, dict) else None

    def save(self, record: dict[str, Any]) -> None:
        if self._store is not None:
            self._store.set(STATE_KEY, record)


def _recorded_batch_ids(record: dict[str, Any]) -> list[str]:
    ids = list((record.get("shards") or {}).values())
    ids += [b for rnd in (record.get("rounds") or [])[1:] for b in rnd]
    return list(dict.fromkeys(ids))


def _retry_after(err: Exception, attempt: int) -> float:
    """Seconds to wait before attempt ``attempt + 1``: the server's ``Retry-After`` (capped), else backoff."""
    response = getattr(err, "response", None)
    try:
        return min(float(response.headers["retry-after"]), 60.0)  # type: ignore[union-attr]
    except (AttributeError, KeyError, TypeError, ValueError):
        return min(0.5 * 2 ** (attempt - 1), 8.0)


def _event(
    status: TriggerStatus, batch_ids: list[str], statuses: dict[str, Any], message: str
) -> dict[str, Any]:
    return {"status": status.value, "batch_ids": batch_ids, "batches": statuses, "message": message}


def _check_event(event: Any) -> TriggerStatus:
    if not isinstance(event, dict) or "status" not in event:
        raise OpenAIBatchPollError(f"Expected a trigger event dict with a `status` but received {event!r}")
    try:
        return TriggerStatus(event["status"])
    except ValueError:
        raise OpenAIBatchPollError(f"Unknown trigger event status {event['status']!r}") from None


def _verify_lines(batch: dict[str, Any], field: str, lines: int) -> None:
    expected = (batch.get("request_counts") or {}).get(field)
    if batch.get("status") == "completed" and expected is not None and lines != expected:
        raise OpenAIBatchError(
            f"Batch {batch['id']}: downloaded {lines} output line(s) but OpenAI counts {expected} {field} requests; "
            "the download was incomplete."
        )


def _scan_errors(path: Path, *, drop_retryable: bool) -> tuple[Path, int, int]:
    """One pass over an error file: the file to land (retryable lines dropped if asked), its line count, and
    how many of those are requests that ran and failed (not ones a cancel or expiry stopped)."""
    from airflow_provider_openai_batch.resubmit import is_retryable

    stopped = ("batch_expired", "batch_cancelled")
    kept = path.with_suffix(".kept.jsonl")
    count = failed = 0
    with open(path, "rb") as src, open(kept, "wb") as dst:
        for raw in src:
            if not raw.strip():
                continue
            line = json.loads(raw)
            if drop_retryable and is_retryable(line):
                continue
            dst.write(raw if raw.endswith(b"\n") else raw + b"\n")
            count += 1
            failed += (line.get("error") or {}).get("code") not in stopped
    return kept, count, failed
