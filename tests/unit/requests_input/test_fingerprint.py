"""The input fingerprint: the sha256 of the request bytes, whatever the source or sharding."""

from __future__ import annotations

import pytest

from airflow_provider_openai_batch.requests_input.shards import Limits
from tests.unit.requests_input.spooling import req, spool


def test_fingerprint_stable_across_sources_and_sharding(tmp_path):
    items = [req(i) for i in range(300)]
    orjson = pytest.importorskip("orjson")
    data = b"".join(orjson.dumps(x) + b"\n" for x in items)
    a = spool(data, tmp_path / "a")
    b = spool(data, tmp_path / "b", limits=Limits(max_requests=50))
    c = spool(iter(items), tmp_path / "c")
    d = spool(data.rstrip(b"\n") + b"\n\n", tmp_path / "d")  # trailing blank line, not a request
    assert a.fingerprint == b.fingerprint == c.fingerprint == d.fingerprint
    assert len(a.fingerprint) == 64
    changed = spool(data.replace(b"hi 7", b"hi 8", 1), tmp_path / "e")
    assert changed.fingerprint != a.fingerprint
