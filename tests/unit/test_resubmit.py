"""resubmit.py: which error lines are worth sending again, and spooling those requests from the input files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from airflow_provider_openai_batch.resubmit import collect_retryable, is_retryable

ENDPOINT = "/v1/chat/completions"


def http_error(status: int) -> dict:
    return {
        "id": "batch_req_1",
        "custom_id": "c",
        "response": {"status_code": status, "request_id": "req_1", "body": {"error": {"message": "x"}}},
        "error": None,
    }


def batch_error(code: str) -> dict:
    return {"id": "batch_req_1", "custom_id": "c", "response": None, "error": {"code": code, "message": "x"}}


@pytest.mark.parametrize(
    "line, retryable",
    [
        (http_error(429), True),
        (http_error(500), True),
        (http_error(502), True),
        (http_error(503), True),
        (http_error(408), True),
        (http_error(409), True),
        (http_error(400), False),
        (http_error(401), False),
        (http_error(404), False),
        (http_error(422), False),
        (batch_error("batch_expired"), True),
        (batch_error("rate_limit_exceeded"), True),
        (batch_error("server_error"), True),
        # Someone cancelled the batch on purpose: resubmitting would undo that.
        (batch_error("batch_cancelled"), False),
        (batch_error("invalid_request"), False),
        ({"custom_id": "c", "response": None, "error": None}, False),
        ({"custom_id": "c", "response": {"status_code": "500"}, "error": None}, False),
        ({"custom_id": "c"}, False),
    ],
    ids=lambda v: json.dumps(v)[:60] if isinstance(v, dict) else str(v),
)
def test_is_retryable(line, retryable):
    assert is_retryable(line) is retryable


def request(cid: str) -> dict:
    return {
        "custom_id": cid,
        "method": "POST",
        "url": ENDPOINT,
        "body": {"model": "m", "messages": [{"role": "user", "content": cid}]},
    }


def jsonl(rows) -> bytes:
    return b"".join(json.dumps(r).encode() + b"\n" for r in rows)


class FakeHook:
    """``download_file`` writes the content given for each file id, and records what was asked."""

    def __init__(self, files: dict[str, bytes]) -> None:
        self.files = files
        self.downloads: list[str] = []

    def download_file(self, file_id: str, local_path) -> tuple[int, int]:
        self.downloads.append(file_id)
        data = self.files[file_id]
        Path(local_path).write_bytes(data)
        return len(data), data.count(b"\n")


def spooled(result) -> list[dict]:
    rows = []
    for shard in result.shards:
        rows += [json.loads(x) for x in Path(shard.path).read_text().splitlines() if x.strip()]
    return rows


def test_collect_retryable_spools_original_requests_of_retryable_failures(tmp_path):
    hook = FakeHook(
        {
            "in-0": jsonl([request(f"a{i}") for i in range(5)]),
            "err-0": jsonl(
                [
                    {**http_error(500), "custom_id": "a1"},
                    {**http_error(400), "custom_id": "a2"},
                    {**batch_error("batch_expired"), "custom_id": "a4"},
                ]
            )
            + b"\n",  # a blank line is skipped
            "in-1": jsonl([request(f"b{i}") for i in range(3)]),
            "err-1": jsonl(
                [
                    {**http_error(429), "custom_id": "b0"},
                    {**batch_error("batch_cancelled"), "custom_id": "b2"},
                ]
            ),
            "in-2": jsonl([request("c0")]),
        }
    )
    batches = [
        {"id": "b0", "input_file_id": "in-0", "error_file_id": "err-0"},
        {"id": "b1", "input_file_id": "in-1", "error_file_id": "err-1"},
        {"id": "b2", "input_file_id": "in-2", "error_file_id": None},  # no errors: its input is never read
    ]

    result = collect_retryable(hook, batches, str(tmp_path), endpoint=ENDPOINT, source_name="in.jsonl")

    assert result is not None
    rows = spooled(result)
    assert [r["custom_id"] for r in rows] == ["a1", "a4", "b0"]
    assert rows[0] == request("a1")  # the original request, unchanged
    assert result.total_requests == 3
    assert "in-2" not in hook.downloads
    assert sorted(hook.downloads) == ["err-0", "err-1", "in-0", "in-1"]


def test_collect_retryable_returns_none_without_retryable_failures(tmp_path):
    hook = FakeHook(
        {"err": jsonl([http_error(400), batch_error("batch_cancelled")]), "in": jsonl([request("c")])}
    )
    batches = [
        {"id": "b", "input_file_id": "in", "error_file_id": "err"},
        {"id": "ok", "error_file_id": None},
    ]
    assert collect_retryable(hook, batches, str(tmp_path), endpoint=ENDPOINT, source_name="s") is None
    assert hook.downloads == ["err"]  # inputs are only read when something is to be resubmitted


def test_collect_retryable_with_no_error_files_downloads_nothing(tmp_path):
    hook = FakeHook({})
    batches = [{"id": "b", "input_file_id": "in", "error_file_id": None}]
    assert collect_retryable(hook, batches, str(tmp_path), endpoint=ENDPOINT, source_name="s") is None
    assert hook.downloads == []
