"""The submission ledger against an in-memory hook: what is paid for, what is re-attached, what is searched."""

from __future__ import annotations

import threading
import time

import pytest

from airflow_provider_openai_batch.exceptions import OpenAIBatchError, OpenAIBatchInputChanged
from airflow_provider_openai_batch.lifecycle.ledger import Ledger, Upload, search
from airflow_provider_openai_batch.lifecycle.record import STATE_KEY, RecordStore, SubmissionRecord
from airflow_provider_openai_batch.lifecycle.tags import (
    TAG_DAG,
    TAG_INPUT,
    TAG_KEY,
    TAG_RUN,
    TAG_TASK,
    TaskIdentity,
    build_metadata,
    check_user_metadata,
    label,
    parse_label,
)
from tests.support.builders import batch
from tests.support.fakes import FakeBatchHook, FakeStore, server_error

ME = TaskIdentity("daily", "run_batch", "scheduled__2026-11-01", -1, "2026-11-01T00:00:00+00:00")
OTHER_RUN = TaskIdentity("daily", "run_batch", "manual__2026-11-02", -1, "2026-11-01T00:00:00+00:00")
NOW = 2_000_000_000.0


def tagged(bid, identity=ME, fp="fp", lbl="0/1", status="in_progress", created_at=NOW - 60):
    return batch(bid, status, metadata=build_metadata(identity, fp, lbl, {}), created_at=int(created_at))


def ledger(hook, store=None, identity=ME, **kwargs):
    cancelled: list[str] = []
    led = Ledger(hook, RecordStore(store), identity, cancel=cancelled.extend, now=lambda: NOW, **kwargs)
    return led, cancelled


def test_labels_round_trip():
    assert (
        label(0, 2, 5) == "2/5"
        and label(1, 0, 2) == "r1.0/2"
        and label(2, 1, 3, include_cancelled=True) == "r2c.1/3"
    )
    assert parse_label("r2c.1/3") == parse_label(label(2, 1, 3, include_cancelled=True))
    assert parse_label("2/5").round == 0 and parse_label("garbage") is None


def test_partition_key_is_shared_across_runs_of_a_date_and_differs_across_dates():
    assert ME.partition_key == OTHER_RUN.partition_key
    other_date = TaskIdentity("daily", "run_batch", "scheduled__2026-11-02", -1, "2026-11-02T00:00:00+00:00")
    assert other_date.partition_key != ME.partition_key
    no_date = TaskIdentity("daily", "run_batch", "manual__x", -1, None)
    assert no_date.partition_key != TaskIdentity("daily", "run_batch", "manual__y", -1, None).partition_key


def test_metadata_readable_tags_yield_to_user_metadata():
    tags = build_metadata(ME, "fp", "0/1", {})
    assert tags[TAG_DAG] == "daily" and tags[TAG_TASK] == "run_batch" and tags[TAG_RUN] == ME.run_id
    full = build_metadata(ME, "fp", "0/1", {f"k{i}": "v" for i in range(12)})
    assert len(full) == 16 and TAG_DAG not in full and full[TAG_KEY] == ME.partition_key
    with pytest.raises(ValueError, match="at most 12"):
        check_user_metadata({f"k{i}": "v" for i in range(13)})
    with pytest.raises(ValueError, match="other than the operator's own"):
        check_user_metadata({TAG_INPUT: "x"})


def test_record_json_round_trip():
    record = SubmissionRecord("fp", 2, batches={"0/2": "a", "1/2": "b", "r1.0/1": "c"}, files={"0/2": "f"})
    assert SubmissionRecord.from_json(record.to_json()) == record
    assert record.rounds() == [["a", "b"], ["c"]]


def test_search_reaches_back_by_time_past_busy_pages():
    hook = FakeBatchHook()
    hook.add(tagged("ours", created_at=NOW - 3600))
    for i in range(450):  # other users' batches created after ours: four and a half pages of them
        hook.add(batch(f"other{i}", created_at=int(NOW - 10)))
    found = search(hook, key=ME.partition_key, since=NOW - 7200)
    assert [b["id"] for b in found] == ["ours"]
    assert hook.list_calls == 5


def test_search_stops_at_batches_older_than_since():
    hook = FakeBatchHook()
    for i in range(300):
        hook.add(batch(f"old{i}", created_at=int(NOW - 10_000)))
    hook.add(tagged("new", created_at=NOW))
    assert [b["id"] for b in search(hook, key=ME.partition_key, since=NOW - 100)] == ["new"]
    assert hook.list_calls == 1


def test_create_writes_intent_before_and_id_after():
    hook, store = FakeBatchHook(), FakeStore()
    led, _ = ledger(hook, store)
    record = led.attach("fp", 1)
    led.upload(record, [Upload("0/1", __file__, "x.jsonl")])
    seen_intent = {}
    original = hook.create_batch

    def create(**kwargs):
        seen_intent.update(store.values[STATE_KEY]["intent"] or {})
        return original(**kwargs)

    hook.create_batch = create
    made = led.create(record, "0/1", user_metadata={}, endpoint="/v1/chat/completions")
    assert seen_intent["label"] == "0/1"
    assert (
        store.values[STATE_KEY]["batches"] == {"0/1": made["id"]}
        and store.values[STATE_KEY]["intent"] is None
    )
    assert hook.uploads == 1 and hook.creates == 1
    # The same label again pays nothing.
    led.create(record, "0/1", user_metadata={}, endpoint="/v1/chat/completions")
    assert hook.creates == 1


def _three_uploads() -> list[Upload]:
    return [Upload(f"{i}/3", __file__, f"x-{i}.jsonl") for i in range(3)]


def test_uploads_run_at_once_and_the_record_is_written_by_the_calling_thread_only():
    # Each upload waits until three are under way: one at a time, the barrier would break.
    hook, store = FakeBatchHook(upload_gate=threading.Barrier(3, timeout=5)), FakeStore()
    led, _ = ledger(hook, store)
    record = led.attach("fp", 3)
    led.upload(record, _three_uploads(), concurrency=3)
    assert sorted(record.files) == ["0/3", "1/3", "2/3"] and hook.uploads == 3
    assert store.values[STATE_KEY]["files"] == record.files
    assert store.writers == {threading.current_thread().name}


def test_one_failed_upload_fails_the_step_and_the_retry_uploads_only_what_is_missing():
    # All three are under way when the middle one fails.
    hook = FakeBatchHook(
        upload_errors={"x-1.jsonl": server_error()}, upload_gate=threading.Barrier(3, timeout=5)
    )
    store = FakeStore()
    led, _ = ledger(hook, store)
    record = led.attach("fp", 3)
    with pytest.raises(type(server_error())):
        led.upload(record, _three_uploads(), concurrency=3)
    assert sorted(store.values[STATE_KEY]["files"]) == ["0/3", "2/3"]  # the others finished and count
    assert hook.creates == 0

    hook.upload_errors.clear()
    hook.upload_gate = None
    retry, _ = ledger(hook, store)
    again = retry.attach("fp", 3)
    retry.upload(again, _three_uploads(), concurrency=3)
    assert sorted(hook.uploaded[:2]) == ["x-0.jsonl", "x-2.jsonl"]  # the first try's
    assert hook.uploaded[2:] == ["x-1.jsonl"] and sorted(again.files) == ["0/3", "1/3", "2/3"]


def test_after_a_failed_upload_no_new_upload_starts():
    hook = FakeBatchHook(upload_errors={"x-0.jsonl": server_error()})
    led, _ = ledger(hook, FakeStore())
    record = led.attach("fp", 3)
    with pytest.raises(type(server_error())):
        led.upload(record, _three_uploads(), concurrency=1)
    assert hook.uploaded == [] and record.files == {}


def test_retry_with_a_record_reattaches_without_searching():
    hook, store = FakeBatchHook(), FakeStore()
    hook.add(tagged("b1"))
    store.set(STATE_KEY, SubmissionRecord("fp", 1, batches={"0/1": "b1"}).to_json())
    led, _ = ledger(hook, store)
    record = led.attach("fp", 1)
    assert record.batches == {"0/1": "b1"} and hook.list_calls == 0 and record.missing_shards() == []


def test_a_transient_read_error_fails_the_try_instead_of_paying_again():
    hook, store = FakeBatchHook(), FakeStore()
    hook.add(tagged("b1"))
    hook.read_errors["b1"] = server_error()
    store.set(STATE_KEY, SubmissionRecord("fp", 1, batches={"0/1": "b1"}).to_json())
    led, _ = ledger(hook, store)
    with pytest.raises(OpenAIBatchError, match="Not submitting anew"):
        led.attach("fp", 1)
    assert hook.creates == 0 and store.values[STATE_KEY]["batches"] == {"0/1": "b1"}


@pytest.mark.parametrize(("status", "kept"), [("failed", False), ("cancelled", True), ("expired", True)])
def test_recorded_batch_dropped_only_on_evidence(status, kept):
    hook, store = FakeBatchHook(), FakeStore()
    hook.add(tagged("b1", status=status))
    store.set(STATE_KEY, SubmissionRecord("fp", 1, batches={"0/1": "b1"}).to_json())
    led, _ = ledger(hook, store)
    assert (led.attach("fp", 1).batches == {"0/1": "b1"}) is kept


def test_a_recorded_batch_that_is_gone_404_is_dropped():
    hook, store = FakeBatchHook(), FakeStore()
    store.set(STATE_KEY, SubmissionRecord("fp", 1, batches={"0/1": "gone"}).to_json())
    led, _ = ledger(hook, store)
    assert led.attach("fp", 1).batches == {}


def test_intent_without_id_is_settled_by_search_from_the_intent():
    hook, store = FakeBatchHook(), FakeStore()
    hook.add(tagged("made", created_at=NOW - 30))
    store.set(STATE_KEY, SubmissionRecord("fp", 1, intent={"label": "0/1", "at": NOW - 40}).to_json())
    led, _ = ledger(hook, store)
    record = led.attach("fp", 1)
    assert record.batches == {"0/1": "made"} and record.intent is None and record.adopted == []


def test_another_run_of_the_same_date_with_identical_input_adopts_the_batch():
    hook = FakeBatchHook()
    hook.add(tagged("theirs", identity=ME))
    led, cancelled = ledger(hook, None, identity=OTHER_RUN)
    record = led.attach("fp", 1)
    assert record.batches == {"0/1": "theirs"} and record.adopted == ["theirs"]
    assert record.own_batch_ids() == [] and cancelled == [] and hook.creates == 0


def test_another_run_with_different_input_is_left_alone():
    hook = FakeBatchHook()
    hook.add(tagged("theirs", identity=ME, fp="old"))
    led, cancelled = ledger(hook, None, identity=OTHER_RUN)
    assert led.attach("new", 1).batches == {} and cancelled == []


@pytest.mark.parametrize("policy", ["resubmit", "fail"])
def test_changed_input_in_the_same_run_without_a_record_follows_on_input_change(policy):
    hook = FakeBatchHook()
    hook.add(tagged("stale", fp="old"))
    led, cancelled = ledger(hook, None, on_input_change=policy)
    if policy == "fail":
        with pytest.raises(OpenAIBatchInputChanged, match="stale"):
            led.attach("new", 1)
    else:
        assert led.attach("new", 1).batches == {} and cancelled == ["stale"]


@pytest.mark.parametrize("policy", ["resubmit", "fail"])
@pytest.mark.parametrize("with_record", [True, False], ids=["record", "no-record"])
def test_a_finished_batch_of_other_input_gets_the_same_answer_with_or_without_the_record(policy, with_record):
    hook, store = FakeBatchHook(), FakeStore()
    hook.add(tagged("done", fp="old", status="completed"))
    if with_record:
        store.set(STATE_KEY, SubmissionRecord("old", 1, batches={"0/1": "done"}).to_json())
    led, cancelled = ledger(hook, store, on_input_change=policy)
    if policy == "fail":
        with pytest.raises(OpenAIBatchInputChanged, match="done"):
            led.attach("new", 1)
    else:  # nothing to cancel: the new input is submitted
        record = led.attach("new", 1)
        assert record.batches == {} and record.missing_shards() == [0] and cancelled == []


def test_a_rejected_batch_of_other_input_is_no_input_change():
    hook = FakeBatchHook()
    hook.add(tagged("rejected", fp="old", status="failed"))
    led, cancelled = ledger(hook, None, on_input_change="fail")
    assert led.attach("new", 1).batches == {} and cancelled == []


def test_changed_input_with_a_record_cancels_only_batches_this_task_created():
    hook, store = FakeBatchHook(), FakeStore()
    hook.add(tagged("mine", fp="old"))
    hook.add(tagged("adopted", fp="old", identity=OTHER_RUN))
    store.set(
        STATE_KEY,
        SubmissionRecord("old", 2, batches={"0/2": "mine", "1/2": "adopted"}, adopted=["adopted"]).to_json(),
    )
    led, cancelled = ledger(hook, store)
    record = led.attach("new", 1)
    assert cancelled == ["mine"] and record.fingerprint == "new" and record.batches == {}


def test_fresh_run_neither_reads_the_record_nor_searches():
    hook, store = FakeBatchHook(), FakeStore()
    hook.add(tagged("b1"))
    store.set(STATE_KEY, SubmissionRecord("fp", 1, batches={"0/1": "b1"}).to_json())
    led, _ = ledger(hook, store, fresh_run=True)
    assert led.attach("fp", 1).batches == {} and hook.list_calls == 0


def test_without_a_state_store_the_tags_alone_reattach():
    hook = FakeBatchHook()
    hook.add(tagged("b0", lbl="0/2"))
    hook.add(tagged("r", lbl="r1.0/1", status="completed"))
    led, _ = ledger(hook, None)
    record = led.attach("fp", 2)
    assert record.batches == {"0/2": "b0", "r1.0/1": "r"} and record.missing_shards() == [1]


def test_shards_of_another_sharding_are_not_mixed_in():
    hook = FakeBatchHook()
    hook.add(tagged("b0", lbl="0/3"))
    led, _ = ledger(hook, None)
    assert led.attach("fp", 2).batches == {}


def _created(led, hook, store):
    record = led.attach("fp", 1)
    led.upload(record, [Upload("0/1", __file__, "x.jsonl")])
    return record, led.create(record, "0/1", user_metadata={}, endpoint="/v1/chat/completions")


def test_two_runs_creating_at_once_keep_the_older_batch_and_cancel_the_younger():
    hook, store = FakeBatchHook(), FakeStore()
    led, cancelled = ledger(hook, store)
    original = hook.create_batch

    def the_other_run_was_faster(**kwargs):
        hook.add(tagged("theirs", identity=OTHER_RUN, status="validating", created_at=NOW - 1))
        return original(**kwargs)

    hook.create_batch = the_other_run_was_faster
    record, used = _created(led, hook, store)
    assert used["id"] == "theirs" and cancelled == ["batch_1"]
    assert (
        record.batches == {"0/1": "theirs"} and record.adopted == ["theirs"] and record.own_batch_ids() == []
    )
    assert store.values[STATE_KEY]["batches"] == {"0/1": "theirs"}


def test_the_older_of_two_racing_batches_keeps_its_own():
    hook, store = FakeBatchHook(), FakeStore()
    led, cancelled = ledger(hook, store)
    original = hook.create_batch

    def the_other_run_came_second(**kwargs):
        made = original(**kwargs)
        hook.add(tagged("theirs", identity=OTHER_RUN, status="validating", created_at=made["created_at"] + 1))
        return made

    hook.create_batch = the_other_run_came_second
    record, used = _created(led, hook, store)
    assert used["id"] == "batch_1" and cancelled == [] and record.adopted == []


@pytest.mark.parametrize("status", ["failed", "cancelled", "cancelling"])
def test_a_stopped_or_rejected_twin_is_no_reason_to_yield(status):
    hook, store = FakeBatchHook(), FakeStore()
    led, cancelled = ledger(hook, store)
    original = hook.create_batch

    def a_stopped_twin_appears(**kwargs):
        hook.add(tagged("theirs", identity=OTHER_RUN, status=status, created_at=NOW - 1))
        return original(**kwargs)

    hook.create_batch = a_stopped_twin_appears
    _, used = _created(led, hook, store)
    assert used["id"] == "batch_1" and cancelled == []


QUEUE_FULL = {
    "data": [
        {
            "code": "token_limit_exceeded",
            "message": "Enqueued token limit reached for gpt-4o-mini in organization org-1. Limit: 90,000 enqueued "
            "tokens. Please try again once some in_progress batches have been completed.",
        }
    ]
}


def test_a_limit_is_learned_from_the_record_without_searching():
    hook, store = FakeBatchHook(), FakeStore()
    store.set(STATE_KEY, SubmissionRecord("fp", 1, queue_limits={"gpt-4o-mini": 7}).to_json())
    led, _ = ledger(hook, store)
    assert led.learned_queue_limits() == {"gpt-4o-mini": 7} and hook.list_calls == 0


def test_without_a_record_a_limit_is_learned_from_a_refused_batch_and_attach_reuses_that_search_once():
    hook = FakeBatchHook()
    hook.add({**tagged("refused", status="failed"), "errors": QUEUE_FULL})
    hook.add(tagged("b0", lbl="0/2"))
    led, _ = ledger(hook, None)
    assert led.learned_queue_limits() == {"gpt-4o-mini": 90_000}
    searches = hook.list_calls
    record = led.attach("fp", 2)
    assert hook.list_calls == searches and record.batches == {"0/2": "b0"}  # the refusal never counts
    led.attach(
        "fp", 2
    )  # a later attach (a re-cut in the same try) searches again: batches were created since
    assert hook.list_calls > searches


def test_a_fresh_run_without_a_record_learns_nothing_and_does_not_search():
    hook = FakeBatchHook()
    hook.add({**tagged("refused", status="failed"), "errors": QUEUE_FULL})
    led, _ = ledger(hook, None, fresh_run=True)
    assert led.learned_queue_limits() == {} and hook.list_calls == 0


def test_a_search_older_than_the_reuse_window_is_made_again():
    hook, clock = FakeBatchHook(), [NOW]
    hook.add(tagged("b0", lbl="0/1"))
    led = Ledger(hook, RecordStore(None), ME, now=lambda: clock[0])
    led.learned_queue_limits()
    searches = hook.list_calls
    clock[0] += 61  # reading the input took a minute: another run may have created a batch meanwhile
    assert led.attach("fp", 1).batches == {"0/1": "b0"} and hook.list_calls > searches


class _SaveFails(FakeStore):
    """A store whose save raises once a record holds a file id: the calling thread stops mid-upload."""

    def set(self, key, value):
        if value.get("files"):
            raise KeyboardInterrupt  # as a task timeout's signal would, in the thread saving the record
        super().set(key, value)


class _SlowAfterFirst(FakeBatchHook):
    """Uploads after the first take 0.3 s: the interrupt reaches the saving thread while the second runs."""

    def upload_file(self, **kwargs):
        if self.uploads:
            time.sleep(0.3)
        return super().upload_file(**kwargs)


def test_an_interrupted_upload_starts_no_more_uploads():
    hook = _SlowAfterFirst()
    led, _ = ledger(hook, _SaveFails())
    record = led.attach("fp", 3)
    with pytest.raises(KeyboardInterrupt):
        led.upload(record, _three_uploads(), concurrency=1)
    # The first finished; the second may have started before the interrupt; the third never starts.
    assert 1 <= len(hook.uploaded) <= 2, hook.uploaded
