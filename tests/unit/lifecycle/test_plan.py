"""The planner as a table: (state, observation) → action, and (last round, counts) → outcome. No network."""

from __future__ import annotations

import pytest

from airflow_provider_openai_batch.lifecycle import plan
from airflow_provider_openai_batch.lifecycle.queue import QueueState
from airflow_provider_openai_batch.lifecycle.record import SubmissionRecord
from airflow_provider_openai_batch.lifecycle.state import Phase, RunState
from airflow_provider_openai_batch.lifecycle.tags import label
from airflow_provider_openai_batch.statuses import EventStatus
from tests.support.builders import batch

T, TO, ERR = EventStatus.TERMINAL, EventStatus.TIMEOUT, EventStatus.ERROR


def state(shards=1, created=(0,), follow_ups=(), phase=Phase.WAITING, adopted=()):
    """Round 0 has ``shards`` shards of which ``created`` exist (ids b0, b1, ...); follow-up round r has ids fR.j."""
    batches = {label(0, i, shards): f"b{i}" for i in created}
    for r, (count, cancelled) in enumerate(follow_ups, start=1):
        batches.update({label(r, j, count, include_cancelled=cancelled): f"f{r}.{j}" for j in range(count)})
    record = SubmissionRecord("fp", shards, batches=batches, adopted=list(adopted))
    return RunState(record=record, phase=phase, deadline=None)


def seen(*specs):
    """``("b0", "completed")`` or ``("b0", "completed", failed_count)``."""
    out = {}
    for spec in specs:
        bid, status, failed = (*spec, 0)[:3]
        out[bid] = batch(bid, status, counts=(3, 3 - failed, failed))
    return out


POLICY = plan.Policy()
WAVES = plan.Policy(max_shards_in_flight=2)
RESUBMIT = plan.Policy(resubmit_failed=1)
KEEP = plan.Policy(on_timeout="keep")
INVALID = plan.Policy(resubmit_invalid=True)

CASES = [
    # (name, state, event, observed, policy, expected action)
    ("poll error fails the try", state(), ERR, {}, POLICY, plan.Fail(plan.FailReason.POLL, "m")),
    ("timeout cancels own batches", state(), TO, {}, POLICY, plan.CancelThenWait(("b0",), 100.0 + 900)),
    ("timeout keep leaves it running", state(), TO, {}, KEEP, plan.Fail(plan.FailReason.TIMEOUT_KEPT, "m")),
    (
        "timeout never cancels an adopted batch",
        state(adopted=["b0"]),
        TO,
        {},
        POLICY,
        plan.Fail(plan.FailReason.TIMEOUT_KEPT, "m"),
    ),
    (
        "grace passed after cancelling",
        state(phase=Phase.CANCELLING),
        TO,
        {},
        POLICY,
        plan.Fail(plan.FailReason.CANCEL_UNCONFIRMED, "m"),
    ),
    ("running: wait", state(), None, seen(("b0", "in_progress")), POLICY, plan.Wait()),
    ("unobserved batch: wait", state(), T, {}, POLICY, plan.Wait()),
    ("completed clean: land", state(), T, seen(("b0", "completed")), POLICY, plan.Land()),
    (
        "re-attached to a finished batch: land without waiting",
        state(),
        None,
        seen(("b0", "completed")),
        POLICY,
        plan.Land(),
    ),
    (
        "nothing created yet: submit every shard",
        state(3, created=()),
        None,
        {},
        POLICY,
        plan.SubmitWave((0, 1, 2)),
    ),
    ("nothing created yet, waves of 2", state(3, created=()), None, {}, WAVES, plan.SubmitWave((0, 1))),
    (
        "wave done: next wave",
        state(3, created=(0, 1)),
        T,
        seen(("b0", "completed"), ("b1", "completed")),
        WAVES,
        plan.SubmitWave((2,)),
    ),
    (
        "wave still running: wait",
        state(3, created=(0, 1)),
        None,
        seen(("b0", "completed"), ("b1", "in_progress")),
        WAVES,
        plan.Wait(),
    ),
    (
        "a person cancelled a wave: no next wave, land",
        state(3, created=(0,)),
        T,
        seen(("b0", "cancelled")),
        WAVES,
        plan.Land(),
    ),
    (
        "a new try after a cancelled wave submits the rest",
        state(3, created=(0,)),
        None,
        seen(("b0", "cancelled")),
        WAVES,
        plan.SubmitWave((1, 2)),
    ),
    (
        "rejected shard: land (and fail)",
        state(2, created=(0, 1)),
        T,
        seen(("b0", "failed"), ("b1", "completed")),
        POLICY,
        plan.Land(),
    ),
    ("failed requests, no budget: land", state(), T, seen(("b0", "completed", 1)), POLICY, plan.Land()),
    (
        "failed requests with budget: resubmit",
        state(),
        T,
        seen(("b0", "completed", 1)),
        RESUBMIT,
        plan.Resubmit(include_cancelled=False),
    ),
    (
        "expired in this try with budget: resubmit",
        state(),
        T,
        seen(("b0", "expired")),
        RESUBMIT,
        plan.Resubmit(include_cancelled=False),
    ),
    (
        "budget spent: land the last round",
        state(follow_ups=[(1, False)]),
        T,
        seen(("f1.0", "completed", 1)),
        RESUBMIT,
        plan.Land(),
    ),
    (
        "cancelled by a person in this try: land, never resubmit",
        state(),
        T,
        seen(("b0", "cancelled")),
        RESUBMIT,
        plan.Land(),
    ),
    (
        "new try finds it expired: keep the paid part, resubmit the rest",
        state(),
        None,
        seen(("b0", "expired")),
        POLICY,
        plan.Resubmit(include_cancelled=True),
    ),
    (
        "new try finds it cancelled: keep the paid part, resubmit the rest",
        state(),
        None,
        seen(("b0", "cancelled")),
        POLICY,
        plan.Resubmit(include_cancelled=True),
    ),
    (
        "after our own cancel: land what finished",
        state(phase=Phase.CANCELLING),
        T,
        seen(("b0", "cancelled")),
        POLICY,
        plan.Land(),
    ),
    (
        "a crash left a follow-up round half made: build it again",
        RunState(SubmissionRecord("fp", 1, batches={"0/1": "b0", "r1c.0/2": "f1.0"})),
        None,
        {},
        POLICY,
        plan.Resubmit(include_cancelled=True),
    ),
    (
        "resubmit_invalid: resend invalid answers before landing",
        state(),
        T,
        seen(("b0", "completed")),
        INVALID,
        plan.ResendInvalid(),
    ),
    (
        "resubmit_invalid after the failed requests' follow-ups",
        state(),
        T,
        seen(("b0", "completed", 1)),
        plan.Policy(resubmit_failed=1, resubmit_invalid=True),
        plan.Resubmit(include_cancelled=False),
    ),
    (
        "resubmit_invalid: once",
        RunState(SubmissionRecord("fp", 1, batches={"0/1": "b0", "r1v.0/1": "f1.0"})),
        T,
        seen(("b0", "completed"), ("f1.0", "completed")),
        INVALID,
        plan.Land(),
    ),
    (
        "resubmit_invalid: not after a person's cancel",
        state(),
        T,
        seen(("b0", "cancelled")),
        INVALID,
        plan.Land(),
    ),
    (
        "a crash left the invalid answers' round half made: build it again",
        RunState(SubmissionRecord("fp", 1, batches={"0/1": "b0", "r1v.0/2": "f1.0"})),
        None,
        {},
        INVALID,
        plan.ResendInvalid(),
    ),
]


FULL = {
    "errors": {
        "data": [
            {
                "code": "token_limit_exceeded",
                "line": None,
                "param": None,
                "message": "Enqueued token limit reached for gpt-4o-mini in organization org-x. Limit: 2,000,000 "
                "enqueued tokens. Please try again once some in_progress batches have been completed.",
            }
        ]
    }
}


def queued(shards=3, created=(0,), waiting=(), limit=None, tokens=None, learned=False, since=50.0):
    """A run state whose ``waiting`` shards wait for room; ``tokens``: shard index -> prompt tokens."""
    st = state(shards, created)
    st.queue = QueueState(
        limit=limit,
        learned=learned,
        tokens={label(0, i, shards): t for i, t in (tokens or {}).items()},
        waiting=[label(0, i, shards) for i in waiting],
        since=since if waiting else None,
    )
    return st


def follow_up_refused(waiting, created=(0,)):
    """Round 0 done with failures; follow-up round 1 has two shards, ``created`` of them exist (f1.j); the rest
    wait for room when ``waiting`` (else shard 1 is still recorded, as before its refusal is seen)."""
    st = state(1, created=(0,))
    have = created if waiting else (0, 1)
    st.record.batches.update({label(1, j, 2): f"f1.{j}" for j in have})
    st.queue = QueueState(limit=2_000_000, learned=True)
    if waiting:
        st.queue.wait([label(1, j, 2) for j in range(2) if j not in created], 50.0)
    return st


def refused(bid):
    return {bid: batch(bid, "failed", counts=(0, 0, 0), **FULL)}


QUEUE_CASES = [
    (
        "a batch refused by a full queue is requeued with the limit its message names",
        queued(3, created=(0, 1, 2)),
        T,
        {**seen(("b0", "completed"), ("b2", "in_progress")), **refused("b1")},
        POLICY,
        plan.Requeue(("1/3",), 2_000_000),
    ),
    (
        "a batch failed for another reason is not requeued",
        queued(1),
        T,
        {"b0": batch("b0", "failed", counts=(0, 0, 0), errors={"data": [{"code": "invalid_json_line"}]})},
        POLICY,
        plan.Land(),
    ),
    (
        "a shard waits while this task's other batches run",
        queued(3, created=(0, 2), waiting=(1,), limit=100, tokens={0: 50, 1: 50, 2: 50}),
        None,
        seen(("b0", "in_progress"), ("b2", "in_progress")),
        POLICY,
        plan.WaitForRoom(("1/3",), ("b0", "b2")),
    ),
    (
        "a shard waits beside a finished one: only the running one is watched",
        queued(3, created=(0, 2), waiting=(1,), limit=100, tokens={0: 50, 1: 50, 2: 50}),
        T,
        seen(("b0", "completed"), ("b2", "in_progress")),
        POLICY,
        plan.WaitForRoom(("1/3",), ("b2",)),
    ),
    (
        "a shard waits and every batch of ours finished: only room ends the wait",
        queued(3, created=(0, 2), waiting=(1,), limit=100, tokens={0: 50, 1: 50, 2: 50}),
        T,
        seen(("b0", "completed"), ("b2", "completed")),
        POLICY,
        plan.WaitForRoom(("1/3",)),
    ),
    (
        "nothing of ours runs: wait for room",
        queued(1, created=(), waiting=(0,), limit=100, tokens={0: 50}),
        T,
        {},
        POLICY,
        plan.WaitForRoom(("0/1",)),
    ),
    (
        "room: create the first waiting shard again",
        queued(3, created=(0,), waiting=(1, 2), limit=100, tokens={0: 50, 1: 50, 2: 50}),
        EventStatus.ROOM,
        seen(("b0", "in_progress")),
        POLICY,
        plan.Readmit(("1/3",)),
    ),
    (
        "a follow-up round's batch refused by a full queue is requeued, not landed as failed",
        follow_up_refused(waiting=False),
        T,
        {**seen(("b0", "completed", 2), ("f1.0", "completed")), **refused("f1.1")},
        RESUBMIT,
        plan.Requeue(("r1.1/2",), 2_000_000),
    ),
    (
        "a follow-up shard waiting for room is not a broken round to build again",
        follow_up_refused(waiting=True),
        T,
        seen(("b0", "completed", 2), ("f1.0", "completed")),
        RESUBMIT,
        plan.WaitForRoom(("r1.1/2",)),
    ),
    (
        "room: the waiting follow-up shard is created again from its upload",
        follow_up_refused(waiting=True),
        EventStatus.ROOM,
        seen(("b0", "completed", 2), ("f1.0", "completed")),
        RESUBMIT,
        plan.Readmit(("r1.1/2",)),
    ),
    (
        "every shard of a follow-up round waits: wait for room, do not build the round again",
        follow_up_refused(waiting=True, created=()),
        T,
        seen(("b0", "completed", 2)),
        RESUBMIT,
        plan.WaitForRoom(("r1.0/2", "r1.1/2")),
    ),
    (
        "a known limit holds back the shards that cannot fit, without a create",
        queued(4, created=(), limit=100, tokens={0: 40, 1: 40, 2: 40, 3: 40}),
        None,
        {},
        POLICY,
        plan.SubmitWave((0, 1), (2, 3)),
    ),
    (
        "the first shard is always tried when nothing of ours is queued",
        queued(2, created=(), limit=100, tokens={0: 100, 1: 40}),
        None,
        {},
        POLICY,
        plan.SubmitWave((0,), (1,)),
    ),
    (
        "a learned limit and a shard of unknown size: cut the input again",
        queued(1, created=(), waiting=(0,), limit=2_000_000, learned=True),
        T,
        {},
        POLICY,
        plan.Recut(2_000_000),
    ),
    (
        "a waiting shard over the limit beside created ones cannot be cut again",
        queued(2, created=(0,), waiting=(1,), limit=100, learned=True, tokens={0: 50, 1: 500}),
        T,
        seen(("b0", "in_progress")),
        POLICY,
        plan.Fail(
            plan.FailReason.QUEUE_TOO_SMALL,
            plan.too_large_message(queued(2, created=(0,), waiting=(1,), limit=100, tokens={0: 50, 1: 500})),
        ),
    ),
    (
        "the queue timeout passed while shards wait",
        queued(1, created=(), waiting=(0,), limit=100, tokens={0: 50}),
        TO,
        {},
        plan.Policy(queue_timeout=30),
        plan.Fail(
            plan.FailReason.QUEUE_TIMEOUT,
            plan.waited_message(queued(1, created=(), waiting=(0,), limit=100, tokens={0: 50}), 100.0),
        ),
    ),
]


@pytest.mark.parametrize(
    ("name", "st", "event", "observed", "policy", "expected"),
    QUEUE_CASES,
    ids=[c[0] for c in QUEUE_CASES],
)
def test_next_step_with_a_full_queue(name, st, event, observed, policy, expected):
    assert plan.next_step(st, plan.Observation(event, observed, "m", now=100.0), policy) == expected


def test_the_queue_timeout_message_says_how_long_and_what_waited():
    st = queued(5, created=(), waiting=(2,), limit=2_000_000, tokens={2: 380_000})
    st.model = "gpt-4o-mini"
    message = plan.waited_message(st, 3_650.0)
    assert "Waited 3,600 s" in message
    assert "gpt-4o-mini queue full: limit 2,000,000 tokens; shard 3/5 of 380,000 tokens waits" in message


@pytest.mark.parametrize(
    ("name", "st", "event", "observed", "policy", "expected"), CASES, ids=[c[0] for c in CASES]
)
def test_next_step(name, st, event, observed, policy, expected):
    assert plan.next_step(st, plan.Observation(event, observed, "m", now=100.0), policy) == expected


OUTCOMES = [
    ("clean", Phase.WAITING, ["completed"], 0, plan.Policy(), plan.Outcome.SUCCESS),
    (
        "failed requests over the ratio",
        Phase.WAITING,
        ["completed"],
        1,
        plan.Policy(),
        plan.Outcome.REQUESTS_FAILED,
    ),
    (
        "failed requests within the ratio",
        Phase.WAITING,
        ["completed"],
        1,
        plan.Policy(max_failed_ratio=0.5),
        plan.Outcome.SUCCESS,
    ),
    ("rejected beats expired", Phase.WAITING, ["expired", "failed"], 0, plan.Policy(), plan.Outcome.FAILED),
    (
        "expired beats cancelled",
        Phase.WAITING,
        ["cancelled", "expired"],
        0,
        plan.Policy(),
        plan.Outcome.EXPIRED,
    ),
    ("cancelled", Phase.WAITING, ["cancelled"], 0, plan.Policy(), plan.Outcome.CANCELLED),
    ("our timeout cancelled it", Phase.CANCELLING, ["cancelled"], 0, plan.Policy(), plan.Outcome.TIMEOUT),
    (
        "completed before our cancel took effect",
        Phase.CANCELLING,
        ["completed"],
        0,
        plan.Policy(),
        plan.Outcome.SUCCESS,
    ),
]


@pytest.mark.parametrize(
    ("name", "phase", "statuses", "errors", "policy", "expected"), OUTCOMES, ids=[o[0] for o in OUTCOMES]
)
def test_outcome(name, phase, statuses, errors, policy, expected):
    st = state(phase=phase)
    last = [batch(f"b{i}", s) for i, s in enumerate(statuses)]
    assert (
        plan.outcome(st, last, {"total": 2, "completed": 2 - errors, "failed": errors}, errors, policy)
        == expected
    )
