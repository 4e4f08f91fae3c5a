"""The submission record: what one task instance has paid for, for which input, and the store that keeps it.

Pure (no SDK, no Airflow import), so the planner and the run state can use it; only the ledger writes it. It lives
in Airflow's task state store (kept across retries and clears, Airflow 3.3+) through any accessor with ``get`` and
``set``; without one every load finds nothing and the ledger falls back to the batches' tags.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

from airflow_provider_openai_batch.lifecycle.tags import Label, parse_label

STATE_KEY = "openai_batch"
RECORD_VERSION = 2


@dataclass
class SubmissionRecord:
    """What one task instance has paid for, for which input.

    :param batches: label → batch id, for every batch created (or adopted) for this input: the one that counts.
    :param files: label → uploaded input file id (uploaded once; waves and rounds create from these).
    :param adopted: batch ids found from another DAG run of the partition: reused, never cancelled here.
    :param intent: ``{"label", "at"}`` while a create is under way: a record with an intent and no id for that
        label may have paid for a batch it does not know; a search from ``at`` settles it.
    :param paid_twice: twins of a counted batch that already ran (billed) although only one counts, as
        :func:`..twins.describe` writes them: reported in the result, never hidden.
    :param queue_limits: model to the enqueued-token limit a ``token_limit_exceeded`` message named: a fact
        about the organisation, kept for the task's next tries (they cut shards under it before creating).
    """

    fingerprint: str
    shard_count: int
    batches: dict[str, str] = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)
    adopted: list[str] = field(default_factory=list)
    intent: dict[str, Any] | None = None
    paid_twice: list[dict[str, Any]] = field(default_factory=list)
    queue_limits: dict[str, int] = field(default_factory=dict)

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

    def note_paid_twice(self, entries: list[dict[str, Any]]) -> None:
        """Add twins that already ran, once each."""
        known = {e["batch_id"] for e in self.paid_twice}
        self.paid_twice += [e for e in entries if e["batch_id"] not in known]

    def to_json(self) -> dict[str, Any]:
        return {"version": RECORD_VERSION, **asdict(self)}

    @classmethod
    def from_json(cls, data: Any) -> SubmissionRecord | None:
        """The record ``to_json`` wrote; None for anything else."""
        if not isinstance(data, dict) or data.get("version") != RECORD_VERSION or not data.get("fingerprint"):
            return None
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})


class StateAccessor(Protocol):
    """What the ledger needs of Airflow's task state store."""

    def get(self, key: str) -> Any: ...

    def set(self, key: str, value: Any) -> None: ...


class RecordStore:
    """The record in the task state store; without one (Airflow before 3.3) every load finds nothing."""

    def __init__(self, accessor: StateAccessor | None) -> None:
        self._store = accessor

    def load(self) -> SubmissionRecord | None:
        return None if self._store is None else SubmissionRecord.from_json(self._store.get(STATE_KEY))

    def save(self, record: SubmissionRecord) -> None:
        if self._store is not None:
            self._store.set(STATE_KEY, record.to_json())
