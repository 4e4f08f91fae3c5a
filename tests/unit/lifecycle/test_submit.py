"""submit.py as tables: what an input spools to (or why it is refused), the budget, and that each shard is uploaded
once and each label paid for once, first round or follow-up, against the real ledger over an in-memory hook.
"""

from __future__ import annotations

import json

import pytest

from airflow_provider_openai_batch.exceptions import OpenAIBatchCostExceeded, OpenAIBatchInputError
from airflow_provider_openai_batch.lifecycle import submit
from airflow_provider_openai_batch.lifecycle.ledger import Ledger
from airflow_provider_openai_batch.lifecycle.record import RecordStore, SubmissionRecord
from airflow_provider_openai_batch.lifecycle.state import RunState
from airflow_provider_openai_batch.lifecycle.tags import TaskIdentity, label
from airflow_provider_openai_batch.requests_input.shards import Limits
from tests.support import builders
from tests.support.builders import ENDPOINT, batch, http_error_line, jsonl
from tests.support.fakes import FakeBatchHook, FakeStore

ME = TaskIdentity("daily", "run_batch", "scheduled__2026-11-01", -1, "2026-11-01T00:00:00+00:00")
MODEL = "gpt-4o-mini"


def request(cid: str) -> dict:
    return builders.request(cid, model=MODEL, content=cid)


def job(**kwargs) -> submit.Job:
    kwargs.setdefault("requests", [request("a"), request("b"), request("c")])
    return submit.Job(task_id="run_batch", endpoint=ENDPOINT, **kwargs)


def new_ledger(hook: FakeBatchHook) -> Ledger:
    return Ledger(hook, RecordStore(FakeStore()), ME, cancel=lambda ids: None, now=lambda: 2_000_000_000.0)


# ------------------------------------------------------------------------------------------ read_input
def write(tmp_path, rows: list) -> str:
    path = tmp_path / "in.jsonl"
    path.write_bytes(b"".join(r if isinstance(r, bytes) else json.dumps(r).encode() + b"\n" for r in rows))
    return str(path)


READ = [
    # (name, job arguments from tmp_path, requests spooled, shards, or the error's fragments)
    ("a file", lambda t: {"input_path": write(t, [request("a"), request("b")]), "requests": None}, 2, 1),
    ("an iterable", lambda t: {}, 3, 1),
    ("a callable that makes them", lambda t: {"requests": lambda: iter([request("x")])}, 1, 1),
    ("shards under the limits", lambda t: {"limits": Limits(max_requests=2, safety_margin=1.0)}, 3, 2),
    (
        "a bad line names the file, the line and the field",
        lambda t: {"input_path": write(t, [request("a"), {"custom_id": "b"}]), "requests": None},
        None,
        ["in.jsonl", "line 2", "method"],
    ),
    (
        "a repeated custom_id is refused",
        lambda t: {"requests": [request("a"), request("a")]},
        None,
        ["custom_id", "'a'"],
    ),
    (
        "a missing file",
        lambda t: {"input_path": str(t / "missing.jsonl"), "requests": None},
        None,
        ["missing"],
    ),
]


@pytest.mark.parametrize(("arguments", "requests", "shards"), [r[1:] for r in READ], ids=[r[0] for r in READ])
def test_read_input(tmp_path, arguments, requests, shards):
    the_job = job(**arguments(tmp_path))
    work = tmp_path / "work"
    if requests is None:
        with pytest.raises((OpenAIBatchInputError, FileNotFoundError)) as info:
            submit.read_input(the_job, str(work))
        for fragment in shards:
            assert fragment in str(info.value)
        return
    spool = submit.read_input(the_job, str(work))
    assert (spool.total_requests, len(spool.shards), spool.model) == (requests, shards, MODEL)


def test_source_name_says_where_the_requests_came_from():
    assert (
        job(input_path="s3://conn@bucket/in.jsonl", requests=None).source_name == "s3://conn@bucket/in.jsonl"
    )
    assert job().source_name == "<requests of task run_batch>"


# ----------------------------------------------------------------------------------------- check_budget
BUDGET = [
    # (name, max_cost_usd, shards to create, refused)
    ("no budget", None, True, False),
    ("nothing left to create", 0.0, False, False),
    ("within the budget", 1000.0, True, False),
    ("over the budget", 1e-12, True, True),
]


@pytest.mark.parametrize(
    ("budget", "any_shards", "refused"), [b[1:] for b in BUDGET], ids=[b[0] for b in BUDGET]
)
def test_check_budget(tmp_path, budget, any_shards, refused):
    spool = submit.read_input(job(), str(tmp_path))
    shards = spool.shards if any_shards else []
    if refused:
        with pytest.raises(OpenAIBatchCostExceeded):
            submit.check_budget(job(), shards, MODEL, budget)
    else:
        submit.check_budget(job(), shards, MODEL, budget)


# ------------------------------------------------------------------------------------- upload and create
def test_each_shard_is_uploaded_once_and_each_label_paid_for_once(tmp_path):
    hook = FakeBatchHook()
    ledger, the_job = (
        new_ledger(hook),
        job(limits=Limits(max_requests=2, safety_margin=1.0), metadata={"team": "x"}),
    )
    spool = submit.read_input(the_job, str(tmp_path))
    record = ledger.attach(spool.fingerprint[:32], len(spool.shards))
    for _ in range(2):  # a second try of the same steps pays and uploads nothing more
        submit.upload_shards(the_job, ledger, record, spool.shards, len(spool.shards))
        submit.create(the_job, ledger, record, [label(0, 0, 2), label(0, 1, 2)])
    assert (hook.uploads, hook.creates) == (2, 2)
    assert sorted(record.files) == sorted(record.batches) == ["0/2", "1/2"]
    assert all(b["metadata"]["team"] == "x" for b in hook.batches)


# -------------------------------------------------------------------------------------------- resubmit
RESUBMIT = [
    # (name, error lines of round 0, include_cancelled, requests sent again, or None for no round)
    ("nothing worth sending again", [http_error_line(400, "a")], False, None),
    (
        "rate limits and server errors go again",
        [http_error_line(429, "a"), http_error_line(500, "c")],
        False,
        2,
    ),
    (
        "a cancelled request only after a cancel",
        [builders.batch_error_line("batch_cancelled", "b")],
        False,
        None,
    ),
    ("after a cancel, the cancelled ones too", [builders.batch_error_line("batch_cancelled", "b")], True, 1),
]


@pytest.mark.parametrize(
    ("errors", "cancelled", "resent"), [r[1:] for r in RESUBMIT], ids=[r[0] for r in RESUBMIT]
)
def test_resubmit_round(tmp_path, errors, cancelled, resent):
    hook = FakeBatchHook()
    first = batch("b0", counts=(3, 3 - len(errors), len(errors)), input_file_id="in-0")
    hook.add(first)
    hook.files = {
        "in-0": jsonl(request("a"), request("b"), request("c")),
        first["error_file_id"]: jsonl(*errors),
    }
    ledger = new_ledger(hook)
    state = RunState(record=SubmissionRecord("fp", 1, batches={"0/1": "b0"}), deadline=None)

    made = submit.resubmit_round(job(), hook, ledger, state, cancelled)

    assert made is (resent is not None)
    if resent is None:
        assert (hook.uploads, hook.creates) == (0, 0) and state.rounds == [["b0"]]
        return
    assert (hook.uploads, hook.creates) == (1, 1)
    [new_label] = [lbl for lbl in state.record.batches if lbl != "0/1"]
    assert new_label == label(1, 0, 1, include_cancelled=cancelled)
    assert len(state.rounds) == 2


# ------------------------------------------------------------------------------------ upload concurrency
def test_upload_concurrency_defaults_to_the_provider_info_and_comes_from_the_configuration(monkeypatch):
    from airflow_provider_openai_batch.get_provider_info import get_provider_info

    declared = get_provider_info()["config"]["openai_batch"]["options"][submit.UPLOAD_CONCURRENCY_OPTION]
    assert (
        int(declared["default"])
        == submit.DEFAULT_UPLOAD_CONCURRENCY
        == submit.configured_upload_concurrency()
    )
    monkeypatch.setenv("AIRFLOW__OPENAI_BATCH__UPLOAD_CONCURRENCY", "7")
    assert submit.configured_upload_concurrency() == 7
    monkeypatch.setenv("AIRFLOW__OPENAI_BATCH__UPLOAD_CONCURRENCY", "0")
    with pytest.raises(ValueError, match="Expected a positive integer .* but received 0"):
        submit.configured_upload_concurrency()
