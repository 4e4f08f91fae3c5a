"""The batch queue's pure parts: reading a refused batch, the try's queue state, departures and admission."""

from __future__ import annotations

import pytest

from airflow_provider_openai_batch.lifecycle.queue import (
    ROOM_MAX_PAGES,
    Admission,
    QueueState,
    RoomRequest,
    RoomWatch,
    configured_limits,
    describe,
    is_queue_full,
    learned_limits,
    limit_in,
)

MESSAGE = (
    "Enqueued token limit reached for gpt-4o-mini in organization org-abc. Limit: 2,000,000 enqueued tokens. "
    "Please try again once some in_progress batches have been completed."
)


def failed(*codes: str, message: str = MESSAGE) -> dict:
    return {"status": "failed", "errors": {"data": [{"code": c, "message": message} for c in codes]}}


@pytest.mark.parametrize(
    ("batch", "full"),
    [
        (failed("token_limit_exceeded"), True),
        (failed("token_limit_exceeded", "token_limit_exceeded"), True),
        (failed("token_limit_exceeded", "invalid_json_line"), False),  # also a bad file: a real rejection
        (failed(), False),
        ({**failed("token_limit_exceeded"), "status": "completed"}, False),
        ({"status": "failed", "errors": None}, False),
    ],
)
def test_only_a_batch_failed_for_a_full_queue_alone_is_free(batch, full):
    assert is_queue_full(batch) is full


def test_the_limit_is_read_from_the_message():
    assert limit_in(failed("token_limit_exceeded")) == 2_000_000
    assert limit_in(failed("token_limit_exceeded", message="queue full")) is None


@pytest.mark.parametrize(
    ("batches", "learned"),
    [
        ([failed("token_limit_exceeded")], {"gpt-4o-mini": 2_000_000}),
        # newest first: the newest refusal of a model wins
        (
            [
                failed("token_limit_exceeded", message=MESSAGE.replace("2,000,000", "90,000")),
                failed("token_limit_exceeded"),
            ],
            {"gpt-4o-mini": 90_000},
        ),
        # no model in the message: the batch's, else any model
        (
            [{**failed("token_limit_exceeded", message="Limit: 5 enqueued tokens"), "model": "gpt-4o"}],
            {"gpt-4o": 5},
        ),
        ([failed("token_limit_exceeded", message="Limit: 5 enqueued tokens")], {"*": 5}),
        ([failed("token_limit_exceeded", "invalid_json_line")], {}),  # a real rejection teaches nothing
        ([failed("token_limit_exceeded", message="queue full")], {}),
        ([{"status": "completed"}], {}),
    ],
)
def test_a_refused_batch_teaches_its_models_limit(batches, learned):
    assert learned_limits(batches) == learned


def test_configured_limits_are_a_json_map_of_positive_tokens():
    assert configured_limits('{"gpt-4o-mini": 2000000, "*": 90000}') == {
        "gpt-4o-mini": 2_000_000,
        "*": 90_000,
    }
    assert configured_limits("") == {} and configured_limits(None) == {}
    for bad in ('{"gpt-4o": 0}', '{"gpt-4o": "9"}', "[1]", "nope"):
        with pytest.raises(ValueError, match="enqueued_token_limits"):
            configured_limits(bad)


def test_queue_state_waits_in_shard_order_and_round_trips():
    queue = QueueState(limit=100)
    queue.wait(["2/3", "0/3"], now=10.0)
    queue.wait(["1/3"], now=20.0)
    assert queue.waiting == ["0/3", "1/3", "2/3"] and queue.since == 10.0
    assert queue.deadline(queue_timeout=60, task_deadline=None) == 70.0
    assert queue.deadline(queue_timeout=60, task_deadline=50.0) == 50.0
    assert QueueState.from_json(queue.to_json()) == queue
    queue.admitted(["0/3", "1/3", "2/3"])
    assert queue.waiting == [] and queue.since is None


def test_the_log_line_names_model_limit_shard_and_size():
    queue = QueueState(limit=2_000_000, tokens={"2/5": 380_000})
    line = describe("gpt-4o-mini", queue, ["2/5"])
    assert line == "gpt-4o-mini queue full: limit 2,000,000 tokens; shard 3/5 of 380,000 tokens waits"
    assert describe("m", QueueState(), ["r1.0/2", "r1.1/2"]) == (
        "m queue full: limit not known yet; round 1 shard 1/2, round 1 shard 2/2 wait"
    )


def page(*batches: tuple[str, str, int]) -> list[dict]:
    return [{"id": i, "status": s, "model": "m", "usage": {"input_tokens": t}} for i, s, t in batches]


def test_a_departure_is_a_batch_seen_running_then_not():
    watch = RoomWatch()
    assert watch.observe(page(("a", "in_progress", 0), ("b", "validating", 0))) == {}
    assert watch.holds("m") == 2
    # b was refused while validating: it never held room, so it frees none.
    assert watch.observe(page(("a", "completed", 700), ("b", "failed", 0))) == {"m": [700]}
    assert watch.holds("m") == 0


def test_a_holder_missing_from_three_looks_in_a_row_is_taken_to_have_left():
    # Pushed past the pages a look reads: without this rule it would hold the queue in the watch for ever.
    watch = RoomWatch()
    watch.observe(page(("a", "in_progress", 0), ("v", "validating", 0)))
    assert watch.observe(page(("a", "in_progress", 0))) == {}  # v missing once
    assert watch.observe([]) == {}  # a once, v twice
    assert watch.observe([]) == {}  # v three times: gone, but it never ran, so it frees nothing
    assert watch.holds("m") == 1
    assert watch.observe([]) == {"m": [None]}  # a three times: it ran, size unknown
    assert watch.holds("m") == 0


def test_a_holder_that_shows_again_starts_its_count_over():
    watch = RoomWatch()
    watch.observe(page(("a", "in_progress", 0)))
    watch.observe([])
    watch.observe([])
    watch.observe(page(("a", "in_progress", 0)))
    watch.observe([])
    assert watch.observe([]) == {} and watch.holds("m") == 1


def request(date: str, shard: int, tokens: int, not_before: float = 0.0) -> RoomRequest:
    return RoomRequest(model="m", tokens=tokens, limit=1000, order=(date, shard), not_before=not_before)


def test_admission_goes_in_order_up_to_the_room_that_left():
    waiting = [request("2026-11-03", 0, 300), request("2026-11-01", 1, 300), request("2026-11-01", 0, 300)]
    admission = Admission()
    assert admission.admit(waiting, freed=[], holders=2, now=0) == []  # nothing left: nobody goes
    let_in = admission.admit(waiting, freed=[650], holders=1, now=0)
    assert [r.order for r in let_in] == [("2026-11-01", 0), ("2026-11-01", 1)]


def test_nobody_in_the_queue_lets_in_up_to_the_limit_and_the_head_is_never_overtaken():
    big, small = request("2026-11-01", 0, 900), request("2026-11-02", 0, 50)
    admission = Admission()
    assert admission.admit([small, big], freed=[], holders=0, now=0) == [big, small]
    assert Admission().admit([request("2026-11-01", 0, 2000), small], freed=[], holders=0, now=0) == []


def test_a_departure_of_unknown_size_lets_the_first_waiter_in_and_not_before_is_kept():
    first, later = request("2026-11-01", 0, 400, not_before=5.0), request("2026-11-02", 0, 400)
    assert Admission().admit([first, later], freed=[None], holders=1, now=0) == [later]
    assert Admission().admit([first, later], freed=[None], holders=1, now=10) == [first]


def test_a_shard_of_unknown_size_waits_for_a_departure_while_the_queue_is_held():
    unknown = request("2026-11-01", 0, 0)  # a follow-up round's shard: its prompt tokens are not counted
    assert Admission().admit([unknown], freed=[], holders=1, now=0) == []
    assert Admission().admit([unknown], freed=[None], holders=1, now=0) == [unknown]
    assert Admission().admit([unknown], freed=[], holders=0, now=0) == [unknown]


@pytest.mark.parametrize(
    ("looked", "live", "page", "seen", "pages", "expected"),
    [
        ("first look", {}, [("x", "in_progress")], {"x"}, 1, True),  # older ones may hold the queue too
        ("first look", {}, [("x", "completed")], {"x"}, 1, False),
        ("later look", {"h": "m"}, [("x", "completed")], {"x"}, 1, True),  # h must show to see it leave
        ("later look", {"h": "m"}, [("h", "in_progress")], {"h"}, 1, False),
        ("later look", {}, [("x", "in_progress")], {"x"}, 1, False),  # nothing known is missing
        ("later look", {"h": "m"}, [("x", "completed")], {"x"}, ROOM_MAX_PAGES, False),  # bounded
    ],
)
def test_a_look_for_room_reads_older_pages_while_a_queue_holder_has_not_shown(
    looked, live, page, seen, pages, expected
):
    watch = RoomWatch(live=dict(live), looked=looked == "later look")
    items = [{"id": i, "status": s} for i, s in page]
    assert watch.wants_more(items, set(seen), pages) is expected
