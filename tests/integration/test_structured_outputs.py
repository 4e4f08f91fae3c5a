"""Structured outputs through Airflow: the emulator answers a mix of valid, invalid-JSON, schema-mismatch,
truncated and refused answers; landing counts them exactly, max_failed_ratio judges them, and
resubmit_invalid pays for exactly one follow-up batch of exactly the invalid requests."""

from __future__ import annotations

import json

import pytest

from airflow_provider_openai_batch import exceptions as exc
from airflow_provider_openai_batch import read_results
from airflow_provider_openai_batch.emulator.testing import wait_for
from airflow_provider_openai_batch.structured.formats import output_format
from tests.support.assertions import assert_each_custom_id_once
from tests.support.builders import request
from tests.support.journal import api_client, batch_ids, batch_posts
from tests.support.operator_runs import (
    OUTCOME_DAG,
    configure_outcome_dag,
    in_background,
    join_checked,
    only_error,
    raised_fixture,  # noqa: F401 - the `raised` fixture
)
from tests.unit.structured.models import SCHEMA, Ticket

pytestmark = pytest.mark.integration

# 20 requests: 4 break as invalid JSON, 3 miss a required field, 2 are cut at the token limit, 1 is refused.
IDS = [f"req-{i:02d}" for i in range(20)]
FAULTS = {
    "invalid_json_custom_id_regex": r"^req-0[0-3]$",
    "schema_mismatch_custom_id_regex": r"^req-0[4-6]$",
    "truncated_custom_id_regex": r"^req-0[78]$",
    "refusal_custom_id_regex": r"^req-09$",
}
REASONS = {"invalid_json": 4, "schema_mismatch": 3, "truncated": 2, "refusal": 1}
INVALID = {f"req-{i:02d}" for i in range(10)}


def _job(tmp_path, monkeypatch, **kwargs):
    body = output_format(Ticket)
    source = tmp_path / "in.jsonl"
    source.write_text("".join(json.dumps(request(cid, **body)) + "\n" for cid in IDS))
    out = tmp_path / "out"
    configure_outcome_dag(monkeypatch, input_path=str(source), output_path=str(out), **kwargs)
    return source, out


def _expected_tally(reasons):
    tally = {"total": sum(reasons.values()), "reasons": dict.fromkeys(
        ["truncated", "refusal", "no_answer", "invalid_json", "schema_mismatch", "no_schema"], 0)}  # fmt: skip
    tally["reasons"].update(reasons)
    return tally


@pytest.mark.parametrize("schema", ["auto", SCHEMA, "pydantic:tests.unit.structured.models.Ticket"])
def test_invalid_answers_are_counted_exactly_in_result_manifest_and_asset(
    run_dag, openai_conn, tmp_path, monkeypatch, raised, schema
):
    openai_conn.configure(**FAULTS)
    source, out = _job(tmp_path, monkeypatch, output_schema=schema, max_failed_ratio=0.5)

    outcome = run_dag(OUTCOME_DAG)

    assert outcome.state == "success", raised
    result = outcome.xcoms[("run_batch", "batch_result")]
    assert result["invalid_output"] == _expected_tally(REASONS)
    assert result["request_counts"] == {"total": 20, "completed": 20, "failed": 0}
    manifest = json.loads((out / "_manifest.json").read_text())
    assert manifest["invalid_output"] == result["invalid_output"]
    assert len(batch_posts(openai_conn)) == 1
    output, errors = assert_each_custom_id_once(out, IDS)
    assert len(output) == 20 and errors == []
    # The reader, reading what landed, agrees record by record.
    records = {r["custom_id"]: r for r in read_results(result, source, schema=Ticket)}
    assert {c for c, r in records.items() if r["status"] == "invalid_output"} == INVALID
    assert all(isinstance(records[c]["parsed"], Ticket) for c in IDS if c not in INVALID)
    # The worked example of docs/results.md: validated rows, one column per field.
    frame = read_results(result, schema=Ticket).to_pandas(flatten=True)
    valid = frame[frame["status"] == "ok"]
    assert sorted(valid["custom_id"]) == sorted(set(IDS) - INVALID)
    assert {"label", "score", "owner.name", "owner.age"} <= set(frame.columns)
    assert valid["owner.name"].map(type).eq(str).all()


def test_invalid_answers_count_as_failed_for_max_failed_ratio(
    run_dag, openai_conn, tmp_path, monkeypatch, raised
):
    openai_conn.configure(**FAULTS)
    _, out = _job(tmp_path, monkeypatch, output_schema="auto", max_failed_ratio=0.45)

    outcome = run_dag(OUTCOME_DAG)

    assert outcome.state == "failed"
    err = only_error(raised, exc.OpenAIBatchRequestsFailed)
    assert "10 of 20 request(s) failed (10 with an invalid answer" in str(err)
    assert "max_failed_ratio=0.45" in str(err)
    assert (out / "_manifest.json").exists()  # landed, then judged
    assert len(batch_posts(openai_conn)) == 1


def test_resubmit_invalid_pays_one_follow_up_for_exactly_the_invalid_requests(
    run_dag, openai_conn, tmp_path, monkeypatch, raised
):
    # Round 0 is created with the faults; they are cleared once it exists, so the follow-up answers well.
    openai_conn.configure(**FAULTS)
    _, out = _job(tmp_path, monkeypatch, output_schema="auto", resubmit_invalid=True)

    def clear_faults_after_round_0():
        # Settings are taken when a batch is created, so clearing them any time after round 0 exists is safe;
        # the wait covers the DAG's parse and start on a loaded machine.
        wait_for(lambda: batch_ids(openai_conn), timeout=240)
        openai_conn.configure(**dict.fromkeys(FAULTS))

    thread = in_background(clear_faults_after_round_0)
    outcome = run_dag(OUTCOME_DAG)
    join_checked(thread, timeout=240)

    assert outcome.state == "success", raised
    paid = openai_conn.paid_creates()
    assert len(paid) == 2 == len(batch_posts(openai_conn))
    result = outcome.xcoms[("run_batch", "batch_result")]
    round0, round1 = result["rounds"]
    assert paid == round0 + round1
    client = api_client(openai_conn)
    follow_up = client.batches.retrieve(round1[0])
    sent = client.files.content(follow_up.input_file_id).text.splitlines()
    assert sorted(json.loads(x)["custom_id"] for x in sent) == sorted(INVALID)
    assert result["invalid_output"] == _expected_tally({})
    assert result["request_counts"] == {"total": 20, "completed": 20, "failed": 0}
    output, errors = assert_each_custom_id_once(out, IDS)
    assert len(output) == 20 and errors == []
    # Every landed answer is the valid one: the round-0 lines of the resent requests were dropped.
    assert all(r["status"] == "ok" for r in read_results(result, schema=Ticket))


def test_resubmit_invalid_resends_once_even_when_the_answers_stay_invalid(
    run_dag, openai_conn, tmp_path, monkeypatch, raised
):
    openai_conn.configure(**FAULTS)
    _, out = _job(tmp_path, monkeypatch, output_schema=SCHEMA, resubmit_invalid=True, max_failed_ratio=0.5)

    outcome = run_dag(OUTCOME_DAG)

    assert outcome.state == "success", raised
    assert len(openai_conn.paid_creates()) == 2
    result = outcome.xcoms[("run_batch", "batch_result")]
    assert [len(r) for r in result["rounds"]] == [1, 1]
    assert result["invalid_output"] == _expected_tally(REASONS)  # the last answers, each request once
    output, _ = assert_each_custom_id_once(out, IDS)
    assert len(output) == 20
