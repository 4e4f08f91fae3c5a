"""The submission ledger: the one place that decides whether a batch is paid for, and remembers that it was.

The task instance's :class:`.record.SubmissionRecord` gets an intent before every paid ``batches.create`` (first
shards, later waves and follow-up rounds alike) and the batch id right after. Every batch also carries metadata tags
(the partition key, the input fingerprint, its label and the DAG run), so when the record is gone (Airflow before
3.3, a recreated run, ``clear_on_success``) or an intent has no id (a crash or a lost answer), :func:`search` finds
it. The search pages ``batches.list`` by time, not by page count, so a busy organisation cannot hide our batch. A
recorded batch is dropped only on evidence (404, or ``failed``); a read that keeps failing fails the try instead of
paying again. The partition key is (dag, task, map index, logical date): another DAG run of the same date with
identical input reuses its batch. Where several batches carry one label and input, :mod:`.twins` says which counts.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import openai

from airflow_provider_openai_batch.exceptions import OpenAIBatchError, OpenAIBatchInputChanged
from airflow_provider_openai_batch.lifecycle import twins
from airflow_provider_openai_batch.lifecycle.queue import learned_limits
from airflow_provider_openai_batch.lifecycle.record import RecordStore, SubmissionRecord
from airflow_provider_openai_batch.lifecycle.tags import (
    TAG_INPUT,
    TAG_KEY,
    TAG_RUN,
    TAG_SHARD,
    TaskIdentity,
    build_metadata,
    parse_label,
)
from airflow_provider_openai_batch.statuses import REJECTED, TERMINAL

log = logging.getLogger(__name__)

STATE_KEY = "openai_batch"
#: How far back a search without an intent looks: a batch runs at most 24 h, plus finalizing.
SEARCH_REACH_SECONDS = 25 * 3600
#: Bound on one search's pages (100 batches each), logged when reached.
SEARCH_MAX_PAGES = 100
#: Our clock against OpenAI's, when an intent's time bounds a search.
CLOCK_SKEW_SECONDS = 300
#: How long a search made to learn the queue limit stands in for attach's (reading a big input takes longer).
SEARCH_REUSE_SECONDS = 60.0


# ---------------------------------------------------------------------------------------------- search
def search(hook: Any, *, key: str, since: float, max_pages: int = SEARCH_MAX_PAGES) -> list[dict[str, Any]]:
    """Every batch tagged with the partition ``key`` created at or after ``since`` (unix time), newest first.

    Pages ``batches.list`` (no server-side filter exists) until a page reaches batches created before
    ``since``, or ``max_pages`` pages, which is logged: the search then reached back less far than asked.
    """
    found: list[dict[str, Any]] = []
    after: str | None = None
    for _ in range(max_pages):
        page = hook.list_batches(after=after, limit=100)
        items = page.data
        found += [b for b in items if (b.get("metadata") or {}).get(TAG_KEY) == key]
        if not page.has_more or not items or min(int(b.get("created_at") or 0) for b in items) < since:
            return found
        after = items[-1]["id"]
    log.warning(
        "Searched %d pages of batches (%d batches) without reaching batches created before %s: "
        "a batch of this task older than that would not be found",
        max_pages,
        max_pages * 100,
        time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(since)),
    )
    return found


# ---------------------------------------------------------------------------------------------- ledger
class Upload(NamedTuple):
    """One shard file to upload: the label its id is recorded under, its local path, the name OpenAI keeps."""

    label: str
    path: str
    filename: str


@dataclass
class Ledger:
    """Attach to what this partition already paid for, and pay for anything more exactly once."""

    hook: Any
    store: RecordStore
    identity: TaskIdentity
    on_input_change: str = "resubmit"
    fresh_run: bool = False
    max_pages: int = SEARCH_MAX_PAGES
    cancel: Callable[[list[str]], None] = lambda ids: None
    now: Callable[[], float] = time.time
    seen: dict[str, dict[str, Any]] = field(default_factory=dict)
    stale: set[str] = field(default_factory=set)  # batches of a changed input, already dealt with
    searched: tuple[float, float, list[dict[str, Any]]] | None = None  # to reuse once: at, since, found

    def _search(self, since: float, keep: bool = False) -> list[dict[str, Any]]:
        earlier, self.searched = self.searched, None
        if earlier is not None and earlier[1] <= since and self.now() - earlier[0] < SEARCH_REUSE_SECONDS:
            return earlier[2]  # searched as far back moments ago, with nothing created since
        found = search(self.hook, key=self.identity.partition_key, since=since, max_pages=self.max_pages)
        if keep:
            self.searched = (self.now(), since, found)
        return found

    def learned_queue_limits(self) -> dict[str, int]:
        """The enqueued-token limits earlier tries learned: from the record, else from their refused batches.

        Without a record (Airflow before 3.3, or a first try) the search :meth:`attach` makes anyway runs now, so
        a retry cuts its shards under the limit before any create; attach then reuses what it found.
        """
        loaded = self.store.load()
        if loaded is not None:
            return dict(loaded.queue_limits)
        if self.fresh_run:
            return {}
        return learned_limits(self._search(self.now() - SEARCH_REACH_SECONDS, keep=True))

    def _is_ours(self, batch: Mapping[str, Any]) -> bool:
        return (batch.get("metadata") or {}).get(TAG_RUN) == self.identity.run_id

    # -- attach --------------------------------------------------------------------------------
    def attach(self, fingerprint: str, shard_count: int) -> SubmissionRecord:
        """This input's record: recorded batches that still count, plus tagged ones the record lacks."""
        record = loaded = None if self.fresh_run else self.store.load()
        if record is not None and record.fingerprint != fingerprint:
            self._input_changed([b for b in map(self._read_if_there, record.own_batch_ids()) if b])
            record = None
        if record is not None and record.shard_count != shard_count:
            record = None  # the same requests sharded differently (other limits): a new set of batches
        if record is not None:
            self._verify(record)
        searched_since = None
        if not self.fresh_run and (record is None or record.intent is not None):
            at = (record.intent or {}).get("at") if record is not None else None
            searched_since = at - CLOCK_SKEW_SECONDS if at else self.now() - SEARCH_REACH_SECONDS
        if record is None:  # what the queue taught earlier tries holds for any input
            learned = dict(loaded.queue_limits) if loaded is not None else {}
            record = SubmissionRecord(fingerprint=fingerprint, shard_count=shard_count, queue_limits=learned)
        if searched_since is not None:
            self._merge_found(record, self._search(searched_since))
        record.intent = None
        self.store.save(record)
        return record

    def _verify(self, record: SubmissionRecord) -> None:
        """Drop recorded batches only on evidence: gone (404) or rejected (``failed``, never billed)."""
        dropped_rounds: set[int] = set()
        for lbl, batch_id in list(record.batches.items()):
            batch = self._read_if_there(batch_id)
            if batch is None or batch["status"] in REJECTED:
                log.info("Recorded batch %s is %s: it no longer counts", batch_id, batch and batch["status"])
                del record.batches[lbl]
                parsed = parse_label(lbl)
                if parsed is not None and parsed.round > 0:
                    dropped_rounds.add(parsed.round)
        if dropped_rounds:  # a follow-up round with a hole: it and every later round are decided again
            first = min(dropped_rounds)
            record.batches = {
                k: v for k, v in record.batches.items() if (p := parse_label(k)) is None or p.round < first
            }

    def read(self, batch_id: str) -> dict[str, Any]:
        """Retrieve one batch (the client retries transient errors); a lasting failure fails the try."""
        try:
            batch: dict[str, Any] = self.hook.get_batch(batch_id)
        except openai.NotFoundError:
            raise
        except (openai.APIConnectionError, openai.APIStatusError) as err:
            raise OpenAIBatchError(
                f"Could not read batch {batch_id} ({type(err).__name__}, after the client's retries). "
                "Not submitting anew, which could pay twice for the same requests: a retry of this task "
                "reads it again."
            ) from err
        self.seen[batch_id] = batch
        return batch

    def _read_if_there(self, batch_id: str) -> dict[str, Any] | None:
        try:
            return self.read(batch_id)
        except openai.NotFoundError:
            return None

    def batch(self, batch_id: str) -> dict[str, Any]:
        """The batch as this ledger last saw it, read once if it never did."""
        return self.seen.get(batch_id) or self.read(batch_id)

    def current(self, state: Any, reread: bool) -> dict[str, dict[str, Any]]:
        """The batches ``state`` waits for, read now (``reread``) or as this ledger last saw them."""
        return {b: self.read(b) if reread else self.batch(b) for b in state.current}

    def _merge_found(self, record: SubmissionRecord, found: list[dict[str, Any]]) -> None:
        """Add the tagged batches the record lacks; where a label has several, the twin rule picks one."""
        stale: list[dict[str, Any]] = []
        by_label: dict[str, list[dict[str, Any]]] = {}
        for batch in found:
            meta = batch.get("metadata") or {}
            if batch["status"] in REJECTED:
                continue
            if meta.get(TAG_INPUT) != record.fingerprint:
                # Another input of this run is stale, finished or not; another run's input is its own business.
                if self._is_ours(batch):
                    stale.append(batch)
                continue
            lbl, parsed = meta.get(TAG_SHARD), parse_label(meta.get(TAG_SHARD))
            if lbl is None or parsed is None or (parsed.round == 0 and parsed.total != record.shard_count):
                continue
            by_label.setdefault(lbl, []).append(batch)
        if stale:
            self._input_changed(stale)
        for lbl, group in by_label.items():
            recorded = record.batches.get(lbl)
            if recorded is not None and all(b["id"] != recorded for b in group):
                group.append(self.batch(recorded))
            kept = self._settle(record, lbl, group)
            if kept is not None and kept["id"] != recorded:
                log.info(
                    "Found batch %s (%s) %s: re-attaching instead of paying again",
                    kept["id"],
                    lbl,
                    "made by an earlier try of this task"
                    if self._is_ours(kept)
                    else f"made by DAG run {(kept.get('metadata') or {}).get(TAG_RUN)!r}",
                )

    def _input_changed(self, stale: list[dict[str, Any]]) -> None:
        """Batches this run made from other input: refused under ``"fail"``, else the live ones cancelled."""
        stale = [b for b in stale if b["id"] not in self.stale and b["status"] not in REJECTED]
        if not stale:
            return
        self.stale.update(b["id"] for b in stale)
        ids = [b["id"] for b in stale]
        if self.on_input_change == "fail":
            raise OpenAIBatchInputChanged(
                f"The input changed since this task instance created batch(es) {ids}. "
                "Set on_input_change='resubmit' or fresh_run=True to submit the new input."
            )
        live = [b["id"] for b in stale if b["status"] not in TERMINAL]
        log.warning(
            "The input changed since batch(es) %s were created: %s",
            ids,
            f"cancelling {live}" if live else "they have finished, nothing to cancel",
        )
        if live:
            self.cancel(live)

    # -- pay -----------------------------------------------------------------------------------
    def upload(self, record: SubmissionRecord, files: list[Upload], concurrency: int = 1) -> None:
        """Upload the files the record lacks, up to ``concurrency`` at a time; creates never upload again.

        Each id is recorded, and the record saved, as its upload finishes, in the calling thread: the
        uploads overlap, the record's writes never do. When one upload fails, those not yet started are
        dropped, those under way finish and are recorded, and the first failure is raised: nothing is
        created, and a retry uploads only what is still missing.
        """
        missing = [f for f in files if f.label not in record.files]
        if not missing:
            return
        failed = threading.Event()  # set by the failing upload's own thread, so no later one starts

        def send(upload: Upload) -> str | None:
            if failed.is_set():
                return None
            try:
                return self._upload_one(upload)
            except BaseException:
                failed.set()
                raise

        failure: BaseException | None = None
        getattr(self.hook, "client", None)  # the sync client built once, before the threads share it
        with ThreadPoolExecutor(
            max_workers=max(1, min(concurrency, len(missing))), thread_name_prefix="openai-batch-upload"
        ) as pool:
            running = {pool.submit(send, f): f.label for f in missing}
            try:
                for done in as_completed(running):
                    error = done.exception()
                    if error is not None:
                        failure = failure or error
                    elif (file_id := done.result()) is not None:
                        record.files[running[done]] = file_id
                        self.store.save(record)
            except BaseException:
                failed.set()  # this thread was interrupted (a task timeout) or a save failed: start no more
                raise
        if failure is not None:
            raise failure

    def _upload_one(self, upload: Upload) -> str:
        with open(upload.path, "rb") as fh:  # the client streams it: an open file is never read whole
            file_id: str = self.hook.upload_file(file=fh, filename=upload.filename).id
        log.info("Uploaded %s as %s (%s)", upload.filename, file_id, upload.label)
        return file_id

    def create(
        self, record: SubmissionRecord, lbl: str, *, user_metadata: dict[str, str], **create_kwargs: Any
    ) -> dict[str, Any]:
        """The one paid call: intent recorded → ``batches.create`` (never blindly reposted) → id recorded."""
        if lbl in record.batches:
            return self.batch(record.batches[lbl])
        started = self.now()
        record.intent = {"label": lbl, "at": started}
        self.store.save(record)
        metadata = build_metadata(self.identity, record.fingerprint, lbl, user_metadata)

        earlier: set[str] = set()

        def twins_of_this_create() -> list[dict[str, Any]]:
            return [
                b
                for b in self._search(started - CLOCK_SKEW_SECONDS)
                if (b.get("metadata") or {}).get(TAG_SHARD) == lbl
                and (b.get("metadata") or {}).get(TAG_INPUT) == record.fingerprint
                and b["id"] not in earlier
            ]

        if (
            self.fresh_run
        ):  # a fresh run pays again on purpose: what existed before this create is not its twin
            earlier = {b["id"] for b in twins_of_this_create()}

        def find_existing() -> str | None:
            for batch in twins_of_this_create():
                if self._is_ours(batch) and batch["status"] not in REJECTED:
                    return str(batch["id"])
            return None

        batch: dict[str, Any] = self.hook.create_batch(
            input_file_id=record.files[lbl], metadata=metadata, find_existing=find_existing, **create_kwargs
        )
        record.batches[lbl] = batch["id"]
        record.intent = None
        self.store.save(record)
        self.seen[batch["id"]] = batch
        log.info("Created batch %s (%s)", batch["id"], lbl)
        found = twins_of_this_create()  # read after the answer: fresher than it, ours included
        if self.fresh_run:  # earlier batches are ignored, a gateway's repeats of this very create are not
            found = [b for b in found if self._is_ours(b)]
        if all(b["id"] != batch["id"] for b in found):
            found.append(batch)
        return self._settle(record, lbl, found, answered=batch["id"]) or batch

    def _settle(
        self, record: SubmissionRecord, lbl: str, batches: list[dict[str, Any]], answered: str | None = None
    ) -> dict[str, Any] | None:
        """Apply the twin rule to one label's batches: record the one that counts, cancel this run's live
        twins, report twins that already ran as paid twice.

        :param answered: the batch this try's create was answered with, if any (named so in the log).
        """
        settled = twins.settle(batches, self.identity.run_id)
        if settled is None:
            return None
        keep = dict(settled.keep)
        paid = {e["batch_id"]: e for e in settled.paid_twice}
        run = self.identity.run_id
        for twin in sorted((b for b in batches if b["id"] != keep["id"]), key=twins.age):
            if twin["id"] not in paid and twin["id"] not in settled.cancel:
                continue
            what = (
                f"has already run ({twin['status']}): PAID TWICE for these requests, its results are not "
                "used (see paid_twice in the result)"
                + ("; cancelling the rest of it" if twin["id"] in settled.cancel else "")
                if twin["id"] in paid
                else f"is still {twin['status']}: cancelling it before any request runs (unbilled)"
            )
            log.warning(
                "Batch %s (%s, made by %s) repeats batch %s (made by %s), the one that counts, and %s",
                twin["id"],
                lbl,
                twins.made_by(twin, run, answered),
                keep["id"],
                twins.made_by(keep, run, answered),
                what,
            )
        if settled.cancel:
            self.cancel(list(settled.cancel))
        if record.batches.get(lbl) != keep["id"]:
            record.batches[lbl] = keep["id"]
            if not self._is_ours(keep) and keep["id"] not in record.adopted:
                record.adopted.append(keep["id"])
        record.note_paid_twice(list(settled.paid_twice))
        self.store.save(record)
        self.seen[keep["id"]] = keep
        return keep
