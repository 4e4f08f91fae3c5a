"""The planner: from the run state and what was just observed, the one next step. Pure: no I/O, no clock.

``next_step`` is the whole decision of a try, in the order a reader would ask: did the wait fail or time out, did
a full batch queue refuse a shard (free: it waits for room), is anything still running, are shards left to
submit, should failed or unfinished requests go again, else land.
``outcome`` then says how a landed result ends the task. Both are tested as tables (tests/unit/lifecycle).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any

from airflow_provider_openai_batch.lifecycle.queue import describe, is_queue_full, limit_in
from airflow_provider_openai_batch.lifecycle.state import Phase, RunState
from airflow_provider_openai_batch.lifecycle.tags import Label, label, parse_label
from airflow_provider_openai_batch.statuses import (
    QUEUED,
    REJECTED,
    STOPPED,
    TERMINAL,
    UNFINISHED,
    EventStatus,
)

#: A cancel reaches ``cancelled`` within minutes (OpenAI says up to 10): wait that long for partial results.
CANCEL_GRACE_SECONDS = 15 * 60


@dataclass(frozen=True)
class Policy:
    """The operator's arguments that decide steps; a bad one is refused when the policy is built."""

    max_shards_in_flight: int | None = None
    resubmit_failed: int = 0
    on_timeout: str = "cancel"
    max_failed_ratio: float = 0.0
    cancel_grace: float = CANCEL_GRACE_SECONDS
    resubmit_invalid: bool = False
    queue_timeout: float | None = None

    def __post_init__(self) -> None:
        if self.on_timeout not in ("cancel", "keep"):
            raise ValueError(
                f"Expected `on_timeout` to be 'cancel' or 'keep' but received {self.on_timeout!r}"
            )
        if not 0.0 <= self.max_failed_ratio <= 1.0:
            raise ValueError(
                f"Expected `max_failed_ratio` between 0 and 1 but received {self.max_failed_ratio!r}"
            )
        if self.max_shards_in_flight is not None and self.max_shards_in_flight < 1:
            raise ValueError(
                f"Expected `max_shards_in_flight` >= 1 or None but received {self.max_shards_in_flight!r}"
            )


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
    """Create batches for these shards (already uploaded) of round 0; ``hold`` ones cannot fit in the model's
    queue now: they wait for room without a create."""

    shards: tuple[int, ...]
    hold: tuple[int, ...] = ()


@dataclass(frozen=True)
class Requeue:
    """These batches failed only because the model's queue was full: free. Forget them (their uploads stay),
    note the limit the failure named, and let their shards wait for room."""

    labels: tuple[str, ...]
    limit: int | None


@dataclass(frozen=True)
class WaitForRoom:
    """Wait (defer, or poll in place) until the queue has room for ``labels``, or one of the batches in
    ``watch`` (those of the current round not seen finished) ends."""

    labels: tuple[str, ...]
    watch: tuple[str, ...] = ()


@dataclass(frozen=True)
class Readmit:
    """Room was made for these waiting shards (of any round): create them again from their recorded uploads."""

    labels: tuple[str, ...]


@dataclass(frozen=True)
class Recut:
    """A limit was learned and the waiting shards' sizes are unknown or over it: cut the input again under it
    (nothing of this input is paid for yet)."""

    limit: int


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
    QUEUE_TIMEOUT = "queue_timeout"  # waited for room as long as allowed
    QUEUE_TOO_SMALL = "queue_too_small"  # a shard is larger than the model's whole queue


@dataclass(frozen=True)
class Fail:
    """End the try without landing (the batches keep running, or never confirmed the cancel)."""

    reason: FailReason
    message: str


Action = (
    Wait
    | SubmitWave
    | Requeue
    | WaitForRoom
    | Readmit
    | Recut
    | Resubmit
    | ResendInvalid
    | CancelThenWait
    | Land
    | Fail
)


def next_step(state: RunState, obs: Observation, policy: Policy) -> Action:
    """The next step of a try."""
    queue = state.queue
    if obs.event is EventStatus.ERROR:
        return Fail(FailReason.POLL, obs.message)
    task_timed_out = state.deadline is not None and obs.now >= state.deadline
    if obs.event is EventStatus.TIMEOUT and queue.waiting and (not task_timed_out or not state.current):
        return Fail(FailReason.QUEUE_TIMEOUT, waited_message(state, obs.now))
    if obs.event is EventStatus.TIMEOUT:
        own = [b for b in state.current if b in set(state.record.own_batch_ids())]
        if state.phase is Phase.WAITING and policy.on_timeout == "cancel" and own:
            return CancelThenWait(tuple(own), obs.now + policy.cancel_grace)
        reason = FailReason.TIMEOUT_KEPT if state.phase is Phase.WAITING else FailReason.CANCEL_UNCONFIRMED
        return Fail(reason, obs.message)

    if (broken := state.record.incomplete_round()) is not None and not _only_waiting(state, broken):
        if broken.invalid_output:
            return ResendInvalid()
        return Resubmit(
            include_cancelled=broken.include_cancelled
        )  # builds the same round; makes what is missing
    by_id = {b: lbl for lbl, b in state.record.batches.items()}
    full = [
        by_id[b] for b in state.current if b in obs.batches and b in by_id and is_queue_full(obs.batches[b])
    ]
    if full and state.phase is Phase.WAITING:
        limits = [limit_in(obs.batches[state.record.batches[lbl]]) for lbl in full]
        return Requeue(tuple(full), min((n for n in limits if n is not None), default=None))
    if queue.waiting and queue.limit is not None and (queue.unknown_sizes() or queue.too_large()):
        if not state.record.batches:
            return Recut(queue.limit)
        if queue.too_large():
            return Fail(FailReason.QUEUE_TOO_SMALL, too_large_message(state))
    if queue.waiting and obs.event is EventStatus.ROOM and state.phase is Phase.WAITING:
        return Readmit((queue.waiting[0],))
    if max((_round(lbl) for lbl in queue.waiting), default=0) > state.follow_ups:
        return WaitForRoom(tuple(queue.waiting))  # every shard of the follow-up round waits: none runs
    statuses = [obs.batches[b]["status"] for b in state.current if b in obs.batches]
    watch = tuple(b for b in state.current if (obs.batches.get(b) or {}).get("status") not in TERMINAL)
    if watch:
        return WaitForRoom(tuple(queue.waiting), watch) if queue.waiting else Wait()
    if state.phase is Phase.CANCELLING or any(s in REJECTED for s in statuses):
        return Land()
    stopped = any(s in STOPPED for s in statuses)
    first_look = obs.event is None  # a new try, or nothing waited for yet in this one
    missing = [i for i in state.record.missing_shards() if _label0(state, i) not in queue.waiting]
    if missing and (first_look or not stopped):
        wave = missing[: policy.max_shards_in_flight or len(missing)]
        fit = _fitting(state, obs, wave)
        return SubmitWave(tuple(wave[:fit]), tuple(wave[fit:]))
    if queue.waiting and not stopped:
        return WaitForRoom(tuple(queue.waiting))  # nothing of ours runs: only room ends this wait
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
    if policy.resubmit_invalid and not stopped and state.invalid_round() is None:
        return ResendInvalid()
    return Land()


def waited_message(state: RunState, now: float) -> str:
    """What a try that waited too long for room says: how long, for what, and what of it was queued."""
    queue = state.queue
    waited = now - (queue.since if queue.since is not None else now)
    waiting = describe(state.model, queue, queue.waiting)
    return (
        f"Waited {waited:,.0f} s for room in the batch queue ({waiting}); this task's batches queued meanwhile: "
        f"{', '.join(state.current) or 'none'}. Nothing was paid for the shards that waited: a retry of this "
        "task waits again and re-attaches to the batches that ran"
    )


def too_large_message(state: RunState) -> str:
    queue = state.queue
    shards = describe(state.model, queue, queue.too_large())
    return (
        f"A shard is larger than the model's whole batch queue ({shards}), and other shards of this input are "
        "already created, so the input cannot be cut again in this try. Set [openai_batch] "
        "enqueued_token_limits for the model so that shards are cut to fit before anything is created"
    )


def _only_waiting(state: RunState, broken: Label) -> bool:
    """Whether the shards missing from this follow-up round are only the ones waiting for queue room."""
    present = len(state.record.round_labels(broken.round))
    waiting = [p for p in map(parse_label, state.queue.waiting) if p is not None and p.round == broken.round]
    return present + len(waiting) >= broken.total


def _round(lbl: str) -> int:
    parsed = parse_label(lbl)
    return parsed.round if parsed is not None else 0


def _label0(state: RunState, index: int) -> str:
    return label(0, index, state.record.shard_count)


def _fitting(state: RunState, obs: Observation, wave: list[int]) -> int:
    """How many shards of ``wave``, in order, fit in the room the known limit leaves beside this task's own
    queued batches; at least one when none of ours is queued (only others' batches could be in the way)."""
    queue = state.queue
    if queue.limit is None:
        return len(wave)
    own = [
        lbl
        for lbl, b in state.record.batches.items()
        if (obs.batches.get(b) or {}).get("status", "validating") in QUEUED
    ]
    used = sum(queue.tokens.get(lbl, 0) for lbl in own)
    fit = 0
    for index in wave:
        used += queue.tokens.get(_label0(state, index), 0)
        if used > queue.limit:
            break
        fit += 1
    return max(fit, 0 if own else 1)


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
