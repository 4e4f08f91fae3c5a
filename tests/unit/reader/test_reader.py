"""read_results: one record per request from output and errors, joined to the requests, from any place."""

from __future__ import annotations

import gc
import json
import shutil
import subprocess
import sys
import textwrap

import fsspec
import pytest

from airflow_provider_openai_batch import read_results
from airflow_provider_openai_batch.reader import text
from tests.unit.reader.builders import chat_body, expired_line, ok_line, request, write_jsonl


def by_id(records):
    return {r["custom_id"]: r for r in records}


def test_folder_joined_to_requests_gives_each_answer_its_own_request(landed):
    with read_results(landed["folder"], landed["requests"]) as results:
        records = list(results)
    assert sorted(r["custom_id"] for r in records) == sorted(landed["ids"])
    for cid in landed["answered"]:
        record = by_id(records)[cid]
        assert record["status_code"] == 200
        assert text(record) == f"answer {cid}"
        assert record["request"]["messages"][0]["content"] == f"question {cid}"
        assert record["error"] is None


def test_errors_are_normalised_for_requests_that_never_ran_and_requests_refused(landed):
    records = by_id(read_results(landed["folder"]))
    expired, refused = records["r3"], records["r7"]
    assert expired["status_code"] is None and expired["response"] is None
    assert expired["error"]["code"] == "batch_expired"
    assert refused["status_code"] == 400 and refused["response"] is None
    assert refused["error"]["type"] == "invalid_request_error"
    assert "request" not in refused  # no requests given, no join


def test_batch_result_dict_output_file_and_include(landed):
    result = {
        "output_path": str(landed["folder"] / "output.jsonl"),
        "error_path": None,
        "output_paths": [str(landed["folder"] / "output.jsonl")],
        "error_paths": [],
        "status": "completed",
    }
    assert len(list(read_results(result))) == len(landed["answered"])
    only_output = list(read_results(landed["folder"] / "output.jsonl"))
    assert {r["custom_id"] for r in only_output} == set(landed["answered"])
    only_errors = list(read_results(landed["folder"], include="errors"))
    assert sorted(r["custom_id"] for r in only_errors) == ["r3", "r7"]
    with pytest.raises(ValueError, match="Expected `include`"):
        read_results(landed["folder"], include=("output", "logs"))


def test_folder_without_manifest_is_refused_as_still_landing(landed):
    (landed["folder"] / "_manifest.json").unlink()
    with pytest.raises(FileNotFoundError, match="still be landing"):
        read_results(landed["folder"])


def test_bad_source_types_and_dicts_are_refused_with_what_was_received():
    with pytest.raises(TypeError, match="received int"):
        read_results(42)
    with pytest.raises(ValueError, match="output_paths"):
        read_results({"status": "completed"})


def test_malformed_output_line_names_the_file_and_line(tmp_path):
    path = tmp_path / "output.jsonl"
    path.write_text(json.dumps(ok_line("a", chat_body("x"))) + "\n{not json\n")
    with pytest.raises(ValueError, match=r"line 2 of .*output\.jsonl"):
        list(read_results(path))


def test_iterable_of_bare_bodies_joins_through_the_manifests_prefix(landed):
    bodies = [request(cid, f"question {cid}")["body"] for cid in landed["ids"]]
    # The operator generated ids as f"{prefix}-{position:06d}": rebuild results keyed that way.
    prefix = landed["manifest"]["custom_id_prefix"]
    folder = landed["folder"]
    write_jsonl(folder / "output.jsonl", [ok_line(f"{prefix}-000005", chat_body("five"))])
    (folder / "errors.jsonl").unlink()
    manifest = {**landed["manifest"], "error_path": None, "error_paths": []}
    (folder / "_manifest.json").write_text(json.dumps(manifest))
    (record,) = read_results(folder, iter(bodies))
    assert record["request"]["messages"][0]["content"] == "question r5"
    # An output file carries no prefix: the caller must give it.
    with pytest.raises(ValueError, match="custom_id_prefix"):
        list(read_results(folder / "output.jsonl", bodies))
    (again,) = read_results(folder / "output.jsonl", bodies, custom_id_prefix=prefix)
    assert again["request"] == bodies[5]


def test_results_can_be_iterated_twice_with_a_one_shot_iterable_and_close_removes_the_index(landed):
    requests = (json.loads(line) for line in landed["requests"].read_text().splitlines())
    results = read_results(landed["folder"], requests)
    first, second = list(results), list(results)
    assert first == second and all(r["request"] is not None for r in first)
    index_dir = results._index._dir
    results.close()
    assert not __import__("os").path.exists(index_dir)


def test_fsspec_urls_are_read_without_airflow(landed):
    fs = fsspec.filesystem("memory")
    for name in ("output.jsonl", "errors.jsonl", "_manifest.json"):
        fs.pipe(f"/bucket/run/{name}", (landed["folder"] / name).read_bytes())
    fs.pipe("/bucket/requests.jsonl", landed["requests"].read_bytes())
    records = by_id(read_results("memory://bucket/run/", "memory://bucket/requests.jsonl"))
    assert set(records) == set(landed["ids"])
    assert records["r4"]["request"]["messages"][0]["content"] == "question r4"
    with pytest.raises(FileNotFoundError, match="memory://bucket/missing.jsonl"):
        list(read_results("memory://bucket/missing.jsonl"))


def test_reading_imports_no_airflow(landed):
    script = textwrap.dedent(
        f"""
        import sys
        from airflow_provider_openai_batch import read_results
        from airflow_provider_openai_batch.reader import text, embedding
        n = sum(1 for _ in read_results({str(landed["folder"])!r}, {str(landed["requests"])!r}))
        loaded = [m for m in sys.modules if m == "airflow" or m.startswith("airflow.")]
        print(n, loaded)
        """
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == f"{len(landed['ids'])} []"


@pytest.mark.integration
def test_airflow_connection_url_is_opened_through_object_storage(landed, moto_s3):
    s3, bucket = moto_s3["client"], moto_s3["bucket"]
    for name in ("output.jsonl", "errors.jsonl", "_manifest.json"):
        s3.put_object(Bucket=bucket, Key=f"reader/{name}", Body=(landed["folder"] / name).read_bytes())
    s3.put_object(Bucket=bucket, Key="reader-requests.jsonl", Body=landed["requests"].read_bytes())
    base = f"s3://{moto_s3['conn_id']}@{bucket}"
    records = by_id(read_results(f"{base}/reader/", f"{base}/reader-requests.jsonl"))
    assert set(records) == set(landed["ids"])
    assert records["r9"]["request"]["messages"][0]["content"] == "question r9"


def test_a_temporary_results_object_keeps_its_index_while_iterated(landed):
    joined = 0
    for record in read_results(landed["folder"], landed["requests"]):
        gc.collect()  # the Results object is unreferenced here; its index must survive until the loop ends
        joined += record["request"] is not None
    assert joined == len(landed["ids"])


def test_object_storage_path_folder_and_requests(landed):
    from airflow.sdk import ObjectStoragePath

    folder = ObjectStoragePath(f"file://{landed['folder']}")
    requests = ObjectStoragePath(f"file://{landed['requests']}")
    records = by_id(read_results(folder, requests))
    assert set(records) == set(landed["ids"])
    assert records["r0"]["request"]["messages"][0]["content"] == "question r0"


def numbered_folder(folder, named_at):
    """A folder as object storage lands a task of two batches: output-00000.jsonl and output-00001.jsonl, one
    error file (only the second batch had error lines), and a manifest naming them at ``named_at``."""
    write_jsonl(folder / "output-00000.jsonl", [ok_line(f"a{i}", chat_body(f"first {i}")) for i in range(3)])
    write_jsonl(folder / "output-00001.jsonl", [ok_line(f"b{i}", chat_body(f"second {i}")) for i in range(2)])
    write_jsonl(folder / "errors-00001.jsonl", [expired_line("b2"), expired_line("b3")])
    # Left by an earlier landing and not in the manifest: never read.
    write_jsonl(folder / "output.jsonl", [ok_line("stale", chat_body("old"))])
    manifest = {
        "output_path": None,
        "error_path": f"{named_at}/errors-00001.jsonl",
        "output_paths": [f"{named_at}/output-00000.jsonl", f"{named_at}/output-00001.jsonl"],
        "error_paths": [f"{named_at}/errors-00001.jsonl"],
        "custom_id_prefix": None,
    }
    (folder / "_manifest.json").write_text(json.dumps(manifest))
    return manifest


NUMBERED_IDS = ["a0", "a1", "a2", "b0", "b1", "b2", "b3"]


def test_a_folder_of_numbered_files_reads_every_listed_file_once(tmp_path):
    folder = tmp_path / "run"
    numbered_folder(folder, named_at=str(folder))
    records = list(read_results(folder))
    assert [r["custom_id"] for r in records] == NUMBERED_IDS  # output files in order, then errors
    assert [text(r) for r in records[:5]] == [*(f"first {i}" for i in range(3)), "second 0", "second 1"]
    assert [r["error"]["code"] for r in records[5:]] == ["batch_expired", "batch_expired"]
    assert [r["custom_id"] for r in read_results(folder, include="errors")] == ["b2", "b3"]
    assert [r["custom_id"] for r in read_results(folder, include="output")] == NUMBERED_IDS[:5]


def test_a_copied_folder_reads_the_files_beside_its_manifest(tmp_path):
    original = tmp_path / "run"
    numbered_folder(original, named_at="s3://aws_default@bucket/results/2026-11-01")
    copy = shutil.copytree(original, tmp_path / "copy")
    shutil.rmtree(original)  # nothing is read from the place the manifest names
    assert [r["custom_id"] for r in read_results(copy)] == NUMBERED_IDS
    fs = fsspec.filesystem("memory")
    for path in copy.iterdir():
        fs.pipe(f"/copied/run/{path.name}", path.read_bytes())
    assert [r["custom_id"] for r in read_results("memory://copied/run/")] == NUMBERED_IDS


def test_a_batch_result_dict_reads_each_listed_file(tmp_path):
    folder = tmp_path / "run"
    manifest = numbered_folder(folder, named_at=str(folder))
    assert [r["custom_id"] for r in read_results(manifest)] == NUMBERED_IDS
    only_first = {**manifest, "output_paths": manifest["output_paths"][:1], "error_paths": []}
    assert [r["custom_id"] for r in read_results(only_first)] == ["a0", "a1", "a2"]


def test_a_manifest_without_file_lists_is_refused_not_read_as_empty(tmp_path):
    folder = tmp_path / "run"
    write_jsonl(folder / "output.jsonl", [ok_line("a", chat_body("x"))])
    (folder / "_manifest.json").write_text(json.dumps({"output_path": str(folder / "output.jsonl")}))
    with pytest.raises(ValueError, match=r"_manifest.json to list the landed files in `output_paths`"):
        read_results(folder)
    # The file itself can still be read by its path.
    assert [r["custom_id"] for r in read_results(folder / "output.jsonl")] == ["a"]
