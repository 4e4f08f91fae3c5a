"""OutputSchema.check: the parsed answer, or why it is invalid, the same for a model, a schema and "auto"."""

from __future__ import annotations

import pytest

from airflow_provider_openai_batch.structured.formats import output_format
from airflow_provider_openai_batch.structured.validate import OutputSchema, request_schema
from tests.unit.structured.models import SCHEMA, VALID, Ticket, as_text, chat, responses

REQUEST = {"model": "gpt-4o-mini", "messages": [], **output_format(Ticket)}

CASES = [
    # (response body, reason or None when valid, the field named)
    (chat(as_text(VALID)), None, None),
    (responses(as_text(VALID)), None, None),
    (chat('{"label": "spam",'), "invalid_json", None),
    (chat(as_text({**VALID, "score": "high"})), "schema_mismatch", "score"),
    (chat(as_text({**VALID, "owner": {"name": "Ann"}})), "schema_mismatch", "owner.age"),
    (chat('{"label": "sp', finish="length"), "truncated", None),
    (responses('{"label": "sp', status="incomplete"), "truncated", None),
    (chat(None, refusal="I can't help with that."), "refusal", None),
    (responses("", refusal=True), "refusal", None),
    (chat(None, finish="tool_calls"), "no_answer", None),
]


@pytest.mark.parametrize("spec", [Ticket, SCHEMA, "auto"], ids=["model", "json_schema", "auto"])
@pytest.mark.parametrize(("body", "reason", "field"), CASES)
def test_each_answer_is_parsed_or_named_invalid(spec, body, reason, field):
    parsed, error = OutputSchema(spec).check(body, REQUEST)
    if reason is None:
        assert error is None
        assert (parsed.model_dump() if spec is Ticket else parsed) == VALID
        return
    assert parsed is None
    assert (error["code"], error["reason"]) == ("invalid_output", reason)
    if field is not None:
        assert error["errors"][0]["field"] == field
        assert error["message"].startswith(f"{field}: ")
    if reason == "truncated":
        assert "length" in error["message"] or "incomplete" in error["message"]


def test_auto_finds_each_requests_own_schema_and_names_a_request_without_one():
    checker = OutputSchema("auto")
    other = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
    request = {"text": {"format": {"type": "json_schema", "name": "n", "schema": other}}}
    assert request_schema(request) == other
    assert checker.check(responses('{"n": 3}'), request) == ({"n": 3}, None)
    assert checker.check(responses('{"n": "3"}'), request)[1]["reason"] == "schema_mismatch"
    _, error = checker.check(chat(as_text(VALID)), {"model": "gpt-4o-mini"})
    assert error["reason"] == "no_schema"
    _, error = checker.check(
        chat(as_text(VALID)),
        {"response_format": {"type": "json_schema", "json_schema": {"schema": {"type": 5}}}},
    )
    assert error["reason"] == "no_schema" and "cannot be used" in error["message"]


def test_errors_are_capped_and_counted():
    schema = {"type": "object", "properties": {f"f{i}": {"type": "integer"} for i in range(15)}}
    _, error = OutputSchema(schema).check(chat(as_text({f"f{i}": "x" for i in range(15)})))
    assert len(error["errors"]) == 10 and error["message"].endswith("(and 14 more)")


def test_bad_specs_are_refused_up_front():
    with pytest.raises(ValueError, match="Expected a valid JSON schema"):
        OutputSchema({"type": "objekt"})
    with pytest.raises(ValueError, match="Pydantic model class, a JSON schema dict or 'auto'"):
        OutputSchema("Ticket")
