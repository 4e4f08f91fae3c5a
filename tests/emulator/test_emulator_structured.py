"""Structured answers over real HTTP: JSON built from the requested schema, and the four answer faults."""

from __future__ import annotations

import json

import pytest
from conftest import request_line, results, upload, wait_terminal
from jsonschema import Draft202012Validator

SCHEMA = {
    "type": "object",
    "properties": {
        "label": {"type": "string", "enum": ["spam", "ham"]},
        "score": {"type": "number"},
        "tags": {"type": "array", "items": {"type": "string"}},
        "owner": {"$ref": "#/$defs/Owner"},
    },
    "required": ["label", "score", "tags", "owner"],
    "additionalProperties": False,
    "$defs": {
        "Owner": {
            "type": "object",
            "properties": {
                "name": {"type": "string"},
                "age": {"anyOf": [{"type": "integer"}, {"type": "null"}]},
            },
            "required": ["name", "age"],
            "additionalProperties": False,
        }
    },
}
CHAT = {
    "response_format": {"type": "json_schema", "json_schema": {"name": "v", "strict": True, "schema": SCHEMA}}
}
RESPONSES = {"text": {"format": {"type": "json_schema", "name": "v", "strict": True, "schema": SCHEMA}}}


def _answers(client, endpoint, body):
    ids = ["ok-1", "ok-2", "json-1", "miss-1", "cut-1", "no-1"]
    batch = client.batches.create(
        input_file_id=upload(client, [request_line(i, endpoint, **body) for i in ids]),
        endpoint=endpoint,
        completion_window="24h",
    )
    batch, _ = wait_terminal(client, batch.id)
    output, errors = results(client, batch)
    assert errors == [] and batch.request_counts.completed == len(ids)  # every request completes
    return {line["custom_id"]: line["response"]["body"] for line in output}


def test_chat_answers_match_the_schema_unless_a_fault_breaks_them(emulator, client):
    emulator.configure(
        invalid_json_custom_id_regex="^json-",
        schema_mismatch_custom_id_regex="^miss-",
        truncated_custom_id_regex="^cut-",
        refusal_custom_id_regex="^no-",
    )
    bodies = _answers(client, "/v1/chat/completions", CHAT)
    validator = Draft202012Validator(SCHEMA)
    for cid in ("ok-1", "ok-2"):
        choice = bodies[cid]["choices"][0]
        assert choice["finish_reason"] == "stop"
        validator.validate(json.loads(choice["message"]["content"]))
    with pytest.raises(json.JSONDecodeError):
        json.loads(bodies["json-1"]["choices"][0]["message"]["content"])
    mismatch = json.loads(bodies["miss-1"]["choices"][0]["message"]["content"])
    assert [e.message for e in validator.iter_errors(mismatch)] == ["'label' is a required property"]
    assert bodies["cut-1"]["choices"][0]["finish_reason"] == "length"
    with pytest.raises(json.JSONDecodeError):
        json.loads(bodies["cut-1"]["choices"][0]["message"]["content"])
    refused = bodies["no-1"]["choices"][0]["message"]
    assert refused["content"] is None and refused["refusal"]


def test_responses_answers_match_the_schema_unless_a_fault_breaks_them(emulator, client):
    emulator.configure(truncated_custom_id_regex="^cut-", refusal_custom_id_regex="^no-")
    bodies = _answers(client, "/v1/responses", RESPONSES)
    Draft202012Validator(SCHEMA).validate(json.loads(bodies["ok-1"]["output"][0]["content"][0]["text"]))
    assert bodies["ok-1"]["status"] == "completed"
    assert bodies["cut-1"]["status"] == "incomplete"
    assert bodies["cut-1"]["incomplete_details"] == {"reason": "max_output_tokens"}
    assert bodies["no-1"]["output"][0]["content"][0]["type"] == "refusal"


def test_answer_fault_regexes_are_checked(emulator):
    from airflow_provider_openai_batch.emulator.settings import SettingsError, parse_settings

    with pytest.raises(SettingsError, match="truncated_custom_id_regex"):
        parse_settings({"truncated_custom_id_regex": "("})
    assert emulator.configure(refusal_custom_id_regex="")["refusal_custom_id_regex"] is None
