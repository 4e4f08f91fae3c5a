"""Validation: each class of bad line named by line and field, the error's shape, the JSON fallback."""

from __future__ import annotations

import pickle

import pytest

from airflow_provider_openai_batch.requests_input import codec, reading
from airflow_provider_openai_batch.requests_input.problems import InvalidRequestsError, Problem, ProblemLog
from airflow_provider_openai_batch.requests_input.shards import Limits
from airflow_provider_openai_batch.requests_input.validation import RequestChecker
from tests.unit.requests_input.spooling import CHAT, failure, jsonl, line, req, spool


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


def test_line_too_large(tmp_path):
    limits = Limits(max_bytes=400, safety_margin=1)
    big = req(2, pad="x" * 500)
    err = failure(jsonl(req(1), big, req(3)), tmp_path, limits=limits)
    assert [(p.line, p.field) for p in err.problems] == [(2, None)]
    assert "more than the 400 bytes" in err.problems[0].message


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


def test_checker_records_each_skipped_line_with_the_requests_before_it():
    problems = ProblemLog()
    checker = RequestChecker(CHAT, Limits(), problems)
    accepted, ids, embs, tokens = checker.check([line(req(1)), b"", b"{nope", line(req(2))])
    assert (accepted, ids, embs, tokens) == ([line(req(1)), line(req(2))], ["r1", "r2"], None, None)
    accepted, ids, _, _ = checker.check([b"  ", line(req(3)), line({**req(4), "method": "GET"})])
    assert ids == ["r3"]
    # Positions say how many requests came before each skipped line: request 2 (0-based) is on line 6.
    assert list(problems.skipped) == [1, 1, 2, 3]
    assert [(p.line, p.field) for p in problems.first] == [(3, None), (7, "method")]
    assert (problems.total, checker.line, checker.accepted, checker.model) == (2, 7, 3, "gpt-4o-mini")


def test_line_at_the_byte_limit(tmp_path):
    fits = line(req(1, pad="x" * 300))
    limits = Limits(max_bytes=len(fits) + 1, safety_margin=1)  # the line with its newline fills a shard
    over = line(req(2, pad="x" * 301))
    result = spool(jsonl(fits, fits.replace(b'"r1"', b'"r3"')), tmp_path, limits=limits)
    assert [s.requests for s in result.shards] == [1, 1]
    err = failure(jsonl(fits, over), tmp_path, limits=limits)
    assert [(p.line, p.field) for p in err.problems] == [(2, None)]
    assert f"line is {len(over) + 1:,} bytes" in err.problems[0].message
