"""The run state of one try: the submission record, the phase and the deadline, with a JSON round trip.

It travels through the trigger's ``context`` and comes back in its event (``dag.test()`` replaces deferral kwargs
with the event, so the event is the one carrier every runner keeps). The record inside it is the same object the
ledger keeps in the task state store; the phase and the deadline belong to this try only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from airflow_provider_openai_batch.lifecycle.queue import QueueState
from airflow_provider_openai_batch.lifecycle.record import SubmissionRecord


class Phase(str, Enum):
    """Where a try is."""

    WAITING = "WAITING"  # waiting for the current round
    # Our timeout cancelled the round: waiting out the grace for its partial results.
    CANCELLING = "CANCELLING"


@dataclass
class RunState:
    record: SubmissionRecord
    phase: Phase = Phase.WAITING
    deadline: float | None = None
    model: str | None = None
    queue: QueueState = field(default_factory=QueueState)

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

    def invalid_round(self) -> int | None:
        """The follow-up round that resent the requests whose structured answers were invalid, if one did."""
        return next((r for r in range(1, len(self.rounds)) if self._resends_invalid(r)), None)

    def _resends_invalid(self, round_no: int) -> bool:
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
            "queue": self.queue.to_json(),
        }

    @classmethod
    def from_context(cls, context: Any) -> RunState | None:
        """The state a trigger echoed back (what :meth:`to_context` wrote); None if there is none."""
        if not isinstance(context, dict) or context.get("version") != 2:
            return None
        record = SubmissionRecord.from_json(context.get("record"))
        if record is None:
            return None
        return cls(
            record=record,
            phase=Phase(context.get("phase") or Phase.WAITING.value),
            deadline=context.get("deadline"),
            model=context.get("model"),
            queue=QueueState.from_json(context.get("queue")),
        )
