"""Request lines for the spooling tests (built by tests/support/builders.py) and a spool call that checks nothing
is left behind on failure."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from airflow_provider_openai_batch.requests_input.problems import InvalidRequestsError
from airflow_provider_openai_batch.requests_input.spool import spool_requests
from tests.support.builders import jsonl, line, request

__all__ = ["CHAT", "EMB", "failure", "jsonl", "line", "read_ids", "req", "spool"]

CHAT = "/v1/chat/completions"
EMB = "/v1/embeddings"


def req(i: int | str, model: str = "gpt-4o-mini", url: str = CHAT, **body: object) -> dict:
    """Request ``r{i}`` (or ``i`` itself when a string) saying ``hi {i}``; ``body`` adds fields to its body."""
    return request(f"r{i}" if isinstance(i, int) else i, model=model, url=url, content=f"hi {i}", **body)


def spool(data: bytes | object, tmp_path: Path, workdir: str = "spool", **kw):
    kw.setdefault("endpoint", CHAT)
    kw.setdefault("source_name", "requests.jsonl")
    src = io.BytesIO(data) if isinstance(data, bytes) else data
    return spool_requests(src, workdir=tmp_path / workdir, **kw)


def failure(data: bytes | object, tmp_path: Path, **kw) -> InvalidRequestsError:
    with pytest.raises(InvalidRequestsError) as info:
        spool(data, tmp_path, workdir="failed", **kw)
    # Nothing may be left behind: not a shard, not the folder spool_requests created.
    assert not (tmp_path / "failed").exists()
    return info.value


def read_ids(result) -> list[str]:
    ids = []
    for shard in result.shards:
        with open(shard.path, "rb") as f:
            ids.extend(json.loads(x)["custom_id"] for x in f)
    return ids
