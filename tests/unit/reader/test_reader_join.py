"""The request index: custom_id to the request body on disk; errors name the line."""

from __future__ import annotations

import pytest

from airflow_provider_openai_batch.reader.join import RequestIndex
from tests.unit.reader.builders import request, write_jsonl


def test_lookup_returns_the_body_of_each_line_with_bom_blank_lines_and_crlf(tmp_path):
    lines = [request(f"id-{i}", "é" * i) for i in range(30)]
    path = write_jsonl(tmp_path / "req.jsonl", lines)
    raw = path.read_bytes().replace(b"\n", b"\r\n", 5).replace(b"\r\n", b"\r\n\n", 1)
    path.write_bytes(b"\xef\xbb\xbf" + raw)
    index = RequestIndex(path)
    try:
        assert len(index) == 30
        for i in (0, 1, 7, 29):
            assert index.body(f"id-{i}") == lines[i]["body"]
        assert index.body("nope") is None
    finally:
        index.close()


def test_repeated_custom_id_names_its_line(tmp_path):
    path = write_jsonl(tmp_path / "req.jsonl", [request("a", "1"), request("b", "2"), request("a", "3")])
    with pytest.raises(ValueError, match=r"'a' on line 3 appeared before"):
        RequestIndex(path)


def test_lines_without_custom_id_and_bad_json_name_their_line(tmp_path):
    path = write_jsonl(tmp_path / "req.jsonl", [request("a", "1"), {"body": {}}])
    with pytest.raises(ValueError, match=r"`custom_id` on line 2 .* received None"):
        RequestIndex(path)
    path.write_text('{"custom_id": "a", "body": {}}\n{oops\n')
    with pytest.raises(ValueError, match="JSON object on line 2"):
        RequestIndex(path)


def test_iterable_of_mixed_requests_lines_and_bare_bodies(tmp_path):
    items = [request("given", "x"), '{"custom_id": "line", "body": {"n": 2}}', {"model": "m", "n": 3}]
    index = RequestIndex(iter(items), custom_id_prefix="p")
    try:
        assert index.body("given") == items[0]["body"]
        assert index.body("line") == {"n": 2}
        assert index.body("p-000002") == {"model": "m", "n": 3}
    finally:
        index.close()


def test_a_failed_build_leaves_no_temporary_files(tmp_path, monkeypatch):
    monkeypatch.setenv("TMPDIR", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", None)
    with pytest.raises(ValueError):
        RequestIndex([{"model": "m"}])  # a bare body and no prefix
    assert list((tmp_path / "tmp").iterdir()) == []
