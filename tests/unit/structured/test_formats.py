"""output_format and the strict-mode rules, and request validation refusing a schema strict mode rejects."""

from __future__ import annotations

import pydantic
import pytest

from airflow_provider_openai_batch.structured.formats import output_format, strict_problems
from tests.unit.requests_input.spooling import failure, jsonl, req, spool
from tests.unit.structured.models import SCHEMA, Ticket


def test_chat_and_responses_formats_carry_the_same_strict_schema():
    chat = output_format(Ticket)["response_format"]
    responses = output_format(Ticket, "/v1/responses")["text"]["format"]
    assert chat["type"] == responses["type"] == "json_schema"
    assert chat["json_schema"] == {"name": "Ticket", "schema": SCHEMA, "strict": True}
    assert {k: v for k, v in responses.items() if k != "type"} == chat["json_schema"]
    assert strict_problems(SCHEMA) == []
    # Every object closed, every property required (openai-python's converter, as a live .parse() call).
    assert SCHEMA["additionalProperties"] is False and SCHEMA["required"] == ["label", "score", "owner"]


class Loose(pydantic.BaseModel):
    counts: dict[str, int]


def test_a_model_strict_mode_refuses_is_sent_non_strict_or_refused_when_strict_is_asked():
    fmt = output_format(Loose)["response_format"]["json_schema"]
    assert fmt["strict"] is False and fmt["schema"] == Loose.model_json_schema()
    with pytest.raises(ValueError, match=r"properties\.counts must set `additionalProperties: false`"):
        output_format(Loose, strict=True)
    with pytest.raises(ValueError, match="Expected '/v1/chat/completions' or '/v1/responses'"):
        output_format(Ticket, "/v1/embeddings")


@pytest.mark.parametrize(
    ("schema", "problem"),
    [
        (
            {"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a"]},
            "additionalProperties",
        ),
        (
            {"type": "object", "properties": {"a": {"type": "string"}}, "additionalProperties": False},
            "missing 'a'",
        ),
        ({"anyOf": [SCHEMA]}, "the root must be an object"),
        ({**SCHEMA, "allOf": [{}]}, "'allOf'"),
        (
            {**SCHEMA, "$defs": {"Owner": {**SCHEMA["$defs"]["Owner"], "additionalProperties": True}}},
            "schema.$defs.Owner",
        ),
    ],
)
def test_strict_problems_name_where(schema, problem):
    assert any(problem in p for p in strict_problems(schema)), strict_problems(schema)


def test_validation_refuses_a_strict_schema_openai_would_reject_naming_line_and_field(tmp_path):
    bad = {"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a"]}
    strict = {"type": "json_schema", "json_schema": {"name": "x", "strict": True, "schema": bad}}
    good = output_format(Ticket)["response_format"]
    err = failure(jsonl(req(1, response_format=good), req(2, response_format=strict), req(3)), tmp_path)
    assert [(p.line, p.field) for p in err.problems] == [(2, "body.response_format.json_schema.schema")]
    assert "OpenAI would reject this schema in strict mode" in err.problems[0].message
    assert "additionalProperties: false" in err.problems[0].message
    # The same schema without strict is the user's choice: accepted.
    loose = {**strict, "json_schema": {**strict["json_schema"], "strict": False}}
    assert spool(jsonl(req(1, response_format=loose)), tmp_path).total_requests == 1
    responses = {"format": {"type": "json_schema", "name": "x", "strict": True, "schema": bad}}
    err = failure(jsonl(req(1, url="/v1/responses", text=responses)), tmp_path, endpoint="/v1/responses")
    assert [(p.line, p.field) for p in err.problems] == [(1, "body.text.format.schema")]
