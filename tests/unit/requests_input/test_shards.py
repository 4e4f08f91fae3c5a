"""Shard files: lines copied byte for byte, new shards before any per-file limit is crossed."""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

import pytest

from airflow_provider_openai_batch.requests_input.problems import InvalidRequestsError
from airflow_provider_openai_batch.requests_input.shards import Limits
from airflow_provider_openai_batch.requests_input.validation import count_embedding_inputs
from tests.unit.requests_input.spooling import EMB, failure, jsonl, line, read_ids, req, spool


def test_spools_lines_byte_for_byte(tmp_path):
    # Odd spacing and key order must survive: lines are copied, never re-serialized.
    first = b'{ "body": {"model": "gpt-4o-mini"},  "url": "/v1/chat/completions", "method": "POST", "custom_id": "a"}'
    data = first + b"\n" + line(req(1)) + b"\n"
    result = spool(data, tmp_path)
    assert result.total_requests == 2
    assert result.model == "gpt-4o-mini"
    assert len(result.shards) == 1
    shard = result.shards[0]
    assert Path(shard.path).read_bytes() == data
    assert shard.bytes == len(data) and shard.requests == 2 and shard.index == 0
    assert Path(shard.path).name == "shard-00000.jsonl"


def test_workdir_is_kept_when_it_existed(tmp_path):
    workdir = tmp_path / "spool"
    workdir.mkdir()
    (workdir / "other.txt").write_text("keep me")
    with pytest.raises(InvalidRequestsError):
        spool(jsonl(*(req(i) for i in range(20)), b"nope"), tmp_path, limits=Limits(max_requests=5))
    assert sorted(os.listdir(workdir)) == ["other.txt"]


def test_request_limit_splits(tmp_path):
    data = jsonl(*(req(i) for i in range(2500)))
    result = spool(data, tmp_path, limits=Limits(max_requests=1000, safety_margin=1))
    assert [s.requests for s in result.shards] == [1000, 1000, 500]
    assert [Path(s.path).name for s in result.shards] == [
        "shard-00000.jsonl",
        "shard-00001.jsonl",
        "shard-00002.jsonl",
    ]
    assert b"".join(Path(s.path).read_bytes() for s in result.shards) == data
    assert [s.bytes for s in result.shards] == [os.path.getsize(s.path) for s in result.shards]


def test_safety_margin_applies_to_requests(tmp_path):
    data = jsonl(*(req(i) for i in range(2500)))
    result = spool(data, tmp_path, limits=Limits(max_requests=1000))
    assert [s.requests for s in result.shards] == [950, 950, 600]


def test_byte_limit_splits(tmp_path):
    items = [req(i) for i in range(100, 200)]  # equal-length lines
    size = len(line(items[0])) + 1
    limits = Limits(max_bytes=size * 10 + size // 2, safety_margin=1)
    result = spool(jsonl(*items), tmp_path, limits=limits)
    assert [s.requests for s in result.shards] == [10] * 10
    assert all(s.bytes <= limits.shard_bytes for s in result.shards)


def test_embedding_inputs_limit_splits(tmp_path):
    def emb(i, value):
        return {
            "custom_id": f"e{i}",
            "method": "POST",
            "url": EMB,
            "body": {"model": "text-embedding-3-small", "input": value},
        }

    items = [
        emb(0, "one"),
        emb(1, ["a", "b", "c"]),
        emb(2, [[1, 2], [3]]),
        emb(3, [1, 2, 3]),
        emb(4, ["x"] * 4),
    ]
    assert [count_embedding_inputs(x["body"]["input"]) for x in items] == [1, 3, 2, 1, 4]
    result = spool(
        jsonl(*items), tmp_path, endpoint=EMB, limits=Limits(max_embedding_inputs=5, safety_margin=1)
    )
    assert [(s.requests, s.embedding_inputs) for s in result.shards] == [(2, 4), (2, 3), (1, 4)]
    assert result.embedding_inputs == 11

    err = failure(
        jsonl(emb(0, ["x"] * 6), emb(1, []), emb(2, 7)),
        tmp_path,
        endpoint=EMB,
        limits=Limits(max_embedding_inputs=5, safety_margin=1),
    )
    assert [(p.line, p.field) for p in err.problems] == [
        (1, "body.input"),
        (2, "body.input"),
        (3, "body.input"),
    ]
    assert "6 embedding inputs, more than the 5" in err.problems[0].message


def test_default_limits_on_120k_requests(tmp_path):
    n = 120_000
    data = b"".join(
        b'{"custom_id":"c%d","method":"POST","url":"/v1/chat/completions","body":{"model":"m"}}\n' % i
        for i in range(n)
    )
    start = time.perf_counter()
    result = spool(data, tmp_path)
    elapsed = time.perf_counter() - start
    assert [s.requests for s in result.shards] == [47_500, 47_500, 25_000]
    ids = read_ids(result)
    assert len(ids) == n and len(set(ids)) == n
    assert elapsed < 10
    # Over 8 MiB, so hashed on the helper thread in groups: still the sha256 of the bytes, in order.
    assert result.fingerprint == hashlib.sha256(data).hexdigest()


def test_limits_are_checked():
    with pytest.raises(ValueError, match="max_requests"):
        Limits(max_requests=0)
    with pytest.raises(ValueError, match="safety_margin"):
        Limits(safety_margin=1.5)
    default = Limits()
    assert (default.shard_requests, default.shard_bytes, default.shard_embedding_inputs) == (
        47_500,
        199_229_440,
        47_500,
    )


def _prompt_tokens(requests: list[dict]) -> list[int]:
    from airflow_provider_openai_batch.cost.estimate import prompt_tokens
    from airflow_provider_openai_batch.cost.tokens import token_counter

    count = token_counter("gpt-4o-mini").count
    return [prompt_tokens(r["body"], "/v1/chat/completions", count) for r in requests]


def test_an_enqueued_token_limit_cuts_shards_that_fit_it(tmp_path):
    requests = [req(i, messages=[{"role": "user", "content": f"hi {i} " + "x" * 200}]) for i in range(40)]
    tokens = _prompt_tokens(requests)
    limit = sum(tokens) // 3
    data = jsonl(*requests)
    result = spool(data, tmp_path, token_limits={"gpt-4o-mini": limit, "*": 1})

    assert result.token_limit == limit and len(result.shards) >= 3
    assert all(s.prompt_tokens is not None and s.prompt_tokens <= int(limit * 0.95) for s in result.shards)
    assert sum(s.prompt_tokens for s in result.shards) == sum(tokens)
    assert b"".join(Path(s.path).read_bytes() for s in result.shards) == data  # same bytes, same fingerprint
    assert result.fingerprint == spool(data, tmp_path, workdir="plain").fingerprint


def test_a_limit_that_never_binds_cuts_exactly_as_without_it(tmp_path):
    data = jsonl(*(req(i) for i in range(2500)))
    plain = spool(data, tmp_path, workdir="a", limits=Limits(max_requests=1000, safety_margin=1))
    limited = spool(
        data,
        tmp_path,
        workdir="b",
        limits=Limits(max_requests=1000, safety_margin=1),
        token_limits={"*": 10**9},
    )
    assert [s.requests for s in limited.shards] == [s.requests for s in plain.shards]
    assert plain.shards[0].prompt_tokens is None and limited.shards[0].prompt_tokens is not None


def test_a_request_over_the_limit_fails_validation_naming_line_and_limit(tmp_path):
    big = req(2, messages=[{"role": "user", "content": "y" * 4000}])
    err = failure(jsonl(req(1), big, req(3)), tmp_path, limits=Limits(enqueued_tokens=300))
    assert [(p.line, p.field) for p in err.problems] == [(2, "body")]
    assert "300 tokens" in str(err) and "gpt-4o-mini" in str(err)
