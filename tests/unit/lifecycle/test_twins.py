"""The twin rule as a table, and the ledger applying it where twins show: right after a create, and on attach."""

from __future__ import annotations

import logging

import pytest

from airflow_provider_openai_batch.lifecycle import twins
from airflow_provider_openai_batch.lifecycle.ledger import Ledger, Upload
from airflow_provider_openai_batch.lifecycle.record import STATE_KEY, RecordStore, SubmissionRecord
from airflow_provider_openai_batch.lifecycle.tags import TaskIdentity, build_metadata
from tests.support.builders import batch
from tests.support.fakes import FakeBatchHook, FakeStore

ME = TaskIdentity("daily", "run_batch", "scheduled__2026-11-01", -1, "2026-11-01T00:00:00+00:00")
OTHER = TaskIdentity("daily", "run_batch", "manual__2026-11-02", -1, "2026-11-01T00:00:00+00:00")
NOW = 2_000_000_000


def twin(bid, status="validating", at=NOW, identity=ME, completed=0, lbl="0/1", fp="fp"):
    return batch(
        bid,
        status,
        counts=(3, completed, 0),
        metadata=build_metadata(identity, fp, lbl, {}),
        created_at=at,
    )


# (case, batches, keep, cancel, paid twice)
RULE = [
    ("one batch: nothing to settle", [twin("a")], "a", (), ()),
    (
        "gateway made three: the oldest counts",
        [twin("c", at=NOW + 2), twin("a"), twin("b", at=NOW + 1)],
        "a",
        ("b", "c"),
        (),
    ),
    ("same second: the smaller id counts", [twin("z"), twin("y")], "y", ("z",), ()),
    ("a rejected oldest never counts", [twin("a", "failed"), twin("b", at=NOW + 1)], "b", (), ()),
    ("a stopped oldest yields to a live one", [twin("a", "cancelled"), twin("b", at=NOW + 1)], "b", (), ()),
    (
        "all stopped: the oldest counts",
        [twin("a", "cancelled"), twin("b", "cancelled", at=NOW + 1)],
        "a",
        (),
        (),
    ),
    (
        "a younger twin that ran is paid twice and stopped",
        [twin("a", "in_progress"), twin("b", "in_progress", at=NOW + 1)],
        "a",
        ("b",),
        ("b",),
    ),
    (
        "a completed twin is paid twice, nothing to cancel",
        [twin("a", "completed"), twin("b", "completed", at=NOW + 1, completed=3)],
        "a",
        (),
        ("b",),
    ),
    (
        "a twin cancelled while validating cost nothing",
        [twin("a", "completed"), twin("b", "cancelled", at=NOW + 1)],
        "a",
        (),
        (),
    ),
    (
        "a twin cancelled after it ran was paid",
        [twin("a", "completed"), twin("b", "cancelled", at=NOW + 1, completed=1)],
        "a",
        (),
        ("b",),
    ),
    (
        "another run's live twin is left to that run",
        [twin("a"), twin("b", at=NOW + 1, identity=OTHER)],
        "a",
        (),
        (),
    ),
    ("another run's older twin counts", [twin("b", at=NOW + 1), twin("a", identity=OTHER)], "a", ("b",), ()),
    ("all rejected: nothing counts", [twin("a", "failed")], None, (), ()),
]


@pytest.mark.parametrize(("case", "batches", "keep", "cancel", "paid"), RULE, ids=[r[0] for r in RULE])
def test_the_twin_rule(case, batches, keep, cancel, paid):
    settled = twins.settle(batches, ME.run_id)
    if keep is None:
        assert settled is None
        return
    assert settled.keep["id"] == keep
    assert settled.cancel == cancel
    assert tuple(e["batch_id"] for e in settled.paid_twice) == paid
    assert all(e["counted_batch_id"] == keep and e["label"] == "0/1" for e in settled.paid_twice)


def test_who_made_a_twin_is_named_for_what_it_is():
    assert twins.made_by(twin("a"), ME.run_id, answered="a") == "this try's create"
    assert (
        twins.made_by(twin("b"), ME.run_id, answered="a") == "a repeated create (gateway retry) of this run"
    )
    assert twins.made_by(twin("c", identity=OTHER), ME.run_id) == f"DAG run {OTHER.run_id!r}"


# ------------------------------------------------------------------------------ the ledger applying it
class GatewayHook(FakeBatchHook):
    """A create repeated by a gateway: ``extra`` more batches with the same tags, made just before the one
    answered (the answers of the earlier sends were lost)."""

    def __init__(self, extra: int, status: str = "validating") -> None:
        super().__init__()
        self.extra, self.status = extra, status

    def create_batch(self, **kwargs):
        for _ in range(self.extra):
            made = super().create_batch(**kwargs)
            made["status"] = self.status
        return super().create_batch(**kwargs)


def _create(hook, store=None):
    cancelled: list[str] = []
    led = Ledger(hook, RecordStore(store), ME, cancel=cancelled.extend, now=lambda: NOW)
    record = led.attach("fp", 1)
    led.upload(record, [Upload("0/1", __file__, "x.jsonl")])
    used = led.create(record, "0/1", user_metadata={}, endpoint="/v1/chat/completions")
    return record, used, cancelled


def test_a_gateway_that_made_three_keeps_the_oldest_and_cancels_both_others(caplog):
    hook, store = GatewayHook(extra=2), FakeStore()
    with caplog.at_level(logging.WARNING):
        record, used, cancelled = _create(hook, store)
    assert hook.creates == 3 and used["id"] == "batch_1" and cancelled == ["batch_2", "batch_3"]
    assert record.batches == {"0/1": "batch_1"} and record.adopted == [] and record.paid_twice == []
    assert store.values[STATE_KEY]["batches"] == {"0/1": "batch_1"}
    assert (
        "batch_3 (0/1, made by this try's create) repeats batch batch_1 (made by a repeated create "
        in caplog.text
    )
    assert "(gateway retry) of this run)" in caplog.text and "moments earlier" not in caplog.text


def test_a_gateway_twin_that_already_ran_is_reported_as_paid_twice(caplog):
    hook = GatewayHook(extra=1, status="in_progress")
    original = hook.create_batch

    def answered_late(**kwargs):  # the answered one ran too before its answer came back
        made = original(**kwargs)
        made["status"] = "in_progress"
        return made

    hook.create_batch = answered_late
    with caplog.at_level(logging.WARNING):
        record, used, cancelled = _create(hook)
    assert used["id"] == "batch_1" and cancelled == ["batch_2"]
    (entry,) = record.paid_twice
    assert (
        entry["batch_id"] == "batch_2" and entry["status"] == "in_progress" and entry["run_id"] == ME.run_id
    )
    assert "PAID TWICE" in caplog.text


def test_attach_without_the_record_settles_twins_the_search_finds():
    hook = FakeBatchHook()
    hook.add(twin("old", "completed", at=NOW - 60, completed=3))
    hook.add(twin("young", "completed", at=NOW - 59, completed=3))
    hook.add(twin("live", "validating", at=NOW - 58))
    cancelled: list[str] = []
    led = Ledger(hook, RecordStore(None), ME, cancel=cancelled.extend, now=lambda: NOW)
    record = led.attach("fp", 1)
    assert record.batches == {"0/1": "old"} and cancelled == ["live"]
    assert [e["batch_id"] for e in record.paid_twice] == ["young"]


def test_attach_with_an_intent_weighs_the_recorded_batch_among_its_twins():
    hook, store = FakeBatchHook(), FakeStore()
    hook.add(twin("older", "in_progress", at=NOW - 30))
    hook.add(twin("recorded", "validating", at=NOW - 29))
    store.set(
        STATE_KEY,
        SubmissionRecord(
            "fp", 1, batches={"0/1": "recorded"}, intent={"label": "1/1", "at": NOW - 40}
        ).to_json(),
    )
    cancelled: list[str] = []
    led = Ledger(hook, RecordStore(store), ME, cancel=cancelled.extend, now=lambda: NOW)
    assert led.attach("fp", 1).batches == {"0/1": "older"} and cancelled == ["recorded"]


def test_the_paid_twice_list_survives_the_record_round_trip():
    record = SubmissionRecord("fp", 1)
    record.note_paid_twice([{"batch_id": "b"}])
    record.note_paid_twice([{"batch_id": "b"}])
    assert SubmissionRecord.from_json(record.to_json()).paid_twice == [{"batch_id": "b"}]


def test_fresh_run_settles_a_gateways_repeats_of_this_create_but_ignores_earlier_batches():
    hook = GatewayHook(extra=1)
    hook.add(twin("earlier", "completed", at=NOW - 60, completed=3))  # what fresh_run means to ignore
    cancelled: list[str] = []
    led = Ledger(hook, RecordStore(None), ME, fresh_run=True, cancel=cancelled.extend, now=lambda: NOW)
    record = led.attach("fp", 1)
    led.upload(record, [Upload("0/1", __file__, "x.jsonl")])
    used = led.create(record, "0/1", user_metadata={}, endpoint="/v1/chat/completions")
    assert used["id"] == "batch_1" and cancelled == ["batch_2"] and record.batches == {"0/1": "batch_1"}


def test_fresh_run_ignores_an_earlier_batch_created_the_same_second():
    # A fast first run: its batch finished a second before the fresh run's create (CI saw it cancel its own).
    hook = GatewayHook(extra=0)
    hook.add(twin("earlier", "completed", at=NOW, completed=3))
    cancelled: list[str] = []
    led = Ledger(hook, RecordStore(None), ME, fresh_run=True, cancel=cancelled.extend, now=lambda: NOW)
    record = led.attach("fp", 1)
    led.upload(record, [Upload("0/1", __file__, "x.jsonl")])
    used = led.create(record, "0/1", user_metadata={}, endpoint="/v1/chat/completions")
    assert used["id"] == "batch_1" and cancelled == [] and record.batches == {"0/1": "batch_1"}
    assert record.paid_twice == []
