"""storage.py: landing files atomically on local storage, and turning paths and URLs into ObjectStoragePaths."""

from __future__ import annotations

import json

import pytest

from airflow_provider_openai_batch import storage
from airflow_provider_openai_batch.exceptions import (
    OpenAIBatchOutputOfAnotherTask,
    OpenAIBatchStorageConnectionNotFound,
    OpenAIBatchStorageError,
)


def test_to_path_for_a_plain_relative_path_is_an_absolute_file_url(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = storage.to_path("results/out.jsonl")
    assert path.protocol == "file"
    assert path.path == str(tmp_path / "results" / "out.jsonl")
    assert str(path) == f"file://{tmp_path}/results/out.jsonl"


def test_to_path_for_urls_and_existing_paths(tmp_path, monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_AWS_CONN", '{"conn_type": "aws"}')
    local = storage.to_path(f"file://{tmp_path}/x.jsonl")
    assert (local.protocol, local.path) == ("file", f"{tmp_path}/x.jsonl")
    assert storage.to_path(local) is local
    assert storage.to_path(tmp_path / "y").path == str(tmp_path / "y")  # a pathlib.Path
    s3 = storage.to_path("s3://aws_conn@my-bucket/results/2026-11-01/output.jsonl")
    # Airflow 3.1 keeps the connection in storage_options (no .conn_id) and in .bucket; .path is the same.
    conn_id = getattr(s3, "conn_id", None) or s3.storage_options.get("conn_id")
    assert (s3.protocol, conn_id, s3.path) == ("s3", "aws_conn", "my-bucket/results/2026-11-01/output.jsonl")
    assert storage.bucket_and_key(s3) == ("my-bucket", "results/2026-11-01/output.jsonl")


def test_write_json_writes_sorted_indented_json_atomically(tmp_path):
    dest = storage.to_path(tmp_path / "_manifest.json")
    storage.write_json({"b": [1, 2], "a": None}, dest)
    text = (tmp_path / "_manifest.json").read_text()
    assert json.loads(text) == {"a": None, "b": [1, 2]}
    assert text.index('"a"') < text.index('"b"') and "\n  " in text
    storage.write_json({"replaced": True}, dest)
    assert json.loads((tmp_path / "_manifest.json").read_text()) == {"replaced": True}
    assert [p.name for p in tmp_path.iterdir()] == ["_manifest.json"]


def test_write_json_failure_leaves_no_file(tmp_path):
    with pytest.raises(OpenAIBatchStorageError) as info:
        storage.write_json({"not json": object()}, storage.to_path(tmp_path / "_manifest.json"))
    assert isinstance(info.value.__cause__, TypeError)
    assert list(tmp_path.iterdir()) == []


def test_remove_if_exists(tmp_path):
    (tmp_path / "f").write_text("x")
    storage.remove_if_exists(storage.to_path(tmp_path / "f"))
    storage.remove_if_exists(storage.to_path(tmp_path / "f"))  # already gone: no error
    assert not (tmp_path / "f").exists()


def test_open_input_reads_local_files_and_names_a_missing_one(tmp_path):
    (tmp_path / "in.jsonl").write_bytes(b"line\n")
    with storage.open_input(str(tmp_path / "in.jsonl")) as fh:
        assert fh.read() == b"line\n"
    with pytest.raises(FileNotFoundError, match="missing.jsonl"):
        storage.open_input(str(tmp_path / "missing.jsonl"))


@pytest.mark.parametrize(
    ("url", "named"),
    [
        ("s3://aws_conn@bucket/key.jsonl", "aws_conn"),
        ("gs://gcp@bucket/a@b/key.jsonl", "gcp"),  # an @ further down the key is not a connection
        ("s3://bucket/key.jsonl", None),
        ("file:///tmp/x@y/key.jsonl", None),
        ("/tmp/a@b/key.jsonl", None),
        (None, None),
    ],
)
def test_the_connection_a_url_names_must_exist(monkeypatch, url, named):
    monkeypatch.delenv(f"AIRFLOW_CONN_{(named or 'x').upper()}", raising=False)
    if named is None:
        storage.check_connections(url)  # names none: nothing to check
        return
    with pytest.raises(OpenAIBatchStorageConnectionNotFound) as missing:
        storage.check_connections("/local/input.jsonl", url)
    assert f"connection {named!r}, named in {url}," in str(missing.value)
    with pytest.raises(OpenAIBatchStorageConnectionNotFound):
        storage.to_path(url)
    monkeypatch.setenv(f"AIRFLOW_CONN_{named.upper()}", '{"conn_type": "aws"}')
    storage.check_connections(url)


ME = {"dag_id": "d", "task_id": "t", "map_index": -1, "run_id": "r1"}


@pytest.mark.parametrize(
    ("manifest", "refused"),
    [
        (None, None),
        (
            {"written_by": {**ME, "run_id": "another run"}},
            None,
        ),  # the same task, any run, rewrites its folder
        ({"written_by": {**ME, "map_index": 3}}, "DAG 'd', task 't' (map index 3, run 'r1')"),
        ({"written_by": {**ME, "task_id": "other"}}, "task 'other'"),
        ({"written_by": {**ME, "dag_id": "other"}}, "DAG 'other'"),
        ({"batch_ids": ["b"]}, "a writer it does not name"),
        ("not json", "a writer it does not name"),
    ],
)
def test_a_folder_another_task_wrote_is_refused(tmp_path, manifest, refused, caplog):
    if manifest is not None:
        text = manifest if isinstance(manifest, str) else json.dumps(manifest)
        (tmp_path / "_manifest.json").write_text(text)
    if refused is None:
        storage.check_results_owner(tmp_path, ME, overwrite=False)
        return
    with pytest.raises(OpenAIBatchOutputOfAnotherTask) as other:
        storage.check_results_owner(tmp_path, ME, overwrite=False)
    assert refused in str(other.value) and str(tmp_path) in str(other.value)
    storage.check_results_owner(tmp_path, ME, overwrite=True)
    assert "overwrite_other_results=True" in caplog.text


def test_results_writer_names_the_task_and_run():
    class Identity:
        dag_id, task_id, map_index, run_id, logical_date = "d", "t", 2, "r", "2026-11-01"

    assert storage.results_writer(Identity()) == {
        "dag_id": "d",
        "task_id": "t",
        "map_index": 2,
        "run_id": "r",
    }
