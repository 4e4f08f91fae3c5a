"""RunState's round trip through the trigger's context, including contexts written by version 0.1."""

from __future__ import annotations

import json

from airflow_provider_openai_batch.lifecycle.ledger import SubmissionRecord
from airflow_provider_openai_batch.lifecycle.state import Phase, RunState


def test_round_trip_through_json():
    record = SubmissionRecord(
        "fp", 2, batches={"0/2": "a", "1/2": "b", "r1c.0/1": "c"}, files={"0/2": "f0"}, adopted=["b"]
    )
    state = RunState(record, phase=Phase.CANCELLING, deadline=123.5, model="gpt-4o-mini")
    back = RunState.from_context(json.loads(json.dumps(state.to_context())))
    assert back == state
    assert back.rounds == [["a", "b"], ["c"]] and back.current == ["c"] and back.follow_ups == 1
    assert back.round_includes_cancelled(1) and not back.round_includes_cancelled(0)


def test_a_context_written_by_version_01_still_resumes():
    old = {
        "phase": "timed_out",
        "shards": 3,
        "deadline": 99.0,
        "fingerprint": "f" * 32,
        "rounds": [["a", "b"], ["c"]],
    }
    state = RunState.from_context(old)
    assert state.phase is Phase.CANCELLING and state.deadline == 99.0
    assert state.rounds == [["a", "b"], ["c"]] and state.record.missing_shards() == [2]


def test_an_event_without_context_falls_back_to_its_batch_ids_and_none_without_either():
    assert RunState.from_context(None, ["x"]).current == ["x"]
    assert RunState.from_context({}, None) is None
