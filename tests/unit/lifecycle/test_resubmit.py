"""resubmit.py: spooling the original requests of the error lines worth sending again (which lines those are is
tabled in test_statuses.py)."""

from __future__ import annotations

import json
from pathlib import Path

from airflow_provider_openai_batch.lifecycle.resubmit import collect_retryable
from tests.support import builders
from tests.support.builders import ENDPOINT, jsonl
from tests.support.builders import batch_error_line as batch_error
from tests.support.builders import http_error_line as http_error
from tests.support.fakes import FakeBatchHook


def request(cid: str) -> dict:
    """A request whose message is its own id, so a resubmitted one is recognisably the original."""
    return builders.request(cid, model="m", content=cid)


def spooled(result) -> list[dict]:
    rows = []
    for shard in result.shards:
        rows += [json.loads(x) for x in Path(shard.path).read_text().splitlines() if x.strip()]
    return rows


def test_collect_retryable_spools_original_requests_of_retryable_failures(tmp_path):
    hook = FakeBatchHook(
        files={
            "in-0": jsonl(*(request(f"a{i}") for i in range(5))),
            "err-0": jsonl(
                http_error(500, "a1"), http_error(400, "a2"), batch_error("batch_expired", "a4"), b""
            ),  # a blank line is skipped
            "in-1": jsonl(*(request(f"b{i}") for i in range(3))),
            "err-1": jsonl(http_error(429, "b0"), batch_error("batch_cancelled", "b2")),
            "in-2": jsonl(request("c0")),
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
    hook = FakeBatchHook(
        files={"err": jsonl(http_error(400), batch_error("batch_cancelled")), "in": jsonl(request("c"))}
    )
    batches = [
        {"id": "b", "input_file_id": "in", "error_file_id": "err"},
        {"id": "ok", "error_file_id": None},
    ]
    assert collect_retryable(hook, batches, str(tmp_path), endpoint=ENDPOINT, source_name="s") is None
    assert hook.downloads == ["err"]  # inputs are only read when something is to be resubmitted


def test_collect_retryable_with_no_error_files_downloads_nothing(tmp_path):
    hook = FakeBatchHook()
    batches = [{"id": "b", "input_file_id": "in", "error_file_id": None}]
    assert collect_retryable(hook, batches, str(tmp_path), endpoint=ENDPOINT, source_name="s") is None
    assert hook.downloads == []
