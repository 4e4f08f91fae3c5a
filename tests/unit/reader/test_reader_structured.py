"""read_results(schema=...): each answer parsed and validated, invalid ones named, parsed fields as columns."""

from __future__ import annotations

import json

import pytest

from airflow_provider_openai_batch import read_results
from airflow_provider_openai_batch.structured.formats import output_format
from tests.unit.reader.builders import expired_line, ok_line, write_jsonl
from tests.unit.structured.models import SCHEMA, VALID, Ticket, chat

ANSWERS = {
    "ok-1": chat(json.dumps(VALID)),
    "ok-2": chat(json.dumps({**VALID, "label": "ham", "owner": {"name": "Bo", "age": 41}})),
    "json-1": chat('{"label": "spam",}'),
    "miss-1": chat(json.dumps({"score": 1.0, "owner": VALID["owner"]})),
    "cut-1": chat('{"label": "sp', finish="length"),
    "no-1": chat(None, refusal="I can't help with that."),
}
REASONS = {"json-1": "invalid_json", "miss-1": "schema_mismatch", "cut-1": "truncated", "no-1": "refusal"}


@pytest.fixture
def structured(tmp_path):
    folder = tmp_path / "results"
    write_jsonl(folder / "output.jsonl", [ok_line(cid, body) for cid, body in ANSWERS.items()])
    write_jsonl(folder / "errors.jsonl", [expired_line("gone-1")])
    manifest = {"output_paths": [str(folder / "output.jsonl")], "error_paths": [str(folder / "errors.jsonl")]}
    (folder / "_manifest.json").write_text(json.dumps(manifest))
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "?"}], **output_format(Ticket)}
    requests = [
        {"custom_id": cid, "method": "POST", "url": "/v1/chat/completions", "body": body}
        for cid in [*ANSWERS, "gone-1"]
    ]
    return folder, write_jsonl(tmp_path / "requests.jsonl", requests)


@pytest.mark.parametrize("spec", [Ticket, SCHEMA, "auto"], ids=["model", "json_schema", "auto"])
def test_records_gain_status_parsed_and_the_reason_an_answer_is_invalid(structured, spec):
    folder, requests = structured
    with read_results(folder, requests if spec == "auto" else None, schema=spec) as results:
        records = {r["custom_id"]: r for r in results}
    assert {cid: r["status"] for cid, r in records.items()} == {
        "ok-1": "ok",
        "ok-2": "ok",
        **{cid: "invalid_output" for cid in REASONS},
        "gone-1": "failed",
    }
    first = records["ok-1"]["parsed"]
    assert isinstance(first, Ticket) if spec is Ticket else first == VALID
    assert records["ok-1"]["error"] is None
    for cid, reason in REASONS.items():
        record = records[cid]
        assert record["parsed"] is None and record["response"] == ANSWERS[cid]  # the raw answer is kept
        assert (record["error"]["code"], record["error"]["reason"]) == ("invalid_output", reason)
    assert records["miss-1"]["error"]["errors"][0]["field"] == "label"
    assert records["gone-1"]["error"]["code"] == "batch_expired" and records["gone-1"]["parsed"] is None


def test_flatten_gives_one_column_per_parsed_field(structured):
    folder, _ = structured
    frame = read_results(folder, schema=Ticket).to_pandas(flatten=True)
    assert list(frame.columns) == [
        "custom_id", "status_code", "status", "error", "label", "score", "owner.name", "owner.age"
    ]  # fmt: skip
    ok = frame[frame["status"] == "ok"].set_index("custom_id")
    assert ok.loc["ok-2", "label"] == "ham" and ok.loc["ok-2", "owner.age"] == 41
    assert frame.set_index("custom_id").loc["json-1", "error"]["reason"] == "invalid_json"
    assert len(frame) == len(ANSWERS) + 1


def test_parsed_models_become_dicts_in_arrow_and_polars(structured):
    folder, _ = structured
    table = read_results(folder, schema=Ticket).to_arrow(json_columns=True)
    parsed = [json.loads(p) for p in table.column("parsed").to_pylist() if p is not None]
    assert parsed[0] == VALID
    flat = read_results(folder, schema=Ticket).to_polars(flatten=True)
    assert flat.filter(flat["status"] == "ok")["owner.name"].to_list() == ["Ann", "Bo"]


def test_auto_needs_the_requests_and_flatten_needs_a_schema(structured):
    folder, _ = structured
    with pytest.raises(ValueError, match="Expected `requests` with schema='auto'"):
        read_results(folder, schema="auto")
    with pytest.raises(ValueError, match="Expected `schema=`"):
        read_results(folder).to_pandas(flatten=True)
