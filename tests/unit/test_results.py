"""results.py: the pure bookkeeping behind the BatchResult (no Airflow, no network)."""

from __future__ import annotations

import json

import pytest

from airflow_provider_openai_batch import results
from tests.support.builders import batch

USAGE = {
    "input_tokens": 10,
    "input_tokens_details": {"cached_tokens": 4},
    "output_tokens": 20,
    "output_tokens_details": {"reasoning_tokens": 5},
    "total_tokens": 30,
}


def test_sum_counts_adds_every_batch_and_tolerates_missing_counts():
    batches = [
        batch(counts=(5, 4, 1)),
        batch(counts=(7, 2, 5)),
        {"id": "b", "request_counts": None},
        {"id": "c"},
    ]
    assert results.sum_counts(batches) == {"total": 12, "completed": 6, "failed": 6}
    assert results.sum_counts([]) == {"total": 0, "completed": 0, "failed": 0}
    assert results.sum_counts([{"request_counts": {"total": None, "completed": 1}}]) == {
        "total": 0,
        "completed": 1,
        "failed": 0,
    }


def test_sum_usage_adds_tokens_and_nested_details():
    other = {"input_tokens": 1, "output_tokens": 2, "total_tokens": 3}  # no details at all
    assert results.sum_usage(
        [batch(usage=USAGE), batch(usage=USAGE), batch(usage=other), batch(usage=None)]
    ) == {
        "input_tokens": 21,
        "output_tokens": 42,
        "total_tokens": 63,
        "cached_tokens": 8,
        "reasoning_tokens": 10,
    }
    assert results.sum_usage([]) == dict.fromkeys(
        ("input_tokens", "output_tokens", "total_tokens", "cached_tokens", "reasoning_tokens"), 0
    )


def test_failure_details_one_line_per_error_with_line_and_param():
    failed = batch(
        status="failed",
        errors={
            "object": "list",
            "data": [
                {"code": "url_mismatch", "line": 2, "message": "The url is wrong.", "param": "url"},
                {"code": "empty_file", "line": None, "message": "The input file is empty.", "param": None},
                {"code": "token_limit_exceeded", "message": "Enqueued token limit reached."},
            ],
        },
    )
    assert results.failure_details(failed) == (
        "  line 2: [url_mismatch] The url is wrong. (param url)\n"
        "  [empty_file] The input file is empty.\n"
        "  [token_limit_exceeded] Enqueued token limit reached."
    )


@pytest.mark.parametrize("errors", [None, {}, {"object": "list", "data": []}, {"data": None}])
def test_failure_details_without_errors_says_so(errors):
    assert (
        results.failure_details(batch(status="failed", errors=errors)) == "  (OpenAI gave no error details)"
    )


def test_build_result_single_batch():
    b = batch(usage=USAGE, counts=(3, 2, 1), error_file_id="file-err", model="gpt-4o-mini")
    result = results.build_result(
        [[b]],
        output_paths=["s3://c@b/o.jsonl"],
        error_paths=["s3://c@b/e.jsonl"],
        manifest_path="m",
        output_lines=2,
        error_lines=1,
        fingerprint="fp-1",
        custom_id_prefix="daily",
        cost={"total_usd": 0.25},
        written_by={"dag_id": "d", "task_id": "t", "map_index": -1, "run_id": "r"},
    )
    assert result == {
        "batch_id": "batch_1",
        "batch_ids": ["batch_1"],
        "status": "completed",
        "output_path": "s3://c@b/o.jsonl",
        "error_path": "s3://c@b/e.jsonl",
        "output_paths": ["s3://c@b/o.jsonl"],
        "error_paths": ["s3://c@b/e.jsonl"],
        "manifest_path": "m",
        "output_file_id": "file-out-batch_1",
        "error_file_id": "file-err",
        "output_file_ids": ["file-out-batch_1"],
        "error_file_ids": ["file-err"],
        "request_counts": {"total": 3, "completed": 2, "failed": 1},
        "output_lines": 2,
        "error_lines": 1,
        "usage": {
            "input_tokens": 10,
            "output_tokens": 20,
            "total_tokens": 30,
            "cached_tokens": 4,
            "reasoning_tokens": 5,
        },
        "shards": [
            {
                "batch_id": "batch_1",
                "status": "completed",
                "input_file_id": "file-in-batch_1",
                "output_file_id": "file-out-batch_1",
                "error_file_id": "file-err",
                "request_counts": {"total": 3, "completed": 2, "failed": 1},
            }
        ],
        "rounds": [["batch_1"]],
        "cost": {"total_usd": 0.25},
        "model": "gpt-4o-mini",
        "input_fingerprint": "fp-1",
        "custom_id_prefix": "daily",
        "invalid_output": None,
        "paid_twice": [],
        "written_by": {"dag_id": "d", "task_id": "t", "map_index": -1, "run_id": "r"},
    }
    json.dumps(result)  # JSON-safe: it goes to XCom and the manifest


def test_invalid_output_reaches_the_result_and_the_asset_summary():
    tally = {"total": 2, "reasons": {"truncated": 1, "invalid_json": 1}}
    result = results.build_result(
        [[batch(counts=(3, 3, 0))]],
        output_paths=["o"],
        error_paths=[],
        manifest_path="m",
        output_lines=3,
        error_lines=0,
        invalid_output=tally,
    )
    assert result["invalid_output"] == tally
    assert results.summary(result)["invalid_output"] == tally


def test_build_result_several_shards_sums_and_has_no_single_file_id():
    shards = [
        batch("b0", counts=(4, 4, 0), usage=USAGE),
        batch("b1", "expired", counts=(4, 1, 0), usage=USAGE, error_file_id="e1"),
        batch("b2", counts=(2, 0, 2), usage=None, output_file_id=None, error_file_id="e2"),
    ]
    result = results.build_result(
        [shards], output_paths=["o"], error_paths=["e"], manifest_path="m", output_lines=5, error_lines=5
    )
    assert result["batch_id"] == "b0" and result["batch_ids"] == ["b0", "b1", "b2"]
    assert result["status"] == "expired"
    assert result["output_file_id"] is None and result["error_file_id"] is None
    assert result["output_file_ids"] == ["file-out-b0", "file-out-b1"]
    assert result["error_file_ids"] == ["e1", "e2"]
    assert result["request_counts"] == {"total": 10, "completed": 5, "failed": 2}
    assert result["usage"]["total_tokens"] == 60 and result["usage"]["cached_tokens"] == 8
    assert [s["batch_id"] for s in result["shards"]] == ["b0", "b1", "b2"]
    assert result["shards"][2]["output_file_id"] is None
    assert result["rounds"] == [["b0", "b1", "b2"]]  # shards of one input: one round


def test_build_result_with_no_batches():
    result = results.build_result(
        [], output_paths=[], error_paths=[], manifest_path=None, output_lines=0, error_lines=0
    )
    assert result["batch_id"] is None and result["batch_ids"] == [] and result["status"] == "unknown"
    assert result["output_path"] is None and result["error_path"] is None
    assert result["output_paths"] == [] and result["error_paths"] == []


def test_several_landed_files_are_listed_with_no_single_path():
    outputs = ["s3://c@b/run/output-00000.jsonl", "s3://c@b/run/output-00001.jsonl"]
    result = results.build_result(
        [[batch("b0", counts=(2, 2, 0)), batch("b1", counts=(2, 1, 1), error_file_id="e1")]],
        output_paths=outputs,
        error_paths=["s3://c@b/run/errors-00001.jsonl"],
        manifest_path="s3://c@b/run/_manifest.json",
        output_lines=3,
        error_lines=1,
    )
    assert result["output_path"] is None  # two files: no single one to name
    assert result["output_paths"] == outputs
    assert result["error_path"] == "s3://c@b/run/errors-00001.jsonl"  # one error file: named
    assert result["error_paths"] == ["s3://c@b/run/errors-00001.jsonl"]
    json.dumps(result)


def test_one_landed_file_is_also_the_single_path_and_the_lists_are_copies():
    outputs = ["/data/run/output.jsonl"]
    result = results.build_result(
        [[batch(counts=(1, 1, 0))]],
        output_paths=outputs,
        error_paths=(),
        manifest_path="/data/run/_manifest.json",
        output_lines=1,
        error_lines=0,
    )
    assert result["output_path"] == "/data/run/output.jsonl" and result["output_paths"] == outputs
    assert result["error_path"] is None and result["error_paths"] == []
    outputs.append("/elsewhere/output.jsonl")  # the result keeps its own list
    assert result["output_paths"] == ["/data/run/output.jsonl"]


def test_the_asset_summary_carries_the_landed_file_lists():
    outputs = ["s3://c@b/run/output-00000.jsonl", "s3://c@b/run/output-00001.jsonl"]
    errors = ["s3://c@b/run/errors-00000.jsonl", "s3://c@b/run/errors-00001.jsonl"]
    result = results.build_result(
        [[batch("b0", counts=(2, 1, 1)), batch("b1", counts=(2, 1, 1))]],
        output_paths=outputs,
        error_paths=errors,
        manifest_path="s3://c@b/run/_manifest.json",
        output_lines=2,
        error_lines=2,
    )
    extra = results.summary(result)
    assert (extra["output_paths"], extra["error_paths"]) == (outputs, errors)
    assert extra["output_path"] is None and extra["error_path"] is None
    assert extra["manifest_path"] == "s3://c@b/run/_manifest.json"
    assert extra["output_paths"] is not result["output_paths"]  # a copy: the event cannot change the result
    json.dumps(extra)
