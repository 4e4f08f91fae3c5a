"""OpenAIBatchOperator: one task turns a JSONL partition (or an iterator of requests) into landed batch results.

Read it top to bottom: ``execute`` validates the input (nothing is uploaded if a line is bad), proves the output
can be written, attaches to what the partition already paid for and uploads the rest once; ``_advance`` then asks
the planner (:mod:`..lifecycle.plan`) for the next step and carries it out (submit → wait → decide → land) until
the results land or the try fails. Deferral just pauses that loop: ``execute_complete`` resumes it from the state
the trigger echoes back. Money-critical calls go through the ledger (:mod:`..lifecycle.ledger`).
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from datetime import timedelta
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator

from airflow_provider_openai_batch import exceptions as exc
from airflow_provider_openai_batch import metrics, results, storage
from airflow_provider_openai_batch.hooks.openai_batch import OpenAIBatchHook
from airflow_provider_openai_batch.lifecycle import landing, outcomes, plan, submit
from airflow_provider_openai_batch.lifecycle.ledger import Ledger
from airflow_provider_openai_batch.lifecycle.queue import QueueState
from airflow_provider_openai_batch.lifecycle.record import RecordStore
from airflow_provider_openai_batch.lifecycle.state import Phase, RunState
from airflow_provider_openai_batch.lifecycle.tags import TaskIdentity
from airflow_provider_openai_batch.lifecycle.waiting import batch_status, wait_in_place
from airflow_provider_openai_batch.links.openai_batch import OpenAIBatchLink
from airflow_provider_openai_batch.operators.progress import Progress, counting_creates, say_waiting
from airflow_provider_openai_batch.requests_input.shards import Limits
from airflow_provider_openai_batch.statuses import EventStatus
from airflow_provider_openai_batch.structured.validate import OutputSchema
from airflow_provider_openai_batch.transfer import TransferSettings
from airflow_provider_openai_batch.triggers.openai_batch import OpenAIBatchTrigger
from airflow_provider_openai_batch.version_compat import conf

if TYPE_CHECKING:
    from airflow.sdk import Context

RESULT_XCOM_KEY = "batch_result"


class OpenAIBatchOperator(BaseOperator):
    """
    Run one OpenAI batch job (sharded past OpenAI's limits) and land its output and error files on storage.

    :param output_path: Folder (local path or ObjectStoragePath URL such as ``s3://aws_conn@bucket/results/{{ ds }}/``)
        where ``output.jsonl``, ``errors.jsonl`` and ``_manifest.json`` land; checked writable before paying. (templated)
    :param input_path: JSONL file of requests, local or any ObjectStoragePath URL. (templated)
    :param requests: Instead of ``input_path``: an iterable of request dicts, or a callable returning one;
        streamed to a local spool file once per try, never held in memory.
    :param endpoint: The batch endpoint; every request's ``url`` must equal it. (templated)
    :param openai_conn_id: Connection of type ``openai_batch`` (or ``openai``, from apache-airflow-providers-openai).
    :param completion_window: Only ``"24h"`` is accepted by OpenAI.
    :param metadata: Up to 12 key/value pairs added to each batch (4 more find it again). (templated)
    :param deferrable: Wait on the triggerer, holding no worker slot (default ``[operators] default_deferrable``).
    :param poll_interval: Seconds between status polls.
    :param timeout: Longest wait for the batches in one try (seconds or timedelta); ``None``: OpenAI's window.
        Waiting for room in a full batch queue counts too.
    :param queue_timeout: Longest wait for room when the model's batch queue (enqueued-token limit) is full
        (seconds or timedelta); ``None``: only ``timeout`` bounds it. A shard refused by a full queue is free:
        it waits for room and is created again from its upload, spending no retry.
    :param on_timeout: ``"cancel"`` (default): cancel, land what finished, raise OpenAIBatchTimeout; ``"keep"``: leave
        it running and raise, so a retry re-attaches to it.
    :param max_failed_ratio: Largest share of failed requests a completed batch may have (after landing). Default 0.
    :param resubmit_failed: Follow-up rounds for requests that failed retryably (429, 5xx, ``batch_expired``); the
        landed files hold each ``custom_id`` once, with its last outcome.
    :param on_input_change: When a try of the same DAG run finds a batch built from other input: ``"resubmit"``
        (cancel the stale batch it created, submit the new input) or ``"fail"``.
    :param fresh_run: Submit anew, ignoring batches of earlier tries and of other DAG runs of the same partition.
    :param custom_id_prefix: For ``requests`` yielding bare bodies: ids become ``f"{prefix}-{position:06d}"``. (templated)
    :param limits: Per-batch limits used to shard the input (defaults: OpenAI's, with a safety margin).
    :param output_expires_after: Passed to ``batches.create`` (``{"anchor": "created_at", "seconds": N}``).
    :param max_shards_in_flight: Most shards of one input running at once; ``None`` submits all together.
    :param reattach_scan_pages: Most pages (100 batches each) one search of ``batches.list`` reads.
    :param max_cost_usd: Refuse to submit (nothing uploaded) when an upper-bound cost estimate of what this try
        would create exceeds it; see docs/results.md for what the estimate counts.
    :param overwrite_other_results: Replace results another task (another DAG, task or map index, as
        ``_manifest.json`` says) landed in ``output_path``. Default ``False``: such a folder fails the task before
        anything is uploaded or paid (``OpenAIBatchOutputOfAnotherTask``); this task's own folder is always rewritten.
    :param delete_files: Once the results have landed and the task succeeded, delete the batches' input, output
        and error files on OpenAI (and uploads no batch used). Kept on failure: a clear needs them.
    :param output_schema: Validate every answer while landing: a Pydantic model, a JSON schema dict, or ``"auto"``
        (the schema each request asked for). Invalid answers are counted in the result's ``invalid_output``
        and count as failed requests for ``max_failed_ratio``.
    :param resubmit_invalid: With ``output_schema``, send the requests whose answers are invalid again, once, in
        a follow-up round before landing; each ``custom_id`` lands once, with its last answer.
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
        max_shards_in_flight: int | None = None,
        reattach_scan_pages: int = 100,
        max_cost_usd: float | None = None,
        delete_files: bool = False,
        output_schema: Any = None,
        resubmit_invalid: bool = False,
        queue_timeout: timedelta | float | None = None,
        overwrite_other_results: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if on_input_change not in ("resubmit", "fail"):
            raise ValueError(
                f"Expected `on_input_change` to be 'resubmit' or 'fail' but received {on_input_change!r}"
            )
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
        self.max_shards_in_flight = max_shards_in_flight
        self.reattach_scan_pages = reattach_scan_pages
        self.max_cost_usd = max_cost_usd
        self.delete_files = delete_files
        if output_schema is not None:
            OutputSchema(output_schema)  # a bad schema fails when the DAG is parsed, not after paying
        elif resubmit_invalid:
            raise ValueError("Expected `output_schema` with resubmit_invalid=True but received none")
        self.output_schema = output_schema
        self.resubmit_invalid = resubmit_invalid
        self.queue_timeout = (
            queue_timeout.total_seconds() if isinstance(queue_timeout, timedelta) else queue_timeout
        )
        self.overwrite_other_results = overwrite_other_results
        self._active_batch_ids: list[str] = []  # what on_kill cancels: batches this task instance created
        self._progress: Progress | None = None  # what this try has shown of itself (XComs, gauges, log lines)
        # The policy and the job check their own arguments: built once here, a bad one fails when the DAG is
        # parsed instead of hours into a try.
        self.policy, self.job  # noqa: B018

    @cached_property
    def hook(self) -> OpenAIBatchHook:
        return OpenAIBatchHook(openai_conn_id=self.openai_conn_id)

    @property
    def progress(self) -> Progress:
        if self._progress is None:
            self._progress = Progress(self.openai_conn_id, lambda batch_id: self.hook.dashboard_url(batch_id))
        return self._progress

    @property
    def batch_page_url(self) -> str | None:
        """The page of the batch the task works on, for the extra link (read when Airflow ends the try)."""
        return self._progress.batch_page_url if self._progress else None

    @property
    def policy(self) -> plan.Policy:
        return plan.Policy(
            max_shards_in_flight=self.max_shards_in_flight,
            resubmit_failed=self.resubmit_failed,
            on_timeout=self.on_timeout,
            max_failed_ratio=self.max_failed_ratio,
            queue_timeout=self.queue_timeout,
            resubmit_invalid=self.resubmit_invalid,
        )

    @property
    def job(self) -> submit.Job:
        return submit.Job(
            task_id=self.task_id,
            endpoint=self.endpoint,
            completion_window=self.completion_window,
            metadata=self.metadata,
            output_expires_after=self.output_expires_after,
            input_path=self.input_path,
            requests=self.requests,
            custom_id_prefix=self.custom_id_prefix,
            limits=self.limits,
        )

    # ---------------------------------------------------------------------------------------- submit
    def execute(self, context: Context) -> Any:
        """Validate, prove the output writable, attach to what was paid for, upload the rest once; then run."""
        storage.check_connections(self.input_path, self.output_path)
        TransferSettings.from_config()  # a bad landing setting fails now, not once the batches are paid for
        deadline = time.time() + self.timeout_seconds if self.timeout_seconds else None
        # A limit an earlier try learned from a full queue cuts the shards now, unless one is configured.
        ledger = self._ledger(context)
        configured = submit.configured_token_limits()
        learned = {m: n for m, n in ledger.learned_queue_limits().items() if m not in configured}
        return self._start(
            context, ledger, {**learned, **configured}, QueueState(learned=bool(learned)), deadline
        )

    def _start(
        self,
        context: Context,
        ledger: Ledger,
        token_limits: dict[str, int],
        queue: QueueState,
        deadline: float | None,
    ) -> Any:
        """Read the input (shards cut under the model's enqueued-token limit when one is known) and run."""
        job = self.job
        with tempfile.TemporaryDirectory(prefix="openai-batch-spool-") as workdir:
            spool = submit.read_input(job, workdir, token_limits)
            storage.check_writable(self.output_path)
            storage.check_results_owner(
                self.output_path,
                storage.results_writer(ledger.identity),
                overwrite=self.overwrite_other_results,
            )
            record = ledger.attach(spool.fingerprint[:32], len(spool.shards))
            self.progress.reused(ledger, record)
            to_create = [s for s in spool.shards if s.index in record.missing_shards()]
            submit.check_budget(job, to_create, spool.model, self.max_cost_usd)
            submit.upload_shards(
                job, ledger, record, to_create, len(spool.shards), submit.configured_upload_concurrency()
            )
        state = RunState(record, deadline=deadline, model=spool.model, queue=queue)
        submit.note_sizes(state, spool)
        return self._advance(context, ledger, state, None, "")

    def execute_complete(self, context: Context, event: dict[str, Any] | None = None) -> Any:
        """Resume the run loop with the trigger's event: decode → decide → act."""
        status, payload = outcomes.check_event(event)
        state = RunState.from_context(payload.get("context"))
        if state is None:
            raise exc.OpenAIBatchPollError(f"The trigger event names no batch to finish: {payload!r}")
        return self._advance(context, self._ledger(context), state, status, str(payload.get("message") or ""))

    def _ledger(self, context: Context) -> Ledger:
        return Ledger(
            hook=self.hook,
            store=RecordStore(context.get("task_state_store")),
            identity=TaskIdentity.from_context(context),
            on_input_change=self.on_input_change,
            fresh_run=self.fresh_run,
            cancel=self._cancel,
            max_pages=self.reattach_scan_pages,
        )

    # ------------------------------------------------------------------------------------ the run loop
    def _advance(
        self, context: Context, ledger: Ledger, state: RunState, event: EventStatus | None, message: str
    ) -> Any:
        """Ask the planner for the next step and carry it out, until the results land or the try fails."""
        while True:
            self.progress.publish(context, state)
            # The current round as OpenAI says now: what the ledger just saw, unless a wait came in between.
            reread = event is not None
            batches = (
                {} if event in (EventStatus.ERROR, EventStatus.TIMEOUT) else ledger.current(state, reread)
            )
            action = plan.next_step(
                state, plan.Observation(event, batches, message, time.time()), self.policy
            )
            self.log.info("Next step: %s", action)
            event, message = None, ""
            if isinstance(action, plan.Wait):
                event, message = self._wait(context, state)
            elif isinstance(action, plan.SubmitWave):
                with counting_creates(context, state):
                    submit.create_wave(self.job, ledger, state, action)
            elif isinstance(action, plan.Requeue):
                with counting_creates(context, state):
                    submit.requeue(ledger, state, action)
            elif isinstance(action, plan.Readmit):
                with counting_creates(context, state):
                    submit.readmit(self.job, ledger, state, list(action.labels))
            elif isinstance(action, plan.WaitForRoom):
                say_waiting(state)
                event, message = self._wait(context, state, room=list(action.watch))
            elif isinstance(action, plan.Recut):
                self.log.warning(
                    "The %s batch queue holds %s tokens: cutting the input again so that each shard fits",
                    state.model,
                    f"{action.limit:,}",
                )
                learned = {**submit.configured_token_limits(), state.model or "*": action.limit}
                queue = state.queue
                queue.limit, queue.learned = action.limit, True
                return self._start(context, ledger, learned, queue, state.deadline)
            elif isinstance(action, plan.Resubmit):
                with counting_creates(context, state):
                    more = submit.resubmit_round(self.job, self.hook, ledger, state, action.include_cancelled)
                if not more:
                    return self._land(context, ledger, state)
            elif isinstance(action, plan.ResendInvalid):
                with counting_creates(context, state):
                    more = submit.resend_invalid_round(self.job, self.hook, ledger, state, self.output_schema)
                if not more:
                    return self._land(context, ledger, state)
            elif isinstance(action, plan.CancelThenWait):
                self.log.warning(
                    "Timeout: cancelling batch(es) %s and landing what finished", action.batch_ids
                )
                self._cancel(list(action.batch_ids))
                state.phase, state.deadline = Phase.CANCELLING, action.deadline
            elif isinstance(action, plan.Fail):
                raise outcomes.failure_error(action, state.current)
            else:
                return self._land(context, ledger, state)

    def _wait(
        self, context: Context, state: RunState, room: list[str] | None = None
    ) -> tuple[EventStatus, str]:
        """Defer to the trigger (this try resumes in ``execute_complete``), or poll in place.

        :param room: when waiting for queue room, the batches also watched (a wait for room ends when one of
            them ends); None: a plain wait for the current round.
        """
        own = set(state.record.own_batch_ids())
        watch = state.current if room is None else room
        self._active_batch_ids = [b for b in watch if b in own]
        request = submit.room_request(state, context, self.poll_interval) if room is not None else None
        deadline = state.queue.deadline(self.queue_timeout, state.deadline) if request else state.deadline
        self.progress.waiting(context, state, room is not None)
        if self.deferrable:
            self.defer(
                trigger=OpenAIBatchTrigger(
                    batch_ids=watch,
                    openai_conn_id=self.openai_conn_id,
                    poll_interval=self.poll_interval,
                    deadline=deadline,
                    context=state.to_context(),
                    cancel_on_kill=self._active_batch_ids,
                    room=None if request is None else request.to_json(),
                ),
                method_name="execute_complete",
            )
        event = wait_in_place(
            batch_status(self.hook),
            watch,
            deadline=deadline,
            poll_interval=self.poll_interval,
            room=request,
            list_page=submit.list_page(self.hook),
        )
        return EventStatus(event["status"]), event["message"]

    def _land(self, context: Context, ledger: Ledger, state: RunState) -> Any:
        """Land the results, then end the task as their outcome says; on success, assets and cleanup."""
        rounds = [[ledger.batch(b) for b in rnd] for rnd in state.rounds]
        ids = [b["id"] for rnd in rounds for b in rnd]
        # With delete_files, a result landed before is all that is left of the files: do not download again.
        result = self.delete_files and landing.already_landed(self.output_path, ids, state.record.fingerprint)
        if not result:
            started = time.monotonic()
            result = landing.land_result(
                self.hook,
                self.output_path,
                rounds,
                [state.round_includes_cancelled(r) for r in range(1, len(rounds))],
                fingerprint=state.record.fingerprint,
                model=state.model,
                custom_id_prefix=self.custom_id_prefix,
                paid_twice=state.record.paid_twice,
                output_schema=self.output_schema,
                invalid_round=state.invalid_round(),
                written_by=storage.results_writer(ledger.identity),
            )
            metrics.landed(
                [b for rnd in rounds for b in rnd],
                result,
                seconds=time.monotonic() - started,
                landed_bytes=storage.landed_bytes(*result["output_paths"], *result["error_paths"]),
                tags=metrics.tags_of(context),
            )
        context["ti"].xcom_push(key=RESULT_XCOM_KEY, value=result)
        self._active_batch_ids = []
        invalid = (result.get("invalid_output") or {}).get("total", 0)
        outcome = plan.outcome(
            state, rounds[-1], result["request_counts"], result["error_lines"] + invalid, self.policy
        )
        if outcome is not plan.Outcome.SUCCESS:
            raise outcomes.terminal_error(outcome, result, rounds[-1], self.max_failed_ratio)
        # A repeat for consumers: this try paid and waited for nothing, every batch had finished before it began.
        relanded = self.progress.relanded(ids)
        for outlet in self.outlets or []:
            context["outlet_events"][outlet].extra = {**results.summary(result), "relanded": relanded}
        if self.delete_files:
            used = {b["input_file_id"] for rnd in rounds for b in rnd}
            unused = [f for f in state.record.files.values() if f not in used]
            landing.delete_openai_files(self.hook, rounds, unused)
        return result

    # ------------------------------------------------------------------------------------------- kill
    def on_kill(self) -> None:
        """Cancel the batches this task instance created and waits on (in place; the trigger does it deferred)."""
        batch_ids, self._active_batch_ids = (
            self._active_batch_ids,
            [],
        )  # a second SIGTERM cancels nothing more
        self._cancel(batch_ids)

    def _cancel(self, batch_ids: list[str]) -> None:
        for batch_id in batch_ids:
            try:
                self.hook.cancel_batch(batch_id)
                self.log.info("Cancelled batch %s", batch_id)
            except Exception as err:  # best effort: a finished batch cannot be cancelled, and that is fine
                self.log.warning("Could not cancel batch %s: %s", batch_id, type(err).__name__)
