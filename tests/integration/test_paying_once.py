"""Issue 8's seven ways the first version paid twice or corrupted a landed file, each run through Airflow
(``dag.test()`` with real deferral) against the emulator over HTTP (moto_server for S3). Every test counts the paid
creates in the emulator's journal and checks that every custom_id lands exactly once.
"""

from __future__ import annotations

import json
import time
from typing import Any

import httpx2
import openai
import pytest

from airflow_provider_openai_batch import storage
from airflow_provider_openai_batch.emulator.testing import wait_for
from airflow_provider_openai_batch.hooks import clients as clients_module
from airflow_provider_openai_batch.lifecycle.tags import TAG_RUN
from airflow_provider_openai_batch.operators.openai_batch import OpenAIBatchOperator
from tests.support.assertions import assert_each_custom_id_once, assert_paid, read_jsonl
from tests.support.builders import write_input
from tests.support.environment import connected_emulator, dag_env, has_task_state_store
from tests.support.journal import api_client
from tests.support.operator_runs import configure_outcome_dag
from tests.support.transports import LoseFirstCreateAnswer

pytestmark = pytest.mark.integration

DAG_ID, GEN_DAG, DATE = "reliability_batch", "openai_batch_outcome_generator", "2026-11-01"


@pytest.fixture
def emulator(openai_emulator, monkeypatch):
    yield from connected_emulator(openai_emulator, monkeypatch, timeout=10)


@pytest.fixture
def job(tmp_path, monkeypatch):
    """Six requests in a local file, landing in tmp/out/DATE; returns (ids, input path, results folder)."""
    ids = [f"req-{i}" for i in range(6)]
    source = write_input(tmp_path / "input.jsonl", ids)
    use_dag(monkeypatch, source, tmp_path / "out")
    return ids, source, tmp_path / "out" / DATE


def use_dag(monkeypatch, source: Any, output: Any, **env: Any) -> None:
    dag_env(monkeypatch, "RELIABILITY", input=source, output=output, **env)


def test_1_lost_create_answer_in_a_busy_organisation_is_found_by_time(run_dag, emulator, job, monkeypatch):
    ids, _, folder = job
    # Meanwhile, other users create two and a half pages of newer batches.
    transport = LoseFirstCreateAnswer(on_lost=lambda: emulator.seed_batches(250, status="completed"))
    transport.install(monkeypatch)

    outcome = run_dag(DAG_ID, DATE)

    assert outcome.state == "success", outcome.ti_states()
    assert assert_paid(emulator, 1) == transport.lost
    assert outcome.xcoms[("run_batch", "return_value")]["batch_id"] == transport.lost[0]
    assert len([c for c in emulator.calls("GET", "/v1/batches") if c["path"] == "/v1/batches"]) >= 3
    assert_each_custom_id_once(folder, ids)


def _crash_once_before_waiting(monkeypatch) -> list[int]:
    crashes: list[int] = []
    original = OpenAIBatchOperator.defer

    def crash_once(self, *args: Any, **kwargs: Any) -> None:
        if not crashes:
            crashes.append(1)
            raise RuntimeError("worker lost after the batch was created")
        original(self, *args, **kwargs)

    monkeypatch.setattr(OpenAIBatchOperator, "defer", crash_once)
    return crashes


NEEDS_RECORD = pytest.mark.skipif(
    not has_task_state_store(), reason="no task state store before Airflow 3.3: no batch is recorded to read"
)


@NEEDS_RECORD
def test_2_a_transient_error_reading_the_recorded_batch_is_retried(run_dag, emulator, job, monkeypatch):
    ids, _, folder = job
    _crash_once_before_waiting(monkeypatch)
    assert run_dag(DAG_ID, DATE).state == "failed"
    (paid,) = assert_paid(emulator, 1)
    emulator.seed_batches(250)  # the recorded batch is far down the list: only the record finds it
    emulator.add_fault(method="GET", path=f"/v1/batches/{paid}", status=500, times=1)

    outcome = run_dag(DAG_ID, DATE, clear=True)

    assert outcome.state == "success", outcome.ti_states()
    assert [c["status"] for c in emulator.calls("GET", f"/v1/batches/{paid}")][:2] == [500, 200]
    assert_paid(emulator, 1)
    assert_each_custom_id_once(folder, ids)


@NEEDS_RECORD
def test_2_a_lasting_read_error_fails_the_try_instead_of_paying_again(
    run_dag, emulator, job, monkeypatch, capfd
):
    ids, _, folder = job
    _crash_once_before_waiting(monkeypatch)
    assert run_dag(DAG_ID, DATE).state == "failed"
    (paid,) = assert_paid(emulator, 1)
    emulator.add_fault(method="GET", path=f"/v1/batches/{paid}", status=503, times=None)

    assert run_dag(DAG_ID, DATE, clear=True).state == "failed"
    out, err = capfd.readouterr()
    assert f"Could not read batch {paid}" in out + err and "Not submitting anew" in out + err
    assert_paid(emulator, 1)

    emulator.clear_faults()
    outcome = run_dag(DAG_ID, DATE, clear=True)
    assert outcome.state == "success", outcome.ti_states()
    assert_paid(emulator, 1)
    assert_each_custom_id_once(folder, ids)


@pytest.mark.parametrize("deferrable", [True, False], ids=["deferred", "in-place"])
def test_3_a_generator_with_waves_is_read_once_and_uploaded_once(
    run_dag, emulator, tmp_path, monkeypatch, deferrable
):
    out, calls = tmp_path / "out", tmp_path / "calls.txt"
    spec = {
        "n": 25,
        "output_path": str(out),
        "prefix": "gen",
        "limits": {"max_requests": 11},  # 10 requests a shard: 3 shards
        "max_shards_in_flight": 1,
        "deferrable": deferrable,
        "calls_file": str(calls),
    }
    monkeypatch.setenv("OPENAI_BATCH_OUTCOME_GEN", json.dumps(spec))

    outcome = run_dag(GEN_DAG, DATE)

    assert outcome.state == "success", outcome.ti_states()
    assert calls.read_text().count("called") == 1  # generated once, not once per wave
    assert len(assert_paid(emulator, 3)) == 3
    assert len(emulator.calls("POST", "/v1/files", status=200)) == 3  # each shard uploaded once
    assert_each_custom_id_once(out, [f"gen-{i:06d}" for i in range(25)])


def test_3_an_input_file_with_waves_is_read_once(run_dag, emulator, tmp_path, monkeypatch):
    ids = [f"w-{i}" for i in range(25)]
    source = write_input(tmp_path / "input.jsonl", ids)
    configure_outcome_dag(
        monkeypatch,
        input_path=str(source),
        output_path=str(tmp_path / "out"),
        limits={"max_requests": 11},
        max_shards_in_flight=1,
    )
    opened: list[str] = []
    original = storage.open_input
    monkeypatch.setattr(storage, "open_input", lambda url: opened.append(str(url)) or original(url))

    outcome = run_dag("openai_batch_outcome", DATE)

    assert outcome.state == "success", outcome.ti_states()
    assert opened == [str(source)]
    assert_paid(emulator, 3)
    assert_each_custom_id_once(tmp_path / "out", ids)


def test_4_parts_without_a_final_newline_never_glue_two_records(run_dag, emulator, tmp_path, monkeypatch):
    emulator.configure(final_newline=False)
    ids = [f"nl-{i}" for i in range(25)]
    source = write_input(tmp_path / "input.jsonl", ids, failing={"nl-3": 500, "nl-17": 400})
    configure_outcome_dag(
        monkeypatch,
        input_path=str(source),
        output_path=str(tmp_path / "out"),
        limits={"max_requests": 11},
        max_failed_ratio=0.5,
    )

    outcome = run_dag("openai_batch_outcome", DATE)

    assert outcome.state == "success", outcome.ti_states()
    assert_paid(emulator, 3)
    out = tmp_path / "out"
    assert len(read_jsonl(out / "output.jsonl")) == 23 and len(read_jsonl(out / "errors.jsonl")) == 2
    result = outcome.xcoms[("run_batch", "return_value")]
    assert (result["output_lines"], result["error_lines"]) == (23, 2)
    assert_each_custom_id_once(out, ids, failed={"nl-3", "nl-17"})


def test_5_an_output_bucket_that_does_not_exist_fails_before_paying(
    run_dag, emulator, job, monkeypatch, moto_s3, capfd
):
    url = f"s3://{moto_s3['conn_id']}@no-such-bucket-here/results"
    use_dag(monkeypatch, job[1], url)

    assert run_dag(DAG_ID, DATE).state == "failed"

    out, err = capfd.readouterr()
    assert f"{url}/{DATE}" in out + err and "OpenAIBatchStorageError" in out + err
    assert emulator.calls("POST", "/v1/files") == []  # nothing uploaded
    assert_paid(emulator, 0)


@pytest.mark.parametrize("policy", ["resubmit", "fail"])
def test_6_a_changed_input_without_the_record_is_held_to_on_input_change(
    run_dag, emulator, job, tmp_path, monkeypatch, policy
):
    ids, source, folder = job
    emulator.configure(validating_seconds=60)  # the first batch stays live
    _crash_once_before_waiting(monkeypatch)
    assert run_dag(DAG_ID, DATE).state == "failed"
    (stale,) = assert_paid(emulator, 1)
    emulator.configure(validating_seconds=0)
    new_ids = [f"new-{i}" for i in range(4)]
    write_input(source, new_ids)
    monkeypatch.setenv("RELIABILITY_ON_INPUT_CHANGE", policy)

    outcome = run_dag(DAG_ID, DATE)  # a recreated run: the task state store is gone

    cancels = emulator.calls("POST", f"/v1/batches/{stale}/cancel")
    if policy == "fail":
        assert outcome.state == "failed" and cancels == []
        assert_paid(emulator, 1)
    else:
        assert outcome.state == "success", outcome.ti_states()
        assert len(cancels) == 1
        assert_paid(emulator, 2)
        assert_each_custom_id_once(folder, new_ids)


@pytest.mark.parametrize("policy", ["resubmit", "fail"])
@pytest.mark.parametrize("record", [pytest.param("kept", marks=NEEDS_RECORD), "lost"])
def test_6_a_finished_batch_of_other_input_gets_the_same_answer_with_or_without_the_record(
    run_dag, emulator, job, monkeypatch, capfd, policy, record
):
    ids, source, folder = job
    _crash_once_before_waiting(monkeypatch)
    assert run_dag(DAG_ID, DATE).state == "failed"
    (stale,) = assert_paid(emulator, 1)
    wait_for(lambda: api_client(emulator).batches.retrieve(stale).status == "completed", timeout=30)
    new_ids = [f"new-{i}" for i in range(4)]
    write_input(source, new_ids)
    monkeypatch.setenv("RELIABILITY_ON_INPUT_CHANGE", policy)

    outcome = run_dag(DAG_ID, DATE, clear=record == "kept")  # a clear keeps the record; a new run has none

    assert emulator.calls("POST", f"/v1/batches/{stale}/cancel") == []  # finished: nothing to cancel
    if policy == "fail":
        out, err = capfd.readouterr()
        assert outcome.state == "failed" and "OpenAIBatchInputChanged" in out + err and stale in out + err
        assert_paid(emulator, 1)
    else:
        assert outcome.state == "success", outcome.ti_states()
        assert_paid(emulator, 2)
        assert_each_custom_id_once(folder, new_ids)


def test_7_a_second_run_of_the_same_date_with_identical_input_pays_nothing(run_dag, emulator, job):
    ids, _, folder = job
    first = run_dag(DAG_ID, DATE)
    assert first.state == "success"

    second = run_dag(DAG_ID, DATE, run_after="2026-11-05T10:00:00+00:00")  # a new run, not a clear

    assert second.state == "success", second.ti_states()
    assert second.run.run_id != first.run.run_id
    (paid,) = assert_paid(emulator, 1)
    assert second.xcoms[("run_batch", "return_value")]["batch_id"] == paid
    assert_each_custom_id_once(folder, ids)


def test_7_fresh_run_opts_out_of_reuse_across_runs(run_dag, emulator, job, monkeypatch):
    ids, _, folder = job
    assert run_dag(DAG_ID, DATE).state == "success"
    monkeypatch.setenv("RELIABILITY_FRESH_RUN", "1")

    assert run_dag(DAG_ID, DATE, run_after="2026-11-05T10:00:00+00:00").state == "success"

    assert_paid(emulator, 2)
    assert_each_custom_id_once(folder, ids)


class _AnotherRunCreatesFirst(httpx2.HTTPTransport):
    """Real HTTP to the emulator; just before this task's first ``POST /v1/batches``, another DAG run of the same
    date posts the same batch (its own run id in the tags): two runs that started in the same moment."""

    def __init__(self) -> None:
        super().__init__()
        self.theirs: list[str] = []

    def handle_request(self, request: httpx2.Request) -> httpx2.Response:
        if request.method == "POST" and request.url.path.endswith("/v1/batches") and not self.theirs:
            body = json.loads(request.content)
            body["metadata"][TAG_RUN] = "manual__the_other_click"
            headers = {k: v for k, v in request.headers.items() if k.lower() != "content-length"}
            twin = httpx2.Request("POST", request.url, headers=headers, json=body)
            answer = super().handle_request(twin)
            answer.read()
            self.theirs.append(json.loads(answer.content)["id"])
            time.sleep(1.05)  # created_at has whole seconds: theirs is the older one, whatever the ids say
        return super().handle_request(request)


def test_7_two_runs_creating_in_the_same_moment_keep_one_batch(run_dag, emulator, job, monkeypatch):
    ids, _, folder = job
    emulator.configure(validating_seconds=2)  # the younger batch is cancelled before any request runs
    transport = _AnotherRunCreatesFirst()
    monkeypatch.setattr(
        clients_module, "_new_sync_http_client", lambda: openai.DefaultHttpxClient(transport=transport)
    )

    outcome = run_dag(DAG_ID, DATE)

    assert outcome.state == "success", outcome.ti_states()
    (theirs,) = transport.theirs
    paid = assert_paid(emulator, 2)
    (ours,) = [b for b in paid if b != theirs]
    assert outcome.xcoms[("run_batch", "return_value")]["batch_ids"] == [theirs]
    assert len(emulator.calls("POST", f"/v1/batches/{ours}/cancel")) == 1
    assert emulator.calls("POST", f"/v1/batches/{theirs}/cancel") == []
    mine = openai.OpenAI(base_url=emulator.base_url, api_key="sk-test").batches.retrieve(ours)
    assert mine.status in ("cancelling", "cancelled") and mine.request_counts.completed == 0  # nothing billed
    assert_each_custom_id_once(folder, ids)
