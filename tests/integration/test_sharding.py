"""Sharding at scale (issue 4): a 120,000-request input becomes 3 batches on the emulator and one merged result;
a bad line deep in a large input fails the task before anything is uploaded. Run through Airflow (dag.test())."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from airflow_provider_openai_batch import exceptions as exc
from tests.support.assertions import ids_in
from tests.support.journal import api_client, batch_posts
from tests.support.operator_runs import (
    OUTCOME_DAG,
    configure_outcome_dag,
    raised_fixture,  # noqa: F401 - the `raised` fixture
)

pytestmark = pytest.mark.integration

DAG_ID = OUTCOME_DAG
N = 120_000
# Every request whose index is a multiple of 997 fails (the emulator answers it 500): the error file is merged too.
FAIL_EVERY = 997


def write_tiny_requests(path: Path, n: int, *, bad_line: int | None = None) -> None:
    """n tiny chat requests ``r{i}``; ``bad_line`` (1-based) gets a url that does not match the endpoint."""
    template = (
        '{"custom_id": "r%d", "method": "POST", "url": "%s", '
        '"body": {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi %d"}]%s}}\n'
    )
    with open(path, "w") as fh:
        for i in range(n):
            url = "/v1/embeddings" if bad_line == i + 1 else "/v1/chat/completions"
            extra = ', "x_emulator_status": 500' if i % FAIL_EVERY == 0 else ""
            fh.write(template % (i, url, i, extra))


def test_120k_requests_become_three_batches_and_one_merged_result(
    run_dag, openai_conn, tmp_path, monkeypatch, raised
):
    openai_conn.configure(rate=0)  # as fast as possible
    source, out = tmp_path / "big.jsonl", tmp_path / "out"
    write_tiny_requests(source, N)
    failing = {f"r{i}" for i in range(0, N, FAIL_EVERY)}
    configure_outcome_dag(
        monkeypatch, input_path=str(source), output_path=str(out), max_failed_ratio=0.01, poll_interval=0.5
    )

    outcome = run_dag(DAG_ID, "2026-11-10")

    assert outcome.state == "success", (outcome.ti_states(), raised)
    assert len(batch_posts(openai_conn)) == 3
    assert len(openai_conn.calls("POST", "/v1/files")) == 3
    output_ids, error_ids = ids_in(out / "output.jsonl"), ids_in(out / "errors.jsonl")
    assert len(output_ids) + len(error_ids) == N
    assert set(output_ids) | set(error_ids) == {f"r{i}" for i in range(N)}
    assert len(set(output_ids)) == len(output_ids) and len(set(error_ids)) == len(error_ids)
    assert set(error_ids) == failing

    result = outcome.xcoms[("run_batch", "return_value")]
    assert len(result["batch_ids"]) == 3 and result["rounds"] == [result["batch_ids"]]
    assert result["status"] == "completed"
    assert result["request_counts"] == {"total": N, "completed": N - len(failing), "failed": len(failing)}
    assert (result["output_lines"], result["error_lines"]) == (N - len(failing), len(failing))
    client = api_client(openai_conn)
    batches = [client.batches.retrieve(b) for b in result["batch_ids"]]
    # Default limits: 47,500 requests per shard (95% of 50,000).
    assert [b.request_counts.total for b in batches] == [47_500, 47_500, 25_000]
    for key in ("input_tokens", "output_tokens", "total_tokens"):
        assert result["usage"][key] == sum(getattr(b.usage, key) for b in batches) > 0
    assert result["output_file_id"] is None and len(result["output_file_ids"]) == 3

    manifest = json.loads((out / "_manifest.json").read_text())
    assert [s["batch_id"] for s in manifest["shards"]] == result["batch_ids"]
    assert [s["request_counts"]["total"] for s in manifest["shards"]] == [47_500, 47_500, 25_000]
    assert manifest == result


def test_bad_line_deep_in_a_large_input_fails_before_uploading(
    run_dag, openai_conn, tmp_path, monkeypatch, raised
):
    source, out = tmp_path / "big.jsonl", tmp_path / "out"
    write_tiny_requests(source, 60_000, bad_line=58_321)
    configure_outcome_dag(monkeypatch, input_path=str(source), output_path=str(out))

    outcome = run_dag(DAG_ID, "2026-11-11")

    assert outcome.state == "failed"
    assert len(raised) == 1 and type(raised[0]) is exc.OpenAIBatchInputError, raised
    err = raised[0]
    assert str(source) in str(err) and "line 58321" in str(err) and "'url'" in str(err)
    assert [p.line for p in err.problems] == [58_321] and err.total == 1
    assert openai_conn.calls("POST", "/v1/files") == []
    assert len(batch_posts(openai_conn)) == 0
    assert not out.exists()


def test_max_shards_in_flight_submits_in_waves_and_merges_every_shard(
    run_dag, openai_conn, tmp_path, monkeypatch, raised
):
    # Each batch spends at least 0.8 s validating and finalizing: a wave boundary shows as a gap that long.
    openai_conn.configure(rate=0, validating_seconds=0.5, finalizing_seconds=0.3)
    source, out = tmp_path / "in.jsonl", tmp_path / "out"
    write_tiny_requests(source, 50)
    failing = {f"r{i}" for i in range(0, 50, FAIL_EVERY)}
    # 10 requests per shard (95% margin on 11) → 5 shards, at most 2 in flight → waves of 2, 2, 1.
    configure_outcome_dag(
        monkeypatch,
        input_path=str(source),
        output_path=str(out),
        limits={"max_requests": 11},
        max_shards_in_flight=2,
        max_failed_ratio=0.1,
    )

    outcome = run_dag(DAG_ID, "2026-11-12")

    assert outcome.state == "success", (outcome.ti_states(), raised)
    posts = [c["time"] for c in batch_posts(openai_conn)]
    assert len(posts) == 5
    gaps = [b - a for a, b in zip(posts, posts[1:], strict=False)]
    assert gaps[1] >= 0.8 and gaps[3] >= 0.8, gaps  # a new wave only after the last one finished
    assert gaps[0] < 0.8 and gaps[2] < 0.8, gaps  # within a wave, created together
    result = outcome.xcoms[("run_batch", "return_value")]
    assert len(result["batch_ids"]) == 5 and len(result["shards"]) == 5
    landed = ids_in(out / "output.jsonl") + ids_in(out / "errors.jsonl")
    assert sorted(landed) == sorted(f"r{i}" for i in range(50))
    assert set(ids_in(out / "errors.jsonl")) == failing
