"""The run state of one try: the submission record, the phase and the deadline, with a JSON round trip.

It travels through the trigger's ``context`` and comes back in its event (``dag.test()`` replaces deferral kwargs
with the event, so the event is the one carrier every runner keeps). The record inside it is the same object the
ledger keeps in the task state store; the phase and the deadline belong to this try only.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Any

from airflow_provider_openai_batch.lifecycle.ledger import SubmissionRecord, label


class Phase(str, Enum):
    """Where a try is. The values are the ones version 0.1 wrote into trigger contexts."""

    WAITING = "run"  # waiting for the current round
    CANCELLING = "timed_out"  # our timeout cancelled the round: waiting out the grace for its partial results


@dataclass
class RunState:
    record: SubmissionRecord
    phase: Phase = Phase.WAITING
    deadline: float | None = None
    model: str | None = None

    @property
    def rounds(self) -> list[list[str]]:
        return self.record.rounds()

    @property
    def current(self) -> list[str]:
        """The batches this try waits for: the last round (round 0: every shard created so far)."""
        return self.rounds[-1]

    @property
    def follow_ups(self) -> int:
        return len(self.rounds) - 1

    def round_includes_cancelled(self, round_no: int) -> bool:
        labels = self.record.round_labels(round_no)
        return bool(labels) and labels[0].include_cancelled

    def round_resends_invalid(self, round_no: int) -> bool:
        """Whether follow-up round ``round_no`` resent the requests whose structured answers were invalid."""
        labels = self.record.round_labels(round_no)
        return bool(labels) and labels[0].invalid_output

    def to_context(self) -> dict[str, Any]:
        """JSON-safe, for the trigger's ``context``."""
        return {
            "version": 2,
            "record": self.record.to_json(),
            "phase": self.phase.value,
            "deadline": self.deadline,
            "model": self.model,
        }

    @classmethod
    def from_context(cls, context: Any, event_batch_ids: list[str] | None = None) -> RunState | None:
        """The state a trigger echoed back; reads contexts written by version 0.1 too. None if there is none."""
        if not isinstance(context, dict):
            context = {}
        phase = Phase(context.get("phase") or Phase.WAITING.value)
        deadline = context.get("deadline")
        if context.get("version") == 2:
            record = SubmissionRecord.from_json(context.get("record"))
            if record is None:
                return None
            return cls(record=record, phase=phase, deadline=deadline, model=context.get("model"))
        # Version 0.1: {"phase", "shards", "deadline", "fingerprint", "rounds": [[ids], ...]}
        rounds = context.get("rounds") or ([list(event_batch_ids)] if event_batch_ids else None)
        if not rounds:
            return None
        shards = int(context.get("shards") or len(rounds[0]))
        batches = {label(0, i, shards): b for i, b in enumerate(rounds[0])}
        for r, ids in enumerate(rounds[1:], start=1):
            batches.update({label(r, j, len(ids)): b for j, b in enumerate(ids)})
        record = SubmissionRecord(
            fingerprint=str(context.get("fingerprint") or ""), shard_count=shards, batches=batches
        )
        return cls(record=record, phase=phase, deadline=deadline)
