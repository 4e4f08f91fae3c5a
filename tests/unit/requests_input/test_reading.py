"""Reading sources: files in chunks, local paths, iterables of dicts and lines, generated ids."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from airflow_provider_openai_batch.requests_input import reading
from airflow_provider_openai_batch.requests_input.reading import count_lines, iter_jsonl_lines
from airflow_provider_openai_batch.requests_input.shards import Limits
from airflow_provider_openai_batch.requests_input.spool import spool_requests
from tests.unit.requests_input.spooling import CHAT, failure, jsonl, line, read_ids, req, spool


def test_blank_lines_and_missing_final_newline_are_tolerated(tmp_path):
    data = b"\n" + line(req(1)) + b"\n   \n\r\n" + line(req(2))  # no final newline
    result = spool(data, tmp_path)
    assert result.total_requests == 2
    assert Path(result.shards[0].path).read_bytes() == line(req(1)) + b"\n" + line(req(2)) + b"\n"


def test_blank_lines_still_count_for_line_numbers(tmp_path):
    data = b"\n\n" + line(req(1)) + b"\n\n" + line({"custom_id": "x"}) + b"\n"
    err = failure(data, tmp_path)
    assert [(p.line, p.field) for p in err.problems] == [(5, "method")]


def test_utf8_bom_at_start_is_dropped(tmp_path):
    result = spool(b"\xef\xbb\xbf" + jsonl(req(1)), tmp_path)
    assert result.total_requests == 1


def test_local_path_source(tmp_path):
    path = tmp_path / "in.jsonl"
    path.write_bytes(jsonl(req(1), req(2)))
    result = spool_requests(path, endpoint=CHAT, workdir=tmp_path / "w", source_name="in.jsonl")
    assert result.total_requests == 2


def test_lines_spanning_read_chunks(tmp_path, monkeypatch):
    monkeypatch.setattr(reading, "CHUNK_SIZE", 7)
    data = jsonl(*(req(i) for i in range(50)))
    result = spool(data, tmp_path)
    assert Path(result.shards[0].path).read_bytes() == data
    assert list(iter_jsonl_lines(io.BytesIO(data), chunk_size=5)) == data.split(b"\n")[:-1]


def test_line_too_large_across_read_chunks_is_not_assembled(tmp_path, monkeypatch):
    monkeypatch.setattr(reading, "CHUNK_SIZE", 64)
    limits = Limits(max_bytes=300, safety_margin=1)
    data = jsonl(req(1), req(2, pad="x" * 5000), req(3)) + b"x" * 1000  # and an unfinished huge last line
    err = failure(data, tmp_path, limits=limits)
    assert [(p.line, p.field) for p in err.problems] == [(2, None), (4, None)]
    assert "line is 5,1" in err.problems[0].message


def test_bare_bodies_get_positional_ids(tmp_path):
    bodies = [{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": str(i)}]} for i in range(3)]
    items = [bodies[0], req("mine"), bodies[2]]
    result = spool(iter(items), tmp_path, custom_id_prefix="dag.task.2026-11-26")
    assert read_ids(result) == ["dag.task.2026-11-26-000000", "mine", "dag.task.2026-11-26-000002"]
    first = json.loads(Path(result.shards[0].path).read_bytes().splitlines()[0])
    assert first == {
        "custom_id": "dag.task.2026-11-26-000000",
        "method": "POST",
        "url": CHAT,
        "body": bodies[0],
    }
    again = spool(iter(items), tmp_path / "again", custom_id_prefix="dag.task.2026-11-26")
    assert again.fingerprint == result.fingerprint


def test_bare_body_without_prefix_is_missing_custom_id(tmp_path):
    err = failure(iter([req(1), {"model": "gpt-4o-mini"}]), tmp_path)
    assert [(p.line, p.field, p.message) for p in err.problems] == [(2, "custom_id", "missing")]


def test_iterable_of_lines_and_unusable_items(tmp_path):
    result = spool([line(req(1)).decode() + "\n", line(req(2)), "", b"  "], tmp_path)
    assert result.total_requests == 2
    err = failure([req(1), {"custom_id": "x", "body": {1, 2}}, 42, '{"a":\n1}'], tmp_path)
    assert [(p.line, p.field) for p in err.problems] == [(2, None), (3, None), (4, None)]
    assert "cannot be serialized" in err.problems[0].message
    assert "received int" in err.problems[1].message
    assert "line break" in err.problems[2].message


def test_source_read_error_leaves_nothing(tmp_path):
    class Broken(io.RawIOBase):
        calls = 0

        def readable(self):
            return True

        def read(self, n=-1):
            self.calls += 1
            if self.calls > 1:
                raise OSError("connection reset")
            return jsonl(req(1), req(2))

    with pytest.raises(OSError, match="connection reset"):
        spool(Broken(), tmp_path)
    assert not (tmp_path / "spool").exists()


@pytest.mark.parametrize("chunk_size", [1, 2, 3, 7, 64, 1 << 20])
def test_read_batches_hold_every_line_once_in_order(chunk_size):
    """Each batch is its head lines, then a region of whole lines as read (newlines in place, counted
    without splitting); together they are the file's lines, whatever the chunk size."""
    data = (
        b"\xef\xbb\xbf" + b'{"a": 1}\n\n  \r\n' + b'{"b": "' + b"x" * 150 + b'"}\n{"c": 3}'
    )  # no final newline
    batches = list(reading.read_line_batches(io.BytesIO(data), chunk_size, 1 << 20))
    lines = [got for batch in batches for got in batch.lines()]
    assert lines == data[3:].split(b"\n")
    for batch in batches:
        if batch.region is not None:
            region = bytes(batch.region)
            assert region.count(b"\n") == batch.count and (not region or region.endswith(b"\n"))
            assert len(batch.head) <= 1


def test_a_chunk_whose_lines_all_fit_is_written_without_splitting(tmp_path, monkeypatch):
    """Once the shard is open and the model known, a read chunk of valid lines goes to the shard as read:
    its lines are never split (only the first chunk, which opens the shard, is)."""
    monkeypatch.setattr(reading, "CHUNK_SIZE", 4096)
    splits = []
    real = reading.Batch.region_lines
    monkeypatch.setattr(reading.Batch, "region_lines", lambda self: splits.append(self.count) or real(self))
    data = jsonl(*(req(i) for i in range(500)))

    result = spool(io.BytesIO(data), tmp_path)

    assert result.total_requests == 500 and Path(result.shards[0].path).read_bytes() == data
    assert len(data) // 4096 > 10 and len(splits) == 1, splits


@pytest.mark.parametrize(
    "chunk",
    [
        b"",
        b"no newline",
        b"\n",
        b"\n" * 5000,
        (b"x" * 116_000 + b"\n") * 9,
        (b"x" * 99 + b"\n") * 20_000 + b"tail",
        (b"x" * 1023 + b"\n") * 1024 + b"x" * 10,
        b"x" * 3000 + b"\n" + b"y\n" * 3,
    ],
    ids=[
        "empty",
        "no-newline",
        "one",
        "only-newlines",
        "long-lines",
        "short-lines",
        "at-the-switch",
        "mixed",
    ],
)
def test_count_lines_agrees_with_bytes_count(chunk):
    assert count_lines(chunk) == chunk.count(b"\n")
    for start, end in [(0, len(chunk) // 2), (len(chunk) // 3, len(chunk)), (1, max(1, len(chunk) - 1))]:
        assert count_lines(chunk, start, end) == chunk.count(b"\n", start, end), (start, end)
