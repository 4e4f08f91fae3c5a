"""The fast accept check (file sources: the checked fields decoded alone, UTF-8 checked per chunk) gives the same
verdicts as the full parse (what an iterable of lines takes), line by line, and is what valid lines take."""

from __future__ import annotations

import gc
import io

import msgspec
import pytest

from airflow_provider_openai_batch.requests_input import codec, fast_check, reading
from airflow_provider_openai_batch.requests_input.fast_check import ChunkFit
from airflow_provider_openai_batch.requests_input.problems import InvalidRequestsError
from airflow_provider_openai_batch.requests_input.validation import RequestChecker
from tests.unit.requests_input.spooling import CHAT, EMB, line, req, spool

STRICT_BAD = {
    "type": "json_schema",
    "json_schema": {"name": "x", "strict": True, "schema": {"type": "object"}},
}
STRICT_OK = {
    "type": "json_schema",
    "json_schema": {
        "name": "x",
        "strict": True,
        "schema": {"type": "object", "properties": {}, "required": [], "additionalProperties": False},
    },
}
TEXT_BAD = {"format": {"type": "json_schema", "name": "x", "strict": True, "schema": {"type": "object"}}}

LINES = [
    line(req(1)),
    line(req(2, response_format={"type": "json_object"})),
    line(req(3, response_format=STRICT_OK)),
    line(req(4, response_format=STRICT_BAD)),
    line(req(5, text=TEXT_BAD)),
    line(req(6, response_format="json")),
    b'{"custom_id": "r7", "method": "POST", "url": "/v1/chat/completions", "body": {"model": "gpt-4o-mini", '
    b'"messages": [{"role": "user", "content": "\xff\xfe"}]}}',  # not UTF-8, in a field the check skips
    b'{"custom_id": "r8", "custom_id": "r8b", "method": "POST", "url": "/v1/chat/completions", '
    b'"body": {"model": "gpt-4o-mini"}}',  # a repeated key: the last one counts, as in a full parse
    b'{"custom_id": "r9", "method": "POST", "url": "/v1/chat/completions", "body": {"model": "gpt-4o-mini", '
    b'"x": [1, 2,]}}',  # bad JSON where the check does not look
    b"",
    b"   ",
    line({**req(10), "body": None}),
    line({**req(11), "custom_id": None}),
    line({**req(12), "method": None}),
    line(req(13, model="gpt-4o")),
    line({**req(14), "body": {"model": None, "messages": []}}),
    b'{"custom_id": "r15", "method": "POST", "url": "/v1/chat/completions", "body": {"model": "gpt-4o-mini", '
    b'"n": 12345678901234567890123}}',  # an integer beyond 64 bits
    line(req(16, messages=[{"role": "user", "content": "東京 café 😀"}])),
    b"[]",
    b"null",
    line(req(1)),  # a duplicate custom_id
    b'{"custom_id": "r17", "method": "POST", "url": "/v1/chat/completions", "body": {"model": "gpt-4o-mini", '
    b'"x": ' + b"[" * 1100 + b"]" * 1100 + b"}}",  # nested deeper than a full parse goes
]


def verdicts(data_or_lines, tmp_path, endpoint=CHAT, name="x"):
    try:
        result = spool(data_or_lines, tmp_path, workdir=name, endpoint=endpoint)
    except InvalidRequestsError as err:
        return [(p.line, p.field, p.message) for p in err.problems], err.total
    shards = [open(s.path, "rb").read() for s in result.shards]
    return result.fingerprint, result.total_requests, shards, result.model


@pytest.mark.parametrize("first", range(len(LINES)), ids=lambda i: f"from-{i}")
def test_a_file_gets_the_verdicts_of_the_full_parse(tmp_path, first):
    lines = LINES[first:] + LINES[:first]  # every line once as the first, which sets the model
    from_file = verdicts(b"\n".join(lines) + b"\n", tmp_path, name="file")
    from_lines = verdicts(iter(lines), tmp_path, name="lines")
    assert from_file == from_lines


def test_the_verdicts_name_each_problem(tmp_path):
    problems, total = verdicts(b"\n".join(LINES) + b"\n", tmp_path)
    named = {(line_no, field) for line_no, field, _ in problems}
    assert {(4, "body.response_format.json_schema.schema"), (5, "body.text.format.schema")} <= named
    assert {(7, None), (9, None), (12, "body"), (13, "custom_id"), (14, "method")} <= named
    assert {(15, "body.model"), (16, "body.model"), (19, None), (20, None), (21, "custom_id")} <= named
    assert (22, None) in named and total == len(problems) == 13


@pytest.mark.parametrize("endpoint", [CHAT, EMB])
def test_valid_lines_of_a_file_take_the_fast_check(tmp_path, monkeypatch, endpoint):
    parsed = []
    full_parse = codec.loads
    monkeypatch.setattr(codec, "loads", lambda raw: parsed.append(raw) or full_parse(raw))
    body = {"input": ["a", "b"]} if endpoint == EMB else {}
    model = "text-embedding-3-small" if endpoint == EMB else "gpt-4o-mini"
    data = b"".join(line(req(i, model=model, url=endpoint, **body)) + b"\n" for i in range(500))

    result = spool(io.BytesIO(data), tmp_path, endpoint=endpoint)

    assert result.total_requests == 500 and result.shards[0].bytes == len(data)
    assert len(parsed) == 1  # the first line, which names the model, is diagnosed in full
    if endpoint == EMB:
        assert result.embedding_inputs == 1000


def test_once_the_model_is_known_whole_chunks_fit_at_once(tmp_path, monkeypatch):
    monkeypatch.setattr(reading, "CHUNK_SIZE", 4096)
    fitted = []
    fit = ChunkFit.ids
    monkeypatch.setattr(ChunkFit, "ids", lambda self, *a: fitted.append(r := fit(self, *a)) or r)
    data = b"".join(line(req(i, response_format=STRICT_OK)) + b"\n" for i in range(500))

    result = spool(io.BytesIO(data), tmp_path)

    assert result.total_requests == 500 and open(result.shards[0].path, "rb").read() == data
    taken = sum(len(f) for f in fitted if f is not None)
    assert len(fitted) > 10 and taken > 400  # all but the first chunk's lines, less those spanning reads
    # A strict schema OpenAI would refuse, deep in the input, makes its chunk go line by line.
    bad = data + line(req(500, response_format=STRICT_BAD)) + b"\n"
    with pytest.raises(InvalidRequestsError) as info:
        spool(io.BytesIO(bad), tmp_path, workdir="bad")
    assert [(p.line, p.field) for p in info.value.problems] == [
        (501, "body.response_format.json_schema.schema")
    ]
    # The same, its type written with an escape: the chunk's bytes hold no "json_schema", yet it is checked.
    escaped = line(req(500, response_format=STRICT_BAD)).replace(b'"json_schema"', b'"json\\u005fschema"', 1)
    assert b"\\u005f" in escaped
    with pytest.raises(InvalidRequestsError) as info:
        spool(io.BytesIO(data + escaped + b"\n"), tmp_path, workdir="escaped")
    assert [(p.line, p.field) for p in info.value.problems] == [
        (501, "body.response_format.json_schema.schema")
    ]


@pytest.mark.parametrize(
    "late",
    [
        line(req(500, response_format=STRICT_BAD)),
        line(req(500, text=TEXT_BAD)),
        line(req(500, response_format=STRICT_BAD)).replace(b'"json_schema"', b'"json\\u005fschema"', 1),
    ],
    ids=["strict-schema", "text-format", "escaped-type"],
)
def test_bodies_asking_for_no_schema_fit_whole_and_a_late_schema_is_still_checked(
    tmp_path, monkeypatch, late
):
    monkeypatch.setattr(reading, "CHUNK_SIZE", 4096)
    fitted, looked = [], []
    fit = ChunkFit.ids
    monkeypatch.setattr(ChunkFit, "ids", lambda self, *a: fitted.append(r := fit(self, *a)) or r)
    strict = RequestChecker._strict_problem
    monkeypatch.setattr(
        RequestChecker, "_strict_problem", lambda self, f: looked.append(f) or strict(self, f)
    )
    used = []
    decode = fast_check._decode
    monkeypatch.setattr(fast_check, "_decode", lambda d, *a: used.append(d) or decode(d, *a))
    formats = [None, {"type": "json_object"}, {"type": "text"}, {"type": "json\u005fobject"}]
    data = b"".join(
        line(req(i, **({"response_format": formats[i % 4]} if formats[i % 4] else {}))) + b"\n"
        for i in range(500)
    )

    result = spool(io.BytesIO(data), tmp_path)

    assert result.total_requests == 500 and open(result.shards[0].path, "rb").read() == data
    assert sum(len(f) for f in fitted if f is not None) > 400 and looked == []  # no body looked at alone
    (plain,) = set(used)  # one decoder took every chunk: the one whose bodies cannot ask for a schema
    body = {f.name: f.type for f in msgspec.structs.fields(plain.type)}["body"]
    assert {f.name: f.type for f in msgspec.structs.fields(body)}["text"] is type(None)
    with pytest.raises(InvalidRequestsError) as info:
        spool(io.BytesIO(data + late + b"\n"), tmp_path, workdir="late")
    assert [p.line for p in info.value.problems] == [501]
    assert info.value.problems[0].field in (
        "body.response_format.json_schema.schema",
        "body.text.format.schema",
    )


@pytest.mark.parametrize("embeddings", [False, True])
def test_decoded_requests_are_left_out_of_garbage_collection(embeddings):
    # A chunk decodes about a thousand of these; tracked, they set off a collection every 700 or so, which in a
    # task process walks all of Airflow's objects too (see docs/benchmarks.md). JSON has no reference cycles.
    raw = line(req(1, response_format={"type": "json_schema", "json_schema": {"name": "x"}}))
    head = fast_check.head_decoder(embeddings).decode(raw)
    assert not gc.is_tracked(head) and not gc.is_tracked(head.body)
    region = b"".join(
        line(req(i, response_format=rf)) + b"\n" for i, rf in enumerate([None, {"type": "text"}])
    )
    fit = ChunkFit(CHAT, "gpt-4o-mini", model_optional=False, structured=True)
    decoders = [fit._plain_decoder, fit._general_decoder]
    for decoded in (d.decode_lines(region) for d in decoders):
        assert len(decoded) == 2
        assert not any(gc.is_tracked(r) or gc.is_tracked(r.body) for r in decoded)
