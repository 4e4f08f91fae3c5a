"""An input on S3 is read ahead: its blocks come by ranged reads, several in flight at once, and are handed out
whole and in order, whatever the read sizes; an object replaced mid-read fails the read instead of mixing two
versions. Against moto_server, through the Airflow connection, opened as the operator opens an input.
"""

from __future__ import annotations

import threading
import time

import pytest

from airflow_provider_openai_batch import files, storage
from airflow_provider_openai_batch.files import ReadAhead
from airflow_provider_openai_batch.requests_input.spool import spool_requests
from tests.unit.requests_input.spooling import CHAT, line, req

pytestmark = pytest.mark.integration

BLOCK = 64 * 1024


@pytest.fixture
def small_blocks(monkeypatch):
    """Blocks of 64 KiB, 3 in flight, and each ranged read held 20 ms: many blocks, and reads that overlap."""
    monkeypatch.setattr(files, "READ_AHEAD_BLOCK", BLOCK)
    monkeypatch.setattr(files, "READ_AHEAD", 3)
    seen = {"ranges": [], "in_flight": 0, "most": 0}
    lock = threading.Lock()
    fetch = ReadAhead._fetch

    def counted(self, start, end):
        with lock:
            seen["ranges"].append((start, end))
            seen["in_flight"] += 1
            seen["most"] = max(seen["most"], seen["in_flight"])
        try:
            time.sleep(0.02)
            return fetch(self, start, end)
        finally:
            with lock:
                seen["in_flight"] -= 1

    monkeypatch.setattr(ReadAhead, "_fetch", counted)
    return seen


def put(moto_s3, key: str, data: bytes) -> str:
    moto_s3["client"].put_object(Bucket=moto_s3["bucket"], Key=key, Body=data)
    return f"s3://{moto_s3['conn_id']}@{moto_s3['bucket']}/{key}"


def requests_bytes(n: int) -> bytes:
    return b"".join(
        line(req(i, messages=[{"role": "user", "content": "x" * (i % 300)}])) + b"\n" for i in range(n)
    )


def test_an_s3_input_is_read_whole_and_in_order_with_ranged_reads_in_flight(moto_s3, small_blocks):
    data = requests_bytes(3000)
    assert len(data) % BLOCK and len(data) > 10 * BLOCK
    url = put(moto_s3, "read-ahead/in.jsonl", data)
    sizes = [1, 999, 70_000, 1 << 20, 3, BLOCK, BLOCK - 1]

    with storage.open_input(url) as source:
        assert isinstance(source, ReadAhead)
        pieces = []
        while piece := source.read(sizes[len(pieces) % len(sizes)]):
            pieces.append(piece)
        assert source.read(10) == b""

    assert b"".join(pieces) == data
    ends = [0] + [end for _, end in small_blocks["ranges"]]
    assert small_blocks["ranges"] == list(zip(ends, ends[1:], strict=False)) and ends[-1] == len(data)
    assert 1 < small_blocks["most"] <= 3


def test_spooling_an_s3_input_gives_what_the_same_local_file_gives(moto_s3, small_blocks, tmp_path):
    data = requests_bytes(2000)
    (tmp_path / "in.jsonl").write_bytes(data)
    url = put(moto_s3, "read-ahead/spool.jsonl", data)

    with storage.open_input(url) as source:
        remote = spool_requests(source, endpoint=CHAT, workdir=tmp_path / "remote", source_name=url)
    local = spool_requests(tmp_path / "in.jsonl", endpoint=CHAT, workdir=tmp_path / "local", source_name="in")

    assert remote.fingerprint == local.fingerprint and remote.total_requests == 2000
    assert [open(s.path, "rb").read() for s in remote.shards] == [
        open(s.path, "rb").read() for s in local.shards
    ]
    assert len(small_blocks["ranges"]) == -(-len(data) // BLOCK) > 5  # every block read once


def test_an_object_replaced_mid_read_fails_the_read(moto_s3, small_blocks):
    data = requests_bytes(3000)
    url = put(moto_s3, "read-ahead/replaced.jsonl", data)

    with storage.open_input(url) as source, pytest.raises(OSError) as raised:
        first = source.read(BLOCK)
        put(moto_s3, "read-ahead/replaced.jsonl", data.replace(b"gpt-4o-mini", b"gpt-4o-MINI"))  # same size
        while source.read(BLOCK):
            pass

    assert first == data[:BLOCK]
    assert "replaced.jsonl" in str(raised.value)


def test_closing_mid_read_stops_the_reads_in_flight(moto_s3, small_blocks):
    url = put(moto_s3, "read-ahead/closed.jsonl", requests_bytes(3000))

    source = storage.open_input(url)
    source.read(10)
    assert any(t.name.startswith("read-ahead") for t in threading.enumerate())
    source.close()

    assert source.closed and not [t for t in threading.enumerate() if t.name.startswith("read-ahead")]
    with pytest.raises(ValueError, match="closed"):
        source.read(10)
