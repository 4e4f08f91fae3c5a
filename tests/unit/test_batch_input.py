"""Pre-flight validation, spooling, sharding and fingerprinting of Batch API input."""

from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import time
from pathlib import Path

import pytest

from airflow_provider_openai_batch.requests_input import codec, duplicates, reading
from airflow_provider_openai_batch.batch_input import (
    InvalidRequestsError,
    Limits,
    Problem,
    count_embedding_inputs,
    iter_jsonl_lines,
    spool_requests,
)

CHAT = "/v1/chat/completions"
EMB = "/v1/embeddings"


@pytest.fixture(autouse=True, params=["1MiB-reads", "small-reads"])
def read_size(request, monkeypatch):
    """Run every test with one big read (careful mode) and with tiny reads (many batches, fast mode)."""
    if request.param == "small-reads":
        monkeypatch.setattr(reading, "CHUNK_SIZE", 300)


def req(i: int | str, model: str = "gpt-4o-mini", url: str = CHAT, **body: object) -> dict:
    return {
        "custom_id": f"r{i}" if isinstance(i, int) else i,
        "method": "POST",
        "url": url,
        "body": {"model": model, "messages": [{"role": "user", "content": f"hi {i}"}], **body},
    }


def line(obj: object) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


def jsonl(*items: object) -> bytes:
    return b"".join((x if isinstance(x, bytes) else line(x)) + b"\n" for x in items)


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


# --- happy path -----------------------------------------------------------------------------


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


def test_workdir_is_kept_when_it_existed(tmp_path):
    workdir = tmp_path / "spool"
    workdir.mkdir()
    (workdir / "other.txt").write_text("keep me")
    with pytest.raises(InvalidRequestsError):
        spool(jsonl(*(req(i) for i in range(20)), b"nope"), tmp_path, limits=Limits(max_requests=5))
    assert sorted(os.listdir(workdir)) == ["other.txt"]


# --- each class of bad line -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("bad", "field", "message"),
    [
        (b'{"custom_id": "x", "method": "POST"', None, "not valid JSON"),
        (b'{"custom_id": "\xff\xfe", "method": "POST"}', None, "not valid UTF-8"),
        (b"[1, 2]", None, "expected a JSON object, received an array"),
        (b'"just a string"', None, "expected a JSON object, received a string"),
        (line({"method": "POST", "url": CHAT, "body": {"model": "gpt-4o-mini"}}), "custom_id", "missing"),
        (line({**req(9), "custom_id": ""}), "custom_id", "expected a non-empty string, received ''"),
        (line({**req(9), "custom_id": 17}), "custom_id", "expected a non-empty string, received 17"),
        (line({**req(9), "method": "GET"}), "method", "expected 'POST', received 'GET'"),
        (line({k: v for k, v in req(9).items() if k != "method"}), "method", "missing"),
        (line({**req(9), "url": "/v1/embeddings"}), "url", "received '/v1/embeddings'"),
        (line({k: v for k, v in req(9).items() if k != "url"}), "url", "missing"),
        (line({k: v for k, v in req(9).items() if k != "body"}), "body", "missing"),
        (line({**req(9), "body": [1]}), "body", "expected a JSON object, received an array"),
        (line({**req(9), "body": {"messages": []}}), "body.model", "missing"),
        (line({**req(9), "body": {"model": 4}}), "body.model", "expected a non-empty string"),
        (line(req(9, model="gpt-4o")), "body.model", "expected 'gpt-4o-mini' (the model of line 1"),
    ],
)
def test_each_bad_line_is_named_by_line_and_field(tmp_path, bad, field, message):
    data = jsonl(req(1), req(2), bad, req(4))
    err = failure(data, tmp_path)
    assert err.total == 1
    assert len(err.problems) == 1
    problem = err.problems[0]
    assert (problem.line, problem.field) == (3, field)
    assert message in problem.message
    assert str(err).startswith("requests.jsonl: 1 invalid request line (showing 1):\n  line 3")


def test_duplicate_custom_id_names_first_line(tmp_path):
    data = jsonl(req("a"), req("b"), b"", req("a"), req("c"), req("b"), req("a"))
    err = failure(data, tmp_path)
    assert err.total == 3
    assert [(p.line, p.field) for p in err.problems] == [(4, "custom_id"), (6, "custom_id"), (7, "custom_id")]
    assert err.problems[0].message == "duplicate custom_id 'a' (first seen on line 1)"
    assert err.problems[1].message == "duplicate custom_id 'b' (first seen on line 2)"
    assert err.problems[2].message == "duplicate custom_id 'a' (first seen on line 1)"


def test_duplicates_across_shards_and_mixed_with_other_problems(tmp_path):
    items = [req(i) for i in range(30)]
    items[5] = {**items[5], "method": "GET"}
    items[25] = req(3)  # duplicate of line 4, in another shard
    err = failure(jsonl(*items), tmp_path, limits=Limits(max_requests=10, safety_margin=1))
    assert [(p.line, p.field) for p in err.problems] == [(6, "method"), (26, "custom_id")]
    assert "first seen on line 4" in err.problems[1].message


def test_hash_collision_is_not_a_duplicate(tmp_path, monkeypatch):
    # Force every id into one 64-bit hash: only the second pass over the strings can tell them apart.
    real_hash = hash
    monkeypatch.setattr(
        duplicates, "hash", lambda s: 42 if isinstance(s, str) else real_hash(s), raising=False
    )
    result = spool(jsonl(req(1), req(2), req(3)), tmp_path / "ok")
    assert result.total_requests == 3
    err = failure(jsonl(req(1), req(2), req(1)), tmp_path)
    assert [(p.line, p.message) for p in err.problems] == [
        (3, "duplicate custom_id 'r1' (first seen on line 1)")
    ]


def test_line_too_large(tmp_path):
    limits = Limits(max_bytes=400, safety_margin=1)
    big = req(2, pad="x" * 500)
    err = failure(jsonl(req(1), big, req(3)), tmp_path, limits=limits)
    assert [(p.line, p.field) for p in err.problems] == [(2, None)]
    assert "more than the 400 bytes" in err.problems[0].message


def test_line_too_large_across_read_chunks_is_not_assembled(tmp_path, monkeypatch):
    monkeypatch.setattr(reading, "CHUNK_SIZE", 64)
    limits = Limits(max_bytes=300, safety_margin=1)
    data = jsonl(req(1), req(2, pad="x" * 5000), req(3)) + b"x" * 1000  # and an unfinished huge last line
    err = failure(data, tmp_path, limits=limits)
    assert [(p.line, p.field) for p in err.problems] == [(2, None), (4, None)]
    assert "line is 5,1" in err.problems[0].message


def test_total_counts_beyond_the_cap_and_whole_input_is_read(tmp_path):
    items: list[object] = [b"not json"] * 45 + [req(1)]
    items += [{**req(i), "method": "GET"} for i in range(100, 105)]
    err = failure(jsonl(*items), tmp_path)
    assert err.total == 50
    assert len(err.problems) == 20
    assert [p.line for p in err.problems] == list(range(1, 21))
    text = str(err)
    assert text.startswith(
        "requests.jsonl: 50 invalid request lines (showing 20):\n  line 1: not valid JSON ("
    )
    assert text.endswith("\n  ... and 30 more")


def test_duplicates_found_late_still_appear_in_line_order_under_the_cap(tmp_path):
    items = [req(i) for i in range(40)]
    items[1] = req(0)  # duplicate early
    for i in range(10, 40):
        items[i] = {**items[i], "url": "/v1/x"}
    err = failure(jsonl(*items), tmp_path)
    assert err.total == 31
    assert (err.problems[0].line, err.problems[0].field) == (2, "custom_id")
    assert [p.line for p in err.problems] == [2, *range(11, 30)]


def test_empty_input_is_an_error(tmp_path):
    err = failure(b"\n  \n", tmp_path)
    assert err.problems == [Problem(0, None, "no requests (the input is empty or only blank lines)")]
    assert "requests.jsonl" in str(err)


def test_model_optional_on_moderations(tmp_path):
    def mod(i, **body):
        return {
            "custom_id": f"m{i}",
            "method": "POST",
            "url": "/v1/moderations",
            "body": {"input": "x", **body},
        }

    result = spool(
        jsonl(mod(1), mod(2, model="omni-moderation-latest"), mod(3)), tmp_path, endpoint="/v1/moderations"
    )
    assert result.total_requests == 3 and result.model == "omni-moderation-latest"
    err = failure(
        jsonl(mod(1), mod(2, model="omni-moderation-latest"), mod(3, model="other")),
        tmp_path,
        endpoint="/v1/moderations",
    )
    assert [(p.line, p.field) for p in err.problems] == [(3, "body.model")]
    result = spool(jsonl(mod(1)), tmp_path, endpoint="/v1/moderations")
    assert result.model is None


class _Base(Exception):
    pass


class _Sub(_Base, InvalidRequestsError):
    """Shaped like exceptions.OpenAIBatchInputError: another Exception base first in the MRO."""


def test_error_is_cooperative_and_picklable():
    problems = [Problem(2, "custom_id", "missing")]
    err = _Sub("in.jsonl", problems, 3)
    assert isinstance(err, ValueError) and err.source == "in.jsonl" and err.total == 3
    assert (
        str(err)
        == "in.jsonl: 3 invalid request lines (showing 1):\n  line 2, field 'custom_id': missing\n  ... and 2 more"
    )
    again = pickle.loads(pickle.dumps(err))
    assert type(again) is _Sub and again.problems == problems and str(again) == str(err)
    # Airflow rebuilds exceptions from their message alone.
    assert str(_Sub(str(err))) == str(err)


def test_real_exception_class_from_exceptions_module():
    exceptions = pytest.importorskip("airflow_provider_openai_batch.exceptions")
    err = exceptions.OpenAIBatchInputError("in.jsonl", [Problem(1, None, "not valid JSON (x)")], 1)
    assert isinstance(err, InvalidRequestsError) and isinstance(err, exceptions.OpenAIBatchError)
    assert str(err) == "in.jsonl: 1 invalid request line (showing 1):\n  line 1: not valid JSON (x)"


# --- sharding -------------------------------------------------------------------------------


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


# --- fingerprint ----------------------------------------------------------------------------


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


# --- iterables and generated custom ids ------------------------------------------------------


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


def test_generated_id_colliding_with_user_id_is_a_duplicate(tmp_path):
    items = [req("p-000001"), {"model": "gpt-4o-mini", "messages": []}]
    err = failure(iter(items), tmp_path, custom_id_prefix="p")
    assert [(p.line, p.message) for p in err.problems] == [
        (2, "duplicate custom_id 'p-000001' (first seen on line 1)")
    ]


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


def test_stdlib_json_fallback(tmp_path, monkeypatch):
    monkeypatch.setattr(codec, "loads", codec.stdlib_loads)
    monkeypatch.setattr(codec, "dumps", codec.stdlib_dumps)
    result = spool(jsonl(req(1), req(2)), tmp_path, workdir="ok")
    assert result.total_requests == 2
    assert spool(iter([req(1), req(2)]), tmp_path, workdir="it").fingerprint == result.fingerprint
    err = failure(jsonl(req(1), b'{"custom_id": "\xff"}', b"{nope", b'{"a": NaN}'), tmp_path)
    assert [(p.line, p.message.split(" (")[0]) for p in err.problems] == [
        (2, "not valid UTF-8"),
        (3, "not valid JSON"),
        (4, "not valid JSON"),
    ]
    err = failure(iter([req(1), req(2, temperature=float("nan")), 7]), tmp_path)
    assert [(p.line, p.message.split(" (")[0]) for p in err.problems] == [
        (2, "cannot be serialized to JSON"),
        (3, "expected a dict"),
    ]
    monkeypatch.setattr(reading, "CHUNK_SIZE", 64)
    err = failure(
        jsonl(req(1), req(2, pad="x" * 500)), tmp_path, limits=Limits(max_bytes=300, safety_margin=1)
    )
    assert [(p.line, p.field) for p in err.problems] == [(2, None)]


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
