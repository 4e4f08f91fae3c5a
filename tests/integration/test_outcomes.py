"""Every batch outcome and operator policy, run through Airflow (dag.test(), real deferral) with the real operator
against the emulator over HTTP, landing on local storage (and S3 for one case).

The DAGs are in tests/dags/outcome_dags.py, parametrised by OPENAI_BATCH_OUTCOME_KWARGS at parse time.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_openai_batch import exceptions as exc
from airflow_provider_openai_batch.emulator.testing import wait_for
from airflow_provider_openai_batch.operators.openai_batch import OpenAIBatchOperator
from tests.support.assertions import assert_each_custom_id_once, read_jsonl, read_s3_jsonl
from tests.support.builders import ENDPOINT, jsonl, request, write_requests
from tests.support.journal import api_client, batch_ids, batch_posts, first_batch_running
from tests.support.operator_runs import (
    OUTCOME_DAG,
    configure_outcome_dag,
    in_background,
    join_checked,
    only_error,
    raised_fixture,  # noqa: F401 - the `raised` fixture
)

pytestmark = pytest.mark.integration

DAG_ID = OUTCOME_DAG


# --------------------------------------------------------------------------------------------- helpers
def outcome_job(
    tmp_path: Path, monkeypatch, n: int, *, fail: dict[int, int] | None = None, **operator_kwargs: Any
) -> tuple[list[str], Path]:
    """``n`` requests in tmp/in.jsonl for the outcome DAG, landing in tmp/out, with these operator arguments.

    :param fail: request index → the HTTP status the emulator answers it with.
    :return: the custom_ids and the results folder.
    """
    ids = write_requests(tmp_path / "in.jsonl", n, fail=fail)
    configure_outcome_dag(
        monkeypatch,
        input_path=str(tmp_path / "in.jsonl"),
        output_path=str(tmp_path / "out"),
        **operator_kwargs,
    )
    return ids, tmp_path / "out"


def assert_usage_summed(result: dict, emulator, ids: list[str]) -> None:
    batches = [api_client(emulator).batches.retrieve(b) for b in ids]
    assert result["usage"]["input_tokens"] == sum(b.usage.input_tokens for b in batches if b.usage)
    assert result["usage"]["output_tokens"] == sum(b.usage.output_tokens for b in batches if b.usage)
    assert result["usage"]["total_tokens"] == sum(b.usage.total_tokens for b in batches if b.usage)


# ------------------------------------------------------------------------------------ completed
def test_completed_clean_lands_output_only(run_dag, openai_conn, tmp_path, monkeypatch, raised):
    ids, out = outcome_job(tmp_path, monkeypatch, 6)

    outcome = run_dag(DAG_ID)

    assert outcome.state == "success", outcome.ti_states()
    assert raised == []
    output, errors = assert_each_custom_id_once(out, ids)
    assert len(output) == 6 and errors == []
    assert not (out / "errors.jsonl").exists()
    result = outcome.xcoms[("run_batch", "return_value")]
    assert result["status"] == "completed"
    assert result["request_counts"] == {"total": 6, "completed": 6, "failed": 0}
    assert (result["output_lines"], result["error_lines"]) == (6, 0)
    assert result["output_path"] == f"file://{out}/output.jsonl"  # local paths come back as file:// URLs
    assert result["error_path"] is None and result["error_file_id"] is None
    assert result["manifest_path"] == f"file://{out}/_manifest.json"
    assert result["rounds"] == [[result["batch_id"]]]
    assert result["usage"]["total_tokens"] > 0
    assert_usage_summed(result, openai_conn, result["batch_ids"])
    assert json.loads((out / "_manifest.json").read_text()) == result
    assert len(batch_posts(openai_conn)) == 1


@pytest.mark.parametrize("ratio, state", [(0.0, "failed"), (0.5, "success")])
def test_completed_with_failed_requests_against_max_failed_ratio(
    run_dag, openai_conn, tmp_path, monkeypatch, raised, ratio, state
):
    ids, out = outcome_job(tmp_path, monkeypatch, 8, fail={1: 500, 4: 429}, max_failed_ratio=ratio)

    outcome = run_dag(DAG_ID)

    assert outcome.state == state, outcome.ti_states()
    output, errors = assert_each_custom_id_once(out, ids)
    assert sorted(e["custom_id"] for e in errors) == ["req-1", "req-4"]
    assert sorted(e["response"]["status_code"] for e in errors) == [429, 500]
    assert len(output) == 6
    key = "batch_result" if state == "failed" else "return_value"
    result = outcome.xcoms[("run_batch", key)]
    assert result["status"] == "completed"
    assert result["request_counts"] == {"total": 8, "completed": 6, "failed": 2}
    assert (result["output_lines"], result["error_lines"]) == (6, 2)
    assert result["error_path"] == f"file://{out}/errors.jsonl"
    assert_usage_summed(result, openai_conn, result["batch_ids"])
    if state == "failed":
        err = only_error(raised, exc.OpenAIBatchRequestsFailed)
        assert "2 of 8 request(s) failed" in str(err) and "max_failed_ratio=0.0" in str(err)
        assert f"file://{out}/errors.jsonl" in str(err)
        assert err.result == result
    else:
        assert raised == []


@pytest.mark.parametrize("ratio, state", [(0.5, "failed"), (1.0, "success")])
def test_every_request_failed(run_dag, openai_conn, tmp_path, monkeypatch, raised, ratio, state):
    ids, out = outcome_job(
        tmp_path, monkeypatch, 4, fail=dict.fromkeys(range(4), 503), max_failed_ratio=ratio
    )

    outcome = run_dag(DAG_ID)

    assert outcome.state == state, outcome.ti_states()
    output, errors = assert_each_custom_id_once(out, ids)
    assert output == [] and len(errors) == 4
    # The batch completed with no output file: an empty output.jsonl still lands, so readers find the file.
    assert (out / "output.jsonl").read_bytes() == b""
    result = outcome.xcoms[("run_batch", "batch_result" if state == "failed" else "return_value")]
    assert result["status"] == "completed"
    assert result["output_file_id"] is None and result["error_file_id"]
    assert result["output_path"] == f"file://{out}/output.jsonl"
    assert result["request_counts"] == {"total": 4, "completed": 0, "failed": 4}
    assert (result["output_lines"], result["error_lines"]) == (0, 4)
    assert result["usage"]["total_tokens"] == 0
    if state == "failed":
        err = only_error(raised, exc.OpenAIBatchRequestsFailed)
        assert "4 of 4 request(s) failed" in str(err)
    else:
        assert raised == []


def test_failed_batch_lists_errors_data_line_by_line(run_dag, openai_conn, tmp_path, monkeypatch, raised):
    # The emulator is told to allow fewer requests per file than the operator's limits assume: the batch passes
    # our validation, then ends `failed` with `too_many_tasks` (as a token-limit failure would on OpenAI).
    openai_conn.configure(max_requests=3)
    _, out = outcome_job(tmp_path, monkeypatch, 5)

    outcome = run_dag(DAG_ID)

    assert outcome.state == "failed"
    err = only_error(raised, exc.OpenAIBatchFailed)
    batch_id = err.result["batch_id"]
    assert (
        f"Batch {batch_id} failed:\n  line 4: [too_many_tasks] The input file has more than 3 requests."
        in str(err)
    )
    result = outcome.xcoms[("run_batch", "batch_result")]
    assert result["status"] == "failed"
    assert result["request_counts"]["completed"] == 0
    assert (result["output_lines"], result["error_lines"]) == (0, 0)
    assert result["error_path"] is None
    assert read_jsonl(out / "output.jsonl") == [] and not (out / "errors.jsonl").exists()


def test_clear_after_a_failed_batch_submits_anew(run_dag, openai_conn, tmp_path, monkeypatch, raised):
    """A `failed` batch was not billed: clearing the task submits the input again instead of re-landing."""
    openai_conn.configure(max_requests=3)
    ids, out = outcome_job(tmp_path, monkeypatch, 5)
    assert run_dag(DAG_ID, "2026-11-12").state == "failed"
    only_error(raised, exc.OpenAIBatchFailed)
    (failed_id,) = batch_ids(openai_conn)

    openai_conn.configure(max_requests=50_000)
    second = run_dag(DAG_ID, "2026-11-12", clear=True)

    assert second.state == "success", second.ti_states()
    assert len(batch_posts(openai_conn)) == 2
    result = second.xcoms[("run_batch", "return_value")]
    assert result["batch_id"] != failed_id and result["status"] == "completed"
    output, errors = assert_each_custom_id_once(out, ids)
    assert len(output) == 5 and errors == []


def test_failed_batch_with_several_errors_via_execute_complete(openai_conn, tmp_path, monkeypatch):
    """execute_complete on a batch created directly on the emulator whose file the service rejects."""
    from unittest import mock

    from airflow_provider_openai_batch.lifecycle.record import SubmissionRecord
    from airflow_provider_openai_batch.lifecycle.state import RunState

    c = api_client(openai_conn)
    lines = jsonl(request("a"), request("b", url="/v1/embeddings"), request("a"))
    f = c.files.create(file=("in.jsonl", lines), purpose="batch")
    batch = c.batches.create(input_file_id=f.id, endpoint=ENDPOINT, completion_window="24h")
    wait_for(lambda: c.batches.retrieve(batch.id).status == "failed", timeout=10)

    op = OpenAIBatchOperator(task_id="t", input_path="unused", output_path=str(tmp_path / "out"))
    ti = mock.MagicMock(dag_id="d", task_id="t", run_id="r", map_index=-1)
    with pytest.raises(exc.OpenAIBatchFailed) as info:
        state = RunState(SubmissionRecord("fp", 1, batches={"0/1": batch.id}))
        op.execute_complete(
            {"ti": ti},
            event={"status": "terminal", "batches": {}, "message": "", "context": state.to_context()},
        )
    message = str(info.value)
    assert f"Batch {batch.id} failed:\n" in message
    assert "  line 2: [url_mismatch]" in message and "(param url)" in message
    assert "  line 3: [duplicate_custom_id] The custom_id 'a' is used more than once" in message
    assert message.index("line 2:") < message.index("line 3:")
    ti.xcom_push.assert_any_call(key="batch_result", value=info.value.result)
    assert info.value.result["status"] == "failed"


# ---------------------------------------------------------------------------- expired / cancelled
def test_expired_lands_partial_output_and_batch_expired_lines(
    run_dag, openai_conn, tmp_path, monkeypatch, raised
):
    # A 24h window scaled to about 2 s, at 10 requests/s: some finish, the rest expire.
    openai_conn.configure(time_scale=2.0 / 86400, rate=10)
    ids, out = outcome_job(tmp_path, monkeypatch, 60)

    outcome = run_dag(DAG_ID)

    assert outcome.state == "failed"
    err = only_error(raised, exc.OpenAIBatchExpired)
    output, errors = assert_each_custom_id_once(out, ids)
    assert 0 < len(output) < 60
    assert {e["error"]["code"] for e in errors} == {"batch_expired"}
    result = outcome.xcoms[("run_batch", "batch_result")]
    assert result["status"] == "expired"
    assert (result["output_lines"], result["error_lines"]) == (len(output), len(errors))
    assert result["request_counts"]["completed"] == len(output)
    assert f"{len(output)} request(s) finished, {len(errors)} did not" in str(err)
    assert result["usage"]["total_tokens"] > 0


def test_cancelled_elsewhere_lands_partial_results(run_dag, openai_conn, tmp_path, monkeypatch, raised):
    openai_conn.configure(rate=20)
    ids, out = outcome_job(tmp_path, monkeypatch, 100)

    def cancel_when_running():
        bid = first_batch_running(openai_conn, completed=5)
        api_client(openai_conn).batches.cancel(bid)

    thread = in_background(cancel_when_running)
    outcome = run_dag(DAG_ID)
    join_checked(thread)

    assert outcome.state == "failed"
    err = only_error(raised, exc.OpenAIBatchCancelled)
    output, errors = assert_each_custom_id_once(out, ids)
    assert 5 <= len(output) < 100
    assert {e["error"]["code"] for e in errors} == {"batch_cancelled"}
    result = outcome.xcoms[("run_batch", "batch_result")]
    assert result["status"] == "cancelled"
    assert f"{len(output)} request(s) finished" in str(err)


# ------------------------------------------------------------------------------------------ timeout
@pytest.mark.parametrize("deferrable", [True, False], ids=["deferred", "in-place"])
def test_timeout_cancel_lands_partial_and_raises_timeout(
    run_dag, openai_conn, tmp_path, monkeypatch, raised, deferrable
):
    openai_conn.configure(rate=20)
    ids, out = outcome_job(
        tmp_path, monkeypatch, 200, timeout=1.5, on_timeout="cancel", deferrable=deferrable
    )

    outcome = run_dag(DAG_ID)

    assert outcome.state == "failed"
    err = only_error(raised, exc.OpenAIBatchTimeout)
    assert "were cancelled after the timeout" in str(err)
    (batch_id,) = batch_ids(openai_conn)
    assert len(openai_conn.calls("POST", f"/v1/batches/{batch_id}/cancel")) == 1
    output, errors = assert_each_custom_id_once(out, ids)
    assert 0 < len(output) < 200
    assert {e["error"]["code"] for e in errors} == {"batch_cancelled"}
    result = outcome.xcoms[("run_batch", "batch_result")]
    assert result["status"] == "cancelled" and result["batch_id"] == batch_id


def test_timeout_keep_leaves_batch_running_and_rerun_reattaches(
    run_dag, openai_conn, tmp_path, monkeypatch, raised
):
    openai_conn.configure(rate=2)  # 15 s of work: still running after the failed try, on a slow machine too
    ids = write_requests(tmp_path / "in.jsonl", 30)
    out = tmp_path / "out"
    kwargs = {"input_path": str(tmp_path / "in.jsonl"), "output_path": str(out)}
    configure_outcome_dag(monkeypatch, **kwargs, timeout=1.0, on_timeout="keep")

    first = run_dag(DAG_ID, "2026-11-02")

    assert first.state == "failed"
    err = only_error(raised, exc.OpenAIBatchTimeout)
    assert "still running: a retry re-attaches" in str(err)
    assert openai_conn.calls("POST", "/v1/batches/") == []  # no cancel
    (batch_id,) = batch_ids(openai_conn)
    assert api_client(openai_conn).batches.retrieve(batch_id).status in ("validating", "in_progress")
    assert not (out / "_manifest.json").exists()

    configure_outcome_dag(monkeypatch, **kwargs)
    second = run_dag(DAG_ID, "2026-11-02", clear=True)

    assert second.state == "success", second.ti_states()
    assert len(batch_posts(openai_conn)) == 1
    assert len(openai_conn.calls("POST", "/v1/files")) == 1
    result = second.xcoms[("run_batch", "return_value")]
    assert result["batch_id"] == batch_id
    output, errors = assert_each_custom_id_once(out, ids)
    assert len(output) == 30 and errors == []


# -------------------------------------------------------------------------------------- non-deferrable
@pytest.mark.openai_emulator(validating_seconds=2)  # still live after the look that follows its create
def test_non_deferrable_end_to_end(run_dag, openai_conn, tmp_path, monkeypatch, raised):
    ids, out = outcome_job(tmp_path, monkeypatch, 5, fail={2: 500}, deferrable=False, max_failed_ratio=0.25)

    outcome = run_dag(DAG_ID)

    assert outcome.state == "success", outcome.ti_states()
    assert raised == []
    output, errors = assert_each_custom_id_once(out, ids)
    assert [e["custom_id"] for e in errors] == ["req-2"]
    result = outcome.xcoms[("run_batch", "return_value")]
    assert result["request_counts"] == {"total": 5, "completed": 4, "failed": 1}
    # Polled from the worker: more than one GET of the batch, no trigger involved.
    assert len(openai_conn.calls("GET", f"/v1/batches/{result['batch_id']}")) >= 2


# ------------------------------------------------------------------------------------- input change
@pytest.mark.parametrize("policy", ["resubmit", "fail"])
def test_input_change_policy_on_rerun(run_dag, openai_conn, tmp_path, monkeypatch, raised, policy):
    openai_conn.configure(
        rate=2
    )  # the stale batch runs 20 s: still running when the rerun decides, under load too
    source = tmp_path / "in.jsonl"
    write_requests(source, 40)
    out = tmp_path / "out"
    kwargs = {"input_path": str(source), "output_path": str(out), "on_input_change": policy}
    date = "2026-11-03" if policy == "resubmit" else "2026-11-04"
    # First try: gives up waiting and leaves its batch running.
    configure_outcome_dag(monkeypatch, **kwargs, timeout=0.8, on_timeout="keep")
    assert run_dag(DAG_ID, date).state == "failed"
    (stale,) = batch_ids(openai_conn)
    raised.clear()

    new_ids = write_requests(source, 3, prefix="changed")
    configure_outcome_dag(monkeypatch, **kwargs)
    second = run_dag(DAG_ID, date, clear=True)

    if policy == "resubmit":
        assert second.state == "success", second.ti_states()
        assert raised == []
        assert len(openai_conn.calls("POST", f"/v1/batches/{stale}/cancel")) == 1
        assert api_client(openai_conn).batches.retrieve(stale).status in ("cancelling", "cancelled")
        assert len(batch_posts(openai_conn)) == 2
        result = second.xcoms[("run_batch", "return_value")]
        assert result["batch_id"] != stale
        output, errors = assert_each_custom_id_once(out, new_ids)
        assert len(output) == 3
    else:
        assert second.state == "failed"
        err = only_error(raised, exc.OpenAIBatchInputChanged)
        assert stale in str(err) and "on_input_change='resubmit'" in str(err)
        assert len(batch_posts(openai_conn)) == 1
        assert openai_conn.calls("POST", f"/v1/batches/{stale}/cancel") == []
        assert len(openai_conn.calls("POST", "/v1/files")) == 1


# ------------------------------------------------------------------------------------------ resubmit
def test_resubmit_failed_retries_5xx_once_and_keeps_last_outcome(
    run_dag, openai_conn, tmp_path, monkeypatch, raised
):
    # Round 0 runs with the regex (settings are taken at creation); it is cleared once round 0 exists, so
    # round 1 succeeds. req-5 fails with a 400 in both rounds (not retryable: not resubmitted).
    openai_conn.configure(fail_custom_id_regex=r"^req-(1|3)$", fail_status=500)
    ids, out = outcome_job(
        tmp_path,
        monkeypatch,
        6,
        fail={5: 400},
        resubmit_failed=1,
        # 1 of the 6 requests fails in the end: more than 15%. (Counting the resubmitted requests twice
        # would make it 1 of 8, under 15%.)
        max_failed_ratio=0.15,
    )

    def clear_regex_after_round_0():
        wait_for(lambda: batch_ids(openai_conn), timeout=20)
        openai_conn.configure(fail_custom_id_regex=None)

    thread = in_background(clear_regex_after_round_0)
    outcome = run_dag(DAG_ID)
    join_checked(thread)

    assert outcome.state == "failed"
    err = only_error(raised, exc.OpenAIBatchRequestsFailed)
    assert "1 of 6 request(s) failed" in str(err)
    output, errors = assert_each_custom_id_once(out, ids)
    assert sorted(o["custom_id"] for o in output) == ["req-0", "req-1", "req-2", "req-3", "req-4"]
    assert [(e["custom_id"], e["response"]["status_code"]) for e in errors] == [("req-5", 400)]
    result = outcome.xcoms[("run_batch", "batch_result")]
    # Each custom_id counted once, by its last outcome.
    assert result["request_counts"] == {"total": 6, "completed": 5, "failed": 1}
    assert len(result["rounds"]) == 2
    round0, round1 = result["rounds"]
    assert len(round0) == 1 and len(round1) == 1
    assert result["batch_ids"] == round0 + round1
    assert (result["output_lines"], result["error_lines"]) == (5, 1)
    # Round 1 held only the two retryable requests.
    assert api_client(openai_conn).batches.retrieve(round1[0]).request_counts.total == 2
    assert_usage_summed(result, openai_conn, result["batch_ids"])
    assert len(batch_posts(openai_conn)) == 2


@pytest.mark.parametrize("resubmit_failed", [1, 2])
def test_resubmit_failed_that_keeps_failing_lands_the_last_round_once(
    run_dag, openai_conn, tmp_path, monkeypatch, raised, resubmit_failed
):
    openai_conn.configure(fail_custom_id_regex=r"^req-(1|3)$", fail_status=503)
    ids, out = outcome_job(tmp_path, monkeypatch, 6, resubmit_failed=resubmit_failed)

    outcome = run_dag(DAG_ID)

    assert outcome.state == "failed"
    err = only_error(raised, exc.OpenAIBatchRequestsFailed)
    assert "2 of 6 request(s) failed" in str(err)
    assert len(batch_posts(openai_conn)) == 1 + resubmit_failed
    output, errors = assert_each_custom_id_once(out, ids)
    assert sorted(e["custom_id"] for e in errors) == ["req-1", "req-3"]
    result = outcome.xcoms[("run_batch", "batch_result")]
    assert len(result["rounds"]) == 1 + resubmit_failed
    assert [len(r) for r in result["rounds"]] == [1] * (1 + resubmit_failed)
    assert result["request_counts"] == {"total": 6, "completed": 4, "failed": 2}
    # The error lines that landed are the last round's.
    last = api_client(openai_conn).batches.retrieve(result["rounds"][-1][0])
    last_errors = api_client(openai_conn).files.content(last.error_file_id).text
    assert sorted(e["id"] for e in errors) == sorted(
        json.loads(x)["id"] for x in last_errors.splitlines() if x.strip()
    )


def test_resubmit_failed_after_partial_expiry(run_dag, openai_conn, tmp_path, monkeypatch, raised):
    """Round 0 expires part way (batch_expired is retryable); round 1 finishes the rest."""
    openai_conn.configure(rate=10)
    ids, out = outcome_job(tmp_path, monkeypatch, 40, resubmit_failed=1)

    def expire_round_0():
        bid = first_batch_running(openai_conn, completed=5)
        openai_conn.configure(rate=500)
        openai_conn.expire(bid)

    thread = in_background(expire_round_0)
    outcome = run_dag(DAG_ID)
    join_checked(thread)

    assert outcome.state == "success", (outcome.ti_states(), raised)
    output, errors = assert_each_custom_id_once(out, ids)
    assert len(output) == 40 and errors == []
    result = outcome.xcoms[("run_batch", "return_value")]
    assert result["request_counts"] == {"total": 40, "completed": 40, "failed": 0}
    assert len(result["rounds"]) == 2
    assert [s["status"] for s in result["shards"]] == ["expired", "completed"]
    assert result["error_path"] is None


# ------------------------------------------------------------------------------------------ decorator
def test_task_decorator_with_generator(run_dag, openai_conn, tmp_path, monkeypatch, raised):
    out = tmp_path / "gen"
    monkeypatch.setenv(
        "OPENAI_BATCH_OUTCOME_GEN", json.dumps({"n": 7, "output_path": str(out), "prefix": "gen-{{ ds }}"})
    )

    outcome = run_dag("openai_batch_outcome_generator")

    assert outcome.state == "success", (outcome.ti_states(), raised)
    ids = [f"gen-2026-11-01-{i:06d}" for i in range(7)]
    output, errors = assert_each_custom_id_once(out, ids)
    assert errors == []
    assert all(o["response"]["body"]["object"] == "list" for o in output)
    result = outcome.xcoms[("generate", "return_value")]
    assert result["request_counts"] == {"total": 7, "completed": 7, "failed": 0}
    assert result["custom_id_prefix"] == "gen-2026-11-01"


# ------------------------------------------------------------------------------------------------ S3
def test_expired_on_s3_lands_partial_results(run_dag, openai_conn, moto_s3, tmp_path, monkeypatch, raised):
    s3, bucket, conn = moto_s3["client"], moto_s3["bucket"], moto_s3["conn_id"]
    openai_conn.configure(rate=10)
    ids = write_requests(tmp_path / "in.jsonl", 40)
    s3.put_object(Bucket=bucket, Key="outcomes/in.jsonl", Body=(tmp_path / "in.jsonl").read_bytes())
    configure_outcome_dag(
        monkeypatch,
        input_path=f"s3://{conn}@{bucket}/outcomes/in.jsonl",
        output_path=f"s3://{conn}@{bucket}/outcomes/expired",
    )

    def expire_soon():
        bid = first_batch_running(openai_conn, completed=3)
        openai_conn.expire(bid)

    thread = in_background(expire_soon)
    outcome = run_dag(DAG_ID, "2026-11-09")
    join_checked(thread)

    assert outcome.state == "failed"
    only_error(raised, exc.OpenAIBatchExpired)

    output = read_s3_jsonl(s3, bucket, "outcomes/expired/output.jsonl")
    errors = read_s3_jsonl(s3, bucket, "outcomes/expired/errors.jsonl")
    assert sorted(x["custom_id"] for x in output + errors) == sorted(ids)
    assert output and {e["error"]["code"] for e in errors} == {"batch_expired"}
    keys = {o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix="outcomes/expired/")["Contents"]}
    assert keys == {f"outcomes/expired/{n}" for n in ("output.jsonl", "errors.jsonl", "_manifest.json")}
    result = outcome.xcoms[("run_batch", "batch_result")]
    assert result["error_path"] == f"s3://{conn}@{bucket}/outcomes/expired/errors.jsonl"


# ------------------------------------------------------------------------------------------------ kill
def test_operator_on_kill_cancels_in_non_deferrable_mode(openai_conn, tmp_path, monkeypatch):
    from unittest import mock

    openai_conn.configure(rate=5)
    write_requests(tmp_path / "in.jsonl", 50)
    op = OpenAIBatchOperator(
        task_id="kill_me",
        input_path=str(tmp_path / "in.jsonl"),
        output_path=str(tmp_path / "out"),
        deferrable=False,
        poll_interval=0.2,
        timeout=30,
    )
    ti = mock.MagicMock(dag_id="d", task_id="kill_me", run_id="r", map_index=-1)
    context = {"ti": ti, "task_state_store": None}

    def kill_when_running():
        bid = wait_for(lambda: batch_ids(openai_conn), timeout=20)[0]
        wait_for(lambda: op._active_batch_ids == [bid], timeout=10)
        op.on_kill()

    thread = in_background(kill_when_running)
    with pytest.raises(exc.OpenAIBatchCancelled):
        op.execute(context)
    join_checked(thread)
    (bid,) = batch_ids(openai_conn)
    assert len(openai_conn.calls("POST", f"/v1/batches/{bid}/cancel")) == 1
    assert api_client(openai_conn).batches.retrieve(bid).status == "cancelled"


def test_operator_on_kill_with_nothing_running_does_not_call_the_api(openai_conn, tmp_path):
    op = OpenAIBatchOperator(task_id="idle", input_path="x", output_path=str(tmp_path), deferrable=False)
    op.on_kill()
    assert openai_conn.journal() == []


def test_trigger_on_kill_cancels_a_live_batch(openai_conn, monkeypatch):
    from airflow_provider_openai_batch.hooks import clients as clients_module
    from airflow_provider_openai_batch.triggers.openai_batch import OpenAIBatchTrigger

    openai_conn.configure(rate=5)
    c = api_client(openai_conn)
    f = c.files.create(file=("in.jsonl", jsonl(*(request(f"k-{i}") for i in range(50)))), purpose="batch")
    batch = c.batches.create(input_file_id=f.id, endpoint=ENDPOINT, completion_window="24h")
    trigger = OpenAIBatchTrigger(batch_ids=[batch.id], poll_interval=0.2, first_poll_jitter=0)

    async def run_then_kill():
        clients_module.clear_async_client_cache()
        events = []

        async def consume():
            async for event in trigger.run():
                events.append(event)

        task = asyncio.create_task(consume())
        deadline = time.monotonic() + 10
        while trigger._statuses.get(batch.id) != "in_progress" and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
        assert trigger._statuses[batch.id] == "in_progress"
        task.cancel()
        await trigger.on_kill()
        return events

    events = asyncio.run(run_then_kill())
    assert events == []
    assert len(openai_conn.calls("POST", f"/v1/batches/{batch.id}/cancel")) == 1
    wait_for(lambda: c.batches.retrieve(batch.id).status == "cancelled", timeout=10)


def test_timeout_cancel_that_comes_too_late_keeps_the_completed_batch(
    run_dag, openai_conn, tmp_path, monkeypatch, raised
):
    # All requests done at once, then a long `finalizing`: the timeout fires there, where a cancel is refused
    # (409), and the batch completes. A finished batch is a success, not a timeout.
    openai_conn.configure(rate=0, finalizing_seconds=4.0)
    ids, out = outcome_job(tmp_path, monkeypatch, 20, timeout=1.5, on_timeout="cancel")

    outcome = run_dag(DAG_ID)

    assert outcome.state == "success", (outcome.ti_states(), raised)
    (batch_id,) = batch_ids(openai_conn)
    cancels = openai_conn.calls("POST", f"/v1/batches/{batch_id}/cancel")
    assert cancels and all(c["status"] == 409 for c in cancels)
    output, errors = assert_each_custom_id_once(out, ids)
    assert len(output) == 20 and errors == []
    assert outcome.xcoms[("run_batch", "return_value")]["status"] == "completed"


def test_clear_after_expiry_resubmits_only_the_unfinished_requests(
    run_dag, openai_conn, tmp_path, monkeypatch, raised
):
    openai_conn.configure(rate=10)
    ids, out = outcome_job(tmp_path, monkeypatch, 40)

    def expire_soon():
        bid = first_batch_running(openai_conn, completed=3)
        openai_conn.expire(bid)

    thread = in_background(expire_soon)
    first = run_dag(DAG_ID)
    join_checked(thread)
    assert first.state == "failed"
    finished_first = len(assert_each_custom_id_once(out, ids)[0])
    assert 0 < finished_first < 40

    openai_conn.configure(rate=0)
    second = run_dag(DAG_ID, clear=True)

    assert second.state == "success", (second.ti_states(), raised)
    first_batch, follow_up = batch_ids(openai_conn)
    follow_up_batch = api_client(openai_conn).batches.retrieve(follow_up)
    assert follow_up_batch.request_counts.total == 40 - finished_first  # the paid part is not paid again
    output, errors = assert_each_custom_id_once(out, ids)
    assert len(output) == 40 and errors == []
    result = second.xcoms[("run_batch", "return_value")]
    assert result["rounds"] == [[first_batch], [follow_up]]
    assert result["request_counts"] == {"total": 40, "completed": 40, "failed": 0}
