"""From a Pydantic model to the ``response_format`` (chat) or ``text.format`` (Responses API) of a request, and
the rules a schema must follow for OpenAI to take it in strict mode.

:func:`output_format` builds the body fields with openai-python's own converter (the one ``client.chat.
completions.parse`` uses: every object closed and every field required, optional ones made nullable), so a
batch request asks for exactly what a live call would. :func:`strict_problems` finds what OpenAI's strict mode
refuses (`supported schemas <https://platform.openai.com/docs/guides/structured-outputs#supported-schemas>`_):
request validation runs it on every strict schema, so a schema OpenAI would reject fails before upload.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import pydantic

CHAT, RESPONSES = "/v1/chat/completions", "/v1/responses"
#: Keywords OpenAI's strict mode refuses: composition other than ``anyOf``, and the type-specific keywords its
#: supported-schemas list leaves out. Annotations (``title``, ``description``, ``default``) are not judged here.
STRICT_UNSUPPORTED = frozenset(
    {
        "allOf", "oneOf", "not", "if", "then", "else", "dependentRequired", "dependentSchemas",
        "patternProperties", "unevaluatedProperties", "unevaluatedItems", "propertyNames", "minProperties",
        "maxProperties", "contains", "minContains", "maxContains", "uniqueItems", "prefixItems", "minLength",
        "maxLength",
    }
)  # fmt: skip
_SCHEMA_MAPS = ("properties", "$defs", "definitions")


def output_format(
    model: type[pydantic.BaseModel], endpoint: str = CHAT, *, strict: bool | None = None
) -> dict[str, Any]:
    """The body fields that ask ``endpoint`` for answers matching ``model``; merge them into each body.

    ``{"response_format": {"type": "json_schema", "json_schema": {"name", "schema", "strict"}}}`` for chat
    completions, ``{"text": {"format": {"type": "json_schema", "name", "schema", "strict"}}}`` for the
    Responses API.

    :param model: the Pydantic model the answers must match (read them back with ``read_results(...,
        schema=model)``).
    :param endpoint: ``/v1/chat/completions`` or ``/v1/responses``.
    :param strict: None (default): strict whenever OpenAI allows it for this schema; True: strict, and a
        ``ValueError`` naming what strict mode refuses if it does not; False: the model's plain JSON schema.
    """
    if endpoint not in (CHAT, RESPONSES):
        raise ValueError(f"Expected {CHAT!r} or {RESPONSES!r} as the endpoint but received {endpoint!r}")
    from openai.lib import type_to_response_format_param

    converted: Any = type_to_response_format_param(model)
    schema: dict[str, Any] = converted["json_schema"]["schema"]
    problems = strict_problems(schema)
    if strict and problems:
        raise ValueError(
            f"Expected a schema OpenAI takes in strict mode but {model.__qualname__}'s " + "; ".join(problems)
        )
    if strict is False or problems:
        schema = model.model_json_schema()
    fmt = {"name": model.__name__, "schema": schema, "strict": not problems and strict is not False}
    if endpoint == CHAT:
        return {"response_format": {"type": "json_schema", "json_schema": fmt}}
    return {"text": {"format": {"type": "json_schema", **fmt}}}


def strict_problems(schema: Any) -> list[str]:
    """What strict mode refuses in ``schema``, one message per problem naming where (empty: none)."""
    if not isinstance(schema, Mapping):
        return [f"the schema is {type(schema).__name__}, not an object"]
    problems = []
    if schema.get("type") != "object" or "anyOf" in schema:
        problems.append("the root must be an object (`type: object`, not `anyOf`)")
    problems.extend(_problems(schema, "schema"))
    return problems


def _problems(schema: Mapping[str, Any], where: str) -> Iterator[str]:
    unknown = sorted(k for k in schema if k in STRICT_UNSUPPORTED)
    if unknown:
        yield f"{where} uses {', '.join(map(repr, unknown))}, which strict mode does not support"
    kind = schema.get("type")
    is_object = kind == "object" or (isinstance(kind, list) and "object" in kind) or "properties" in schema
    if is_object:
        if schema.get("additionalProperties") is not False:
            yield f"{where} must set `additionalProperties: false`"
        props = schema.get("properties") or {}
        missing = [p for p in props if p not in (schema.get("required") or [])]
        if missing:
            yield f"{where} must list every property in `required` (missing {', '.join(map(repr, missing))})"
    for key in _SCHEMA_MAPS:
        for name, sub in (schema.get(key) or {}).items():
            if isinstance(sub, Mapping):
                yield from _problems(sub, f"{where}.{key}.{name}")
    if isinstance(schema.get("items"), Mapping):
        yield from _problems(schema["items"], f"{where}.items")
    for i, sub in enumerate(schema.get("anyOf") or []):
        if isinstance(sub, Mapping):
            yield from _problems(sub, f"{where}.anyOf.{i}")


def strict_schema_of(body: Mapping[str, Any]) -> tuple[str, Any] | None:
    """``(field, schema)`` of a request body that asks for strict structured output, else None."""
    fmt = body.get("response_format")
    if isinstance(fmt, Mapping) and fmt.get("type") == "json_schema":
        spec = fmt.get("json_schema") or {}
        if isinstance(spec, Mapping) and spec.get("strict") is True:
            return "body.response_format.json_schema.schema", spec.get("schema")
        return None
    text = body.get("text")
    fmt = text.get("format") if isinstance(text, Mapping) else None
    if isinstance(fmt, Mapping) and fmt.get("type") == "json_schema" and fmt.get("strict") is True:
        return "body.text.format.schema", fmt.get("schema")
    return None
