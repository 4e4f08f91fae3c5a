"""The submission ledger: the one place that decides whether a batch is paid for, and remembers that it was.

A task instance's :class:`SubmissionRecord` lives in Airflow's task state store (kept across retries and clears,
Airflow 3.3+). An intent is written before every paid ``batches.create`` (first shards, later waves and follow-up
rounds alike) and the batch id right after. Every batch also carries metadata tags (the partition key, the input
fingerprint, its label and the DAG run), so when the record is gone (Airflow before 3.3, a recreated run,
``clear_on_success``) or an intent has no id (a crash or a lost answer), :func:`search` finds it. The search pages
``batches.list`` by time, not by page count, so a busy organisation cannot hide our batch. A recorded batch is dropped
only on evidence (404, or ``failed``); a read that keeps failing fails the try instead of paying again. The partition
key is (dag, task, map index, logical date): another DAG run of the same date with identical input reuses its batch.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

import openai

from airflow_provider_openai_batch.exceptions import OpenAIBatchError, OpenAIBatchInputChanged
from airflow_provider_openai_batch.lifecycle.tags import (
    TAG_INPUT,
    TAG_KEY,
    TAG_RUN,
    TAG_SHARD,
    Label,
    TaskIdentity,
    build_metadata,
    check_user_metadata,
    label,
    parse_label,
)
from airflow_provider_openai_batch.results import as_dict
from airflow_provider_openai_batch.statuses import REJECTED, STOPPED, TERMINAL

__all__ = [
    "STATE_KEY",
    "Ledger",
    "RecordStore",
    "SubmissionRecord",
    "TaskIdentity",
    "build_metadata",
    "check_user_metadata",
    "label",
    "parse_label",
    "search",
]

log = logging.getLogger(__name__)

STATE_KEY = "openai_batch"
#: How far back a search without an intent looks: a batch runs at most 24 h, plus finalizing.
SEARCH_REACH_SECONDS = 25 * 3600
#: Bound on one search's pages (100 batches each), logged when reached.
SEARCH_MAX_PAGES = 100
#: Our clock against OpenAI's, when an intent's time bounds a search.
CLOCK_SKEW_SECONDS = 300


# ---------------------------------------------------------------------------------------------- record
@dataclass
class SubmissionRecord:
    """What one task instance has paid for, for which input.

    :param batches: label → batch id, for every batch created (or adopted) for this input.
    :param files: label → uploaded input file id (uploaded once; waves and rounds create from these).
    :param adopted: batch ids found from another DAG run of the partition: reused, never cancelled here.
    :param intent: ``{"label", "at"}`` while a create is under way: a record with an intent and no id for that
        label may have paid for a batch it does not know; :func:`search` from ``at`` settles it.
    """

    fingerprint: str
    shard_count: int
    batches: dict[str, str] = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)
    adopted: list[str] = field(default_factory=list)
    intent: dict[str, Any] | None = None

    def rounds(self) -> list[list[str]]:
        """Batch ids per round: round 0 by shard index (created ones only), then each follow-up round."""
        by_round: dict[int, list[tuple[int, str]]] = {}
        for lbl, batch_id in self.batches.items():
            parsed = parse_label(lbl)
            if parsed is not None:
                by_round.setdefault(parsed.round, []).append((parsed.index, batch_id))
        return [[b for _, b in sorted(by_round.get(r, []))] for r in range(max(by_round, default=0) + 1)]

    def round_labels(self, round_no: int) -> list[Label]:
        return sorted(
            (p for p in map(parse_label, self.batches) if p is not None and p.round == round_no),
            key=lambda p: p.index,
        )

    def missing_shards(self) -> list[int]:
        have = {p.index for p in self.round_labels(0)}
        return [i for i in range(self.shard_count) if i not in have]

    def incomplete_round(self) -> Label | None:
        """The last follow-up round, if a crash left some of its batches uncreated (it is then built again)."""
        rounds = [p for p in map(parse_label, self.batches) if p is not None and p.round > 0]
        if not rounds:
            return None
        last = max(p.round for p in rounds)
        labels = [p for p in rounds if p.round == last]
        return labels[0] if len(labels) < labels[0].total else None

    def own_batch_ids(self) -> list[str]:
        """The batches this task instance created (the ones it may cancel)."""
        adopted = set(self.adopted)
        return [b for b in self.batches.values() if b not in adopted]

    def to_json(self) -> dict[str, Any]:
        return {"version": 2, **asdict(self)}

    @classmethod
    def from_json(cls, data: Any) -> SubmissionRecord | None:
        if not isinstance(data, dict) or not data.get("fingerprint"):
            return None
        if data.get("version") == 2:
            fields = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
            return cls(**fields)
        # Version 0.1: {"fingerprint", "count", "shards": {index: id}, "rounds": [[...], ...], "creating"}
        count = int(data.get("count") or 0)
        batches = {label(0, int(i), count): b for i, b in (data.get("shards") or {}).items()}
        for r, ids in enumerate((data.get("rounds") or [])[1:], start=1):
            batches.update({label(r, j, len(ids)): b for j, b in enumerate(ids)})
        creating = data.get("creating")
        intent = None if creating is None else {"label": label(0, int(creating), count), "at": None}
        return cls(fingerprint=data["fingerprint"], shard_count=count, batches=batches, intent=intent)


class RecordStore:
    """The record in the task state store; without one (Airflow before 3.3) every load finds nothing."""

    def __init__(self, accessor: Any) -> None:
        self._store = accessor

    @property
    def available(self) -> bool:
        return self._store is not None

    def load(self) -> SubmissionRecord | None:
        return None if self._store is None else SubmissionRecord.from_json(self._store.get(STATE_KEY))

    def save(self, record: SubmissionRecord) -> None:
        if self._store is not None:
            self._store.set(STATE_KEY, record.to_json())


# ---------------------------------------------------------------------------------------------- search
def search(
    hook: Any, *, keys: Iterable[str], since: float, max_pages: int = SEARCH_MAX_PAGES
) -> list[dict[str, Any]]:
    """Every batch tagged with one of ``keys`` created at or after ``since`` (unix time), newest first.

    Pages ``batches.list`` (no server-side filter exists) until a page reaches batches created before
    ``since``, or ``max_pages`` pages, which is logged: the search then reached back less far than asked.
    """
    wanted = set(keys)
    found: list[dict[str, Any]] = []
    after: str | None = None
    for _ in range(max_pages):
        page = hook.list_batches(after=after, limit=100)
        items = [as_dict(b) for b in page.data]
        found += [b for b in items if (b.get("metadata") or {}).get(TAG_KEY) in wanted]
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
@dataclass
class Ledger:
    """Attach to what this partition already paid for, and pay for anything more exactly once."""

    hook: Any
    store: RecordStore
    identity: TaskIdentity
    on_input_change: str = "resubmit"
    fresh: bool = False
    max_pages: int = SEARCH_MAX_PAGES
    cancel: Callable[[list[str]], None] = lambda ids: None
    now: Callable[[], float] = time.time
    seen: dict[str, dict[str, Any]] = field(default_factory=dict)
    stale: set[str] = field(default_factory=set)  # batches of a changed input, already dealt with

    @property
    def keys(self) -> set[str]:
        return {self.identity.partition_key, self.identity.legacy_key}

    # -- attach --------------------------------------------------------------------------------
    def attach(self, fingerprint: str, shard_count: int) -> SubmissionRecord:
        """This input's record: recorded batches that still count, plus tagged ones the record lacks."""
        record = None if self.fresh else self.store.load()
        if record is not None and record.fingerprint != fingerprint:
            self._input_changed(record.own_batch_ids())
            record = None
        if record is not None and record.shard_count != shard_count:
            record = None  # the same requests sharded differently (other limits): a new set of batches
        if record is not None:
            self._verify(record)
        searched_since = None
        if not self.fresh and (record is None or record.intent is not None):
            at = (record.intent or {}).get("at") if record is not None else None
            searched_since = at - CLOCK_SKEW_SECONDS if at else self.now() - SEARCH_REACH_SECONDS
        record = record or SubmissionRecord(fingerprint=fingerprint, shard_count=shard_count)
        if searched_since is not None:
            self._merge_found(
                record, search(self.hook, keys=self.keys, since=searched_since, max_pages=self.max_pages)
            )
        record.intent = None
        self.store.save(record)
        return record

    def _verify(self, record: SubmissionRecord) -> None:
        """Drop recorded batches only on evidence: gone (404) or rejected (``failed``, never billed)."""
        dropped_rounds: set[int] = set()
        for lbl, batch_id in list(record.batches.items()):
            try:
                batch = self.read(batch_id)
            except openai.NotFoundError:
                batch = None
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
            batch = as_dict(self.hook.get_batch(batch_id))
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

    def current(self, state: Any, fresh: bool) -> dict[str, dict[str, Any]]:
        """The batches ``state`` waits for, read now (``fresh``) or as this ledger last saw them."""
        return {b: (None if fresh else self.seen.get(b)) or self.read(b) for b in state.current}

    def _merge_found(self, record: SubmissionRecord, found: list[dict[str, Any]]) -> None:
        stale: list[str] = []
        for batch in found:  # newest first: the newest batch of a label wins
            meta = batch.get("metadata") or {}
            own = meta.get(TAG_RUN) == self.identity.run_id or meta.get(TAG_KEY) == self.identity.legacy_key
            if batch["status"] in REJECTED:
                continue
            if meta.get(TAG_INPUT) != record.fingerprint:
                # Another input of this run is stale; another run's input is its own business.
                if own and batch["status"] not in TERMINAL:
                    stale.append(batch["id"])
                continue
            lbl, parsed = meta.get(TAG_SHARD), parse_label(meta.get(TAG_SHARD))
            if lbl is None or parsed is None or (parsed.round == 0 and parsed.total != record.shard_count):
                continue
            if lbl in record.batches or batch["id"] in record.batches.values():
                continue
            record.batches[lbl] = batch["id"]
            self.seen[batch["id"]] = batch
            if not own:
                record.adopted.append(batch["id"])
            log.info(
                "Found batch %s (%s) %s: re-attaching instead of paying again",
                batch["id"],
                lbl,
                "made by an earlier try of this task" if own else f"made by DAG run {meta.get(TAG_RUN)!r}",
            )
        if stale:
            self._input_changed(stale)

    def _input_changed(self, stale: list[str]) -> None:
        stale = [b for b in stale if b not in self.stale]
        if not stale:
            return
        self.stale.update(stale)
        if self.on_input_change == "fail":
            raise OpenAIBatchInputChanged(
                f"The input changed since this task instance created batch(es) {stale}. "
                "Set on_input_change='resubmit' or fresh_run=True to submit the new input."
            )
        log.warning("The input changed since batch(es) %s were created: cancelling them", stale)
        self.cancel(stale)

    # -- pay -----------------------------------------------------------------------------------
    def upload(self, record: SubmissionRecord, lbl: str, path: str, filename: str) -> str:
        """Upload one shard file once; its id is recorded, so creates never upload again."""
        if lbl not in record.files:
            with open(path, "rb") as fh:
                record.files[lbl] = self.hook.upload_file(file=fh, filename=filename).id
            self.store.save(record)
        return record.files[lbl]

    def create(
        self, record: SubmissionRecord, lbl: str, *, user_metadata: dict[str, str], **create_kwargs: Any
    ) -> dict[str, Any]:
        """The one paid call: intent recorded → ``batches.create`` (never blindly reposted) → id recorded."""
        if lbl in record.batches:
            return self.seen.get(record.batches[lbl]) or self.read(record.batches[lbl])
        started = self.now()
        record.intent = {"label": lbl, "at": started}
        self.store.save(record)
        metadata = build_metadata(self.identity, record.fingerprint, lbl, user_metadata)

        def find_existing() -> Any:
            for batch in search(
                self.hook, keys=self.keys, since=started - CLOCK_SKEW_SECONDS, max_pages=self.max_pages
            ):
                meta = batch.get("metadata") or {}
                if (
                    meta.get(TAG_SHARD) == lbl
                    and meta.get(TAG_INPUT) == record.fingerprint
                    and meta.get(TAG_RUN) == self.identity.run_id
                    and batch["status"] not in REJECTED
                ):
                    log.info("batches.create did make batch %s although its answer was lost", batch["id"])
                    return openai.types.Batch.model_construct(**batch)
            return None

        batch = as_dict(
            self.hook.create_batch(
                input_file_id=record.files[lbl],
                metadata=metadata,
                find_existing=find_existing,
                **create_kwargs,
            )
        )
        record.batches[lbl] = batch["id"]
        record.intent = None
        self.store.save(record)
        self.seen[batch["id"]] = batch
        log.info("Created batch %s (%s)", batch["id"], lbl)
        return batch if self.fresh else self._yield_to_an_older_twin(record, lbl, batch, started)

    def _yield_to_an_older_twin(
        self, record: SubmissionRecord, lbl: str, ours: dict[str, Any], started: float
    ) -> dict[str, Any]:
        """Two DAG runs of a partition that create in the same moment both pay: the younger batch yields. It is
        cancelled while still validating (no request has run, nothing is billed) and the older one is used."""
        twins = [
            b
            for b in search(
                self.hook, keys=self.keys, since=started - CLOCK_SKEW_SECONDS, max_pages=self.max_pages
            )
            if b["id"] != ours["id"]
            and (b.get("metadata") or {}).get(TAG_SHARD) == lbl
            and (b.get("metadata") or {}).get(TAG_INPUT) == record.fingerprint
            and b["status"] not in REJECTED | STOPPED
        ]

        def age(batch: dict[str, Any]) -> tuple[int, str]:  # the order both sides agree on
            return int(batch.get("created_at") or 0), str(batch["id"])

        older = min(twins, key=age, default=None)
        if older is None or age(older) > age(ours):
            return ours
        run = (older.get("metadata") or {}).get(TAG_RUN)
        log.warning(
            "DAG run %r created batch %s for the same input moments earlier: cancelling %s and using theirs",
            run,
            older["id"],
            ours["id"],
        )
        self.cancel([ours["id"]])
        record.batches[lbl] = older["id"]
        if run != self.identity.run_id:
            record.adopted.append(older["id"])
        self.store.save(record)
        self.seen[older["id"]] = older
        return older
