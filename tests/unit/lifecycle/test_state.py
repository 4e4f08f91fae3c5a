"""RunState's round trip through the trigger's context."""

from __future__ import annotations

import json

from airflow_provider_openai_batch.lifecycle.record import SubmissionRecord
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


def test_a_context_this_version_did_not_write_is_none():
    assert RunState.from_context(None) is None and RunState.from_context({}) is None
    assert RunState.from_context({"version": 2, "record": {"fingerprint": "fp"}}) is None
