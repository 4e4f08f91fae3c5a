"""The example DAGs, run end to end through Airflow (dag.test(), real deferral through the trigger) against the
emulator over HTTP and a real S3 endpoint (moto_server)."""

from __future__ import annotations

import json

import pytest

from tests.integration.conftest import storage_env
from tests.support.assertions import read_s3_jsonl
from tests.support.builders import jsonl, request

pytestmark = pytest.mark.integration

DATES = ["2026-11-01", "2026-11-02", "2026-11-03"]


def _put_requests(s3, bucket: str, date: str, n: int = 4) -> list[str]:
    ids = [f"{date}-{i}" for i in range(n)]
    s3.put_object(Bucket=bucket, Key=f"requests/{date}.jsonl", Body=jsonl(*(request(cid) for cid in ids)))
    return ids


def test_daily_backfill_over_three_dates_lands_three_result_folders(
    run_dag, openai_conn, moto_s3, monkeypatch
):
    s3, bucket = moto_s3["client"], moto_s3["bucket"]
    storage_env(monkeypatch, base=f"s3://{moto_s3['conn_id']}@{bucket}")
    expected = {date: _put_requests(s3, bucket, date) for date in DATES}

    for date in DATES:
        outcome = run_dag("openai_batch_daily", date)
        assert outcome.state == "success", outcome.ti_states()
        result = outcome.xcoms[("run_batch", "return_value")]
        assert result["status"] == "completed"
        assert result["request_counts"] == {"total": 4, "completed": 4, "failed": 0}
        assert result["output_path"] == f"s3://{moto_s3['conn_id']}@{bucket}/results/{date}/output.jsonl"
        assert result["error_path"] is None
        assert result["usage"]["total_tokens"] > 0
        lines = read_s3_jsonl(s3, bucket, f"results/{date}/output.jsonl")
        assert sorted(line["custom_id"] for line in lines) == sorted(expected[date])
        manifest = json.loads(
            s3.get_object(Bucket=bucket, Key=f"results/{date}/_manifest.json")["Body"].read()
        )
        assert manifest["batch_id"] == result["batch_id"]
        summary = outcome.xcoms[("summarise", "return_value")]
        assert "4/4 requests succeeded" in summary

    # One batch per date: exactly three paid calls, whatever the client retried.
    assert len(openai_conn.calls("POST", "/v1/batches")) == 3
    keys = {o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix="results/")["Contents"]}
    assert {k.split("/")[1] for k in keys} == set(DATES)


@pytest.mark.parametrize("clear", [True, False], ids=["clear-keeps-state-store", "run-recreated-state-lost"])
def test_rerunning_a_successful_run_relands_without_a_new_batch(
    run_dag, openai_conn, moto_s3, monkeypatch, clear
):
    s3, bucket = moto_s3["client"], moto_s3["bucket"]
    storage_env(monkeypatch, base=f"s3://{moto_s3['conn_id']}@{bucket}")
    date = "2026-11-05" if clear else "2026-11-06"
    _put_requests(s3, bucket, date)

    first = run_dag("openai_batch_daily", date)
    assert first.state == "success"
    s3.delete_object(Bucket=bucket, Key=f"results/{date}/output.jsonl")

    # clear=True: the UI's "Clear" (task state store kept). clear=False: dag.test() deletes and recreates the
    # run, dropping the task state store; the batch is then found again by its metadata tags.
    second = run_dag("openai_batch_daily", date, clear=clear)
    assert second.state == "success"
    assert (
        second.xcoms[("run_batch", "return_value")]["batch_id"]
        == first.xcoms[("run_batch", "return_value")]["batch_id"]
    )
    assert len(openai_conn.calls("POST", "/v1/batches")) == 1
    assert len(read_s3_jsonl(s3, bucket, f"results/{date}/output.jsonl")) == 4


def test_fresh_run_submits_a_new_batch(run_dag, openai_conn, moto_s3, monkeypatch):
    s3, bucket = moto_s3["client"], moto_s3["bucket"]
    storage_env(monkeypatch, base=f"s3://{moto_s3['conn_id']}@{bucket}")
    _put_requests(s3, bucket, "2026-11-08")
    assert run_dag("openai_batch_daily", "2026-11-08").state == "success"
    monkeypatch.setenv("OPENAI_BATCH_EXAMPLE_FRESH_RUN", "1")
    assert run_dag("openai_batch_daily", "2026-11-08", clear=True).state == "success"
    assert len(openai_conn.calls("POST", "/v1/batches")) == 2


def test_invalid_partition_fails_before_uploading_anything(run_dag, openai_conn, moto_s3, monkeypatch):
    s3, bucket = moto_s3["client"], moto_s3["bucket"]
    storage_env(monkeypatch, base=f"s3://{moto_s3['conn_id']}@{bucket}")
    good = json.dumps(
        {"custom_id": "a", "method": "POST", "url": "/v1/chat/completions", "body": {"model": "m"}}
    )
    s3.put_object(Bucket=bucket, Key="requests/2026-11-07.jsonl", Body=f"{good}\n{{not json\n".encode())

    outcome = run_dag("openai_batch_daily", "2026-11-07")
    assert outcome.state == "failed"
    assert outcome.ti_states()["run_batch"] in ("failed", "up_for_retry")
    assert openai_conn.calls("POST", "/v1/files") == []
    assert openai_conn.calls("POST", "/v1/batches") == []


def test_iterator_dag_lands_on_local_storage(run_dag, openai_conn, tmp_path, monkeypatch):
    monkeypatch.setenv("AIRFLOW_VAR_OPENAI_BATCH_LOCAL_BASE", str(tmp_path))
    outcome = run_dag("openai_batch_iterator", "2026-11-01")
    assert outcome.state == "success", outcome.ti_states()
    result = outcome.xcoms[("embed_products", "return_value")]
    output = tmp_path / "embeddings" / "2026-11-01" / "output.jsonl"
    assert result["output_path"].endswith(str(output))
    rows = [json.loads(line) for line in output.read_text().splitlines()]
    assert sorted(r["custom_id"] for r in rows) == [f"products-2026-11-01-{i:06d}" for i in range(5)]
    joined = outcome.xcoms[("join_back", "return_value")]
    assert len(joined) == 5 and all(isinstance(v, int) and v > 0 for v in joined.values())
    assert (tmp_path / "embeddings" / "2026-11-01" / "_manifest.json").exists()
