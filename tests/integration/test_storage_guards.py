"""Storage that belongs to someone else is refused before anything is paid: a storage URL naming a connection
that does not exist (the worker's own credentials would be used instead), and a results folder another task
wrote (its results would be silently replaced).

Run through Airflow against the emulator and moto_server, with the worker's default AWS credentials pointing at
the same moto, so a fallback to them would really succeed. Each test counts the paid creates and what reached
the bucket.
"""

from __future__ import annotations

import json

import boto3
import pytest

from airflow_provider_openai_batch.exceptions import (
    OpenAIBatchOutputOfAnotherTask,
    OpenAIBatchStorageConnectionNotFound,
)
from airflow_provider_openai_batch.reader import read_results
from tests.support.assertions import assert_each_custom_id_once, assert_paid
from tests.support.builders import write_input
from tests.support.environment import dag_env
from tests.support.operator_runs import OUTCOME_DAG, configure_outcome_dag, record_raised

pytestmark = pytest.mark.integration

DAG_ID = "reliability_batch"


@pytest.fixture
def default_credentials(moto_s3, monkeypatch):
    """The worker's own identity (boto3's default chain) can reach the moto bucket, as on an EC2 worker."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_s3["endpoint"])
    # The fallback is real: without any Airflow connection, boto3 reads and writes the bucket.
    boto3.client("s3").list_objects_v2(Bucket=moto_s3["bucket"], MaxKeys=1)
    return moto_s3


def keys(s3, bucket: str, prefix: str) -> list[str]:
    return [o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", [])]


@pytest.mark.parametrize("which", ["input", "output"])
def test_a_storage_url_naming_a_missing_connection_fails_before_anything_is_paid(
    run_dag, openai_conn, default_credentials, tmp_path, monkeypatch, which
):
    s3, bucket, conn = (
        default_credentials["client"],
        default_credentials["bucket"],
        default_credentials["conn_id"],
    )
    prefix = f"guards-{which}"
    write_input(tmp_path / "input.jsonl", [f"{which}-{i}" for i in range(3)])
    s3.upload_file(str(tmp_path / "input.jsonl"), bucket, f"{prefix}/input.jsonl")
    good, missing = f"s3://{conn}@{bucket}/{prefix}", f"s3://no_such_conn@{bucket}/{prefix}"
    paths = {"input": f"{good}/input.jsonl", "output": f"{good}/out"}
    paths[which] = f"{missing}/input.jsonl" if which == "input" else f"{missing}/out"
    dag_env(monkeypatch, "RELIABILITY", input=paths["input"], output=paths["output"])
    raised = record_raised(monkeypatch)

    run = run_dag(DAG_ID, "2026-11-06", retries=1, retry_delay=0.1)

    assert run.state == "failed"
    assert len(raised) == 1  # no retry spent on it
    (error,) = raised
    assert isinstance(error, OpenAIBatchStorageConnectionNotFound)
    assert "'no_such_conn'" in str(error) and f"{missing}/" in str(error)
    assert openai_conn.calls("POST", "/v1/files") == [] and openai_conn.paid_creates() == []
    assert keys(s3, bucket, prefix) == [f"{prefix}/input.jsonl"]  # nothing written beside the input


def test_read_results_on_a_missing_connection_says_so(
    run_dag, openai_conn, default_credentials, tmp_path, monkeypatch
):
    bucket, conn = default_credentials["bucket"], default_credentials["conn_id"]
    write_input(tmp_path / "input.jsonl", ["read-0", "read-1"])
    dag_env(
        monkeypatch, "RELIABILITY", input=tmp_path / "input.jsonl", output=f"s3://{conn}@{bucket}/guards-read"
    )
    assert run_dag(DAG_ID, "2026-11-07").state == "success"
    assert len(openai_conn.paid_creates()) == 1
    assert (
        len(list(read_results(f"s3://{conn}@{bucket}/guards-read/2026-11-07"))) == 2
    )  # the results are there

    with pytest.raises(OpenAIBatchStorageConnectionNotFound, match="'no_such_conn'"):
        list(read_results(f"s3://no_such_conn@{bucket}/guards-read/2026-11-07"))


def test_a_folder_another_task_wrote_is_refused_before_paying(run_dag, openai_conn, tmp_path, monkeypatch):
    ids = [f"owner-{i}" for i in range(4)]
    write_input(tmp_path / "input.jsonl", ids)
    date, out = "2026-11-08", tmp_path / "out"
    folder = out / date
    dag_env(monkeypatch, "RELIABILITY", input=tmp_path / "input.jsonl", output=out)
    assert run_dag(DAG_ID, date).state == "success"
    assert_paid(openai_conn, 1)
    first = json.loads((folder / "_manifest.json").read_text())
    assert first["written_by"] == {
        "dag_id": DAG_ID,
        "task_id": "run_batch",
        "map_index": -1,
        "run_id": first["written_by"]["run_id"],
    }

    # Another DAG's task, same folder: refused before anything is uploaded or paid, naming the writer.
    configure_outcome_dag(monkeypatch, input_path=str(tmp_path / "input.jsonl"), output_path=str(folder))
    raised = record_raised(monkeypatch)
    uploads = len(openai_conn.calls("POST", "/v1/files"))
    refused = run_dag(OUTCOME_DAG, date, retries=1, retry_delay=0.1)
    assert refused.state == "failed"
    (error,) = raised  # no retry spent on it
    assert isinstance(error, OpenAIBatchOutputOfAnotherTask)
    assert f"DAG {DAG_ID!r}, task 'run_batch'" in str(error) and "overwrite_other_results=True" in str(error)
    assert len(openai_conn.calls("POST", "/v1/files")) == uploads
    assert_paid(openai_conn, 1)
    assert json.loads((folder / "_manifest.json").read_text()) == first  # untouched

    # The same task rewrites its own folder as before (here: re-lands the batch it already paid for).
    again = run_dag(DAG_ID, date, run_after="2026-11-08T06:00:00")
    assert again.state == "success"
    assert_paid(openai_conn, 1)
    assert json.loads((folder / "_manifest.json").read_text())["written_by"]["run_id"] == again.run.run_id

    # Asked for explicitly, the other task replaces them.
    configure_outcome_dag(
        monkeypatch,
        input_path=str(tmp_path / "input.jsonl"),
        output_path=str(folder),
        overwrite_other_results=True,
    )
    replaced = run_dag(OUTCOME_DAG, date)
    assert replaced.state == "success", replaced.ti_states()
    assert_paid(openai_conn, 2)
    assert json.loads((folder / "_manifest.json").read_text())["written_by"]["dag_id"] == OUTCOME_DAG
    assert_each_custom_id_once(folder, ids, failed=set())
