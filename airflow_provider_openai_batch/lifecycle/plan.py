"""The planner: from the run state and what was just observed, the one next step. Pure: no I/O, no clock.

``next_step`` is the whole decision of a try, in the order a reader would ask: did the wait fail or time out, is
anything still running, are shards left to submit, should failed or unfinished requests go again, else land.
``outcome`` then says how a landed result ends the task. Both are tested as tables (tests/unit/lifecycle).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any

from airflow_provider_openai_batch.lifecycle.state import Phase, RunState
from airflow_provider_openai_batch.statuses import REJECTED, STOPPED, TERMINAL, UNFINISHED, EventStatus

#: A cancel reaches ``cancelled`` within minutes (OpenAI says up to 10): wait that long for partial results.
CANCEL_GRACE_SECONDS = 15 * 60


@dataclass(frozen=True)
class Policy:
    """The operator's arguments that decide steps."""

    max_shards_in_flight: int | None = None
    resubmit_failed: int = 0
    on_timeout: str = "cancel"
    max_failed_ratio: float = 0.0
    cancel_grace: float = CANCEL_GRACE_SECONDS
    resubmit_invalid: bool = False


@dataclass(frozen=True)
class Observation:
    """What the try knows now: how the wait ended (None: no wait yet in this try) and the current round."""

    event: EventStatus | None
    batches: Mapping[str, Mapping[str, Any]]
    message: str = ""
    now: float = 0.0


# -- actions -----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Wait:
    """Wait (defer, or poll in place) for the current round."""


@dataclass(frozen=True)
class SubmitWave:
    """Create batches for these shards (already uploaded) of round 0."""

    shards: tuple[int, ...]


@dataclass(frozen=True)
class Resubmit:
    """Submit a follow-up round of the requests that failed retryably (and, after a stop, never ran)."""

    include_cancelled: bool


@dataclass(frozen=True)
class ResendInvalid:
    """Before landing, once: send the requests whose structured answers are invalid again (none: land)."""


@dataclass(frozen=True)
class CancelThenWait:
    """Our timeout passed: cancel the round, then wait until ``deadline`` for its partial results."""

    batch_ids: tuple[str, ...]
    deadline: float


@dataclass(frozen=True)
class Land:
    """Land every round's output and error files; :func:`outcome` then decides how the task ends."""


class FailReason(str, Enum):
    POLL = "poll"
    TIMEOUT_KEPT = "timeout_kept"
    CANCEL_UNCONFIRMED = "cancel_unconfirmed"


@dataclass(frozen=True)
class Fail:
    """End the try without landing (the batches keep running, or never confirmed the cancel)."""

    reason: FailReason
    message: str


Action = Wait | SubmitWave | Resubmit | ResendInvalid | CancelThenWait | Land | Fail


def next_step(state: RunState, obs: Observation, policy: Policy) -> Action:
    """The next step of a try."""
    if obs.event is EventStatus.ERROR:
        return Fail(FailReason.POLL, obs.message)
    if obs.event is EventStatus.TIMEOUT:
        own = [b for b in state.current if b in set(state.record.own_batch_ids())]
        if state.phase is Phase.WAITING and policy.on_timeout == "cancel" and own:
            return CancelThenWait(tuple(own), obs.now + policy.cancel_grace)
        reason = FailReason.TIMEOUT_KEPT if state.phase is Phase.WAITING else FailReason.CANCEL_UNCONFIRMED
        return Fail(reason, obs.message)

    if (broken := state.record.incomplete_round()) is not None:
        if broken.invalid_output:
            return ResendInvalid()
        return Resubmit(
            include_cancelled=broken.include_cancelled
        )  # builds the same round; makes what is missing
    statuses = [obs.batches[b]["status"] for b in state.current if b in obs.batches]
    if len(statuses) < len(state.current) or any(s not in TERMINAL for s in statuses):
        return Wait()
    if state.phase is Phase.CANCELLING or any(s in REJECTED for s in statuses):
        return Land()
    stopped = any(s in STOPPED for s in statuses)
    first_look = obs.event is None  # a new try, or nothing waited for yet in this one
    missing = state.record.missing_shards()
    if missing and (first_look or not stopped):
        return SubmitWave(tuple(missing[: policy.max_shards_in_flight or len(missing)]))
    if first_look and any(s in UNFINISHED for s in statuses):
        # A new try found its batches expired or cancelled: keep what finished (it was paid for) and pay
        # only for the rest. Within a try, a person's cancel is final.
        return Resubmit(include_cancelled=True)
    unfinished = any(
        s in UNFINISHED or int((obs.batches[b].get("request_counts") or {}).get("failed") or 0) > 0
        for b, s in zip(state.current, statuses, strict=True)
    )
    if unfinished and not stopped and state.follow_ups < policy.resubmit_failed:
        return Resubmit(include_cancelled=False)
    resent = any(state.round_resends_invalid(r) for r in range(1, len(state.rounds)))
    if policy.resubmit_invalid and not stopped and not resent:
        return ResendInvalid()
    return Land()


# -- how a landed result ends the task ---------------------------------------------------------------
class Outcome(str, Enum):
    SUCCESS = "success"
    TIMEOUT = "timeout"
    FAILED = "failed"
    EXPIRED = "expired"
    CANCELLED = "cancelled"
    REQUESTS_FAILED = "requests_failed"


def outcome(
    state: RunState,
    last_round: Sequence[Mapping[str, Any]],
    counts: Mapping[str, Any],
    error_lines: int,
    policy: Policy,
) -> Outcome:
    """Timeout beats a rejected batch beats expiry beats a cancel beats too many failed requests."""
    statuses = [b["status"] for b in last_round]
    if state.phase is Phase.CANCELLING and any(s != "completed" for s in statuses):
        return Outcome.TIMEOUT
    for status, result in (
        ("failed", Outcome.FAILED),
        ("expired", Outcome.EXPIRED),
        ("cancelled", Outcome.CANCELLED),
    ):
        if status in statuses:
            return result
    total = int(counts.get("total") or 0)
    if total and error_lines / total > policy.max_failed_ratio:
        return Outcome.REQUESTS_FAILED
    return Outcome.SUCCESS
