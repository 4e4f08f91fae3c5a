"""Structured answers: JSON that matches the schema a request asked for, and the ways a real answer goes wrong.

A chat request with ``response_format`` ``json_schema`` (or ``json_object``), or a Responses request with
``text.format`` ``json_schema``, gets JSON built from its schema, deterministic from the request's seed. The
answer-fault settings (``invalid_json_custom_id_regex``, ``schema_mismatch_custom_id_regex``,
``truncated_custom_id_regex``, ``refusal_custom_id_regex``) break the answers of matching requests the way the
real service does: text that is not JSON, JSON that misses a required field, an answer cut at its token limit
(``finish_reason: "length"`` / ``status: "incomplete"``), a refusal. The request still counts as completed.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from .jsonl import dumps

#: Answer faults, in the order their settings are matched (the first matching regex wins).
FAULTS = ("invalid_json", "schema_mismatch", "truncated", "refusal")
REFUSAL_TEXT = "I'm sorry, but I can't help with that request."
_WORDS = ("alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel")


def fault_for(settings: Any, custom_id: str) -> str | None:
    """The answer fault the settings give ``custom_id`` (None: answer well)."""
    for fault in FAULTS:
        regex = getattr(settings, f"{fault}_custom_id_regex")
        if regex and re.search(regex, custom_id):
            return fault
    return None


def requested_schema(endpoint: str, body: Mapping[str, Any]) -> dict[str, Any] | None:
    """The JSON schema the body asks the answer to match (``{}`` for a bare JSON object), or None."""
    if endpoint == "/v1/chat/completions":
        fmt = body.get("response_format")
        if isinstance(fmt, Mapping) and fmt.get("type") == "json_schema":
            return dict((fmt.get("json_schema") or {}).get("schema") or {})
    elif endpoint == "/v1/responses":
        text = body.get("text")
        fmt = text.get("format") if isinstance(text, Mapping) else None
        if isinstance(fmt, Mapping) and fmt.get("type") == "json_schema":
            return dict(fmt.get("schema") or {})
    else:
        return None
    return {} if isinstance(fmt, Mapping) and fmt.get("type") == "json_object" else None


def instance(schema: Mapping[str, Any], seed: bytes, root: Mapping[str, Any] | None = None) -> Any:
    """A value matching ``schema`` (the subset strict structured outputs allow), chosen by ``seed``."""
    root = schema if root is None else root
    ref = schema.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/"):
        target: Any = root
        for part in ref[2:].split("/"):
            target = target[part]
        return instance(target, seed, root)
    if "const" in schema:
        return schema["const"]
    if schema.get("enum"):
        return schema["enum"][seed[0] % len(schema["enum"])]
    options = schema.get("anyOf") or schema.get("oneOf")
    if options:
        usable = [o for o in options if o.get("type") != "null"] or options
        return instance(usable[0], seed, root)
    kind = schema.get("type", "object" if "properties" in schema else "string")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind == "object":
        props = schema.get("properties") or {}
        if not props:
            return {"answer": _WORDS[seed[1] % len(_WORDS)]}
        return {k: instance(v, seed[i % 7 :] + seed, root) for i, (k, v) in enumerate(props.items())}
    if kind == "array":
        count = max(int(schema.get("minItems") or 0), 1 + seed[2] % 2)
        return [instance(schema.get("items") or {}, seed[i:] + seed, root) for i in range(count)]
    if kind in ("integer", "number"):
        low = schema.get("minimum", 0)
        high = schema.get("maximum", low + 100)
        value = low + seed[3] % (int(high - low) + 1)
        return value if kind == "integer" else value + 0.5 * (value < high)
    if kind == "boolean":
        return bool(seed[4] & 1)
    if kind == "null":
        return None
    return " ".join(_WORDS[b % len(_WORDS)] for b in seed[5:7])


def _mismatch(value: Any, schema: Mapping[str, Any]) -> Any:
    """``value`` made wrong for ``schema``: a required field left out, else the wrong type."""
    required = schema.get("required") or []
    if isinstance(value, dict) and required and required[0] in value:
        return {k: v for k, v in value.items() if k != required[0]}
    return [value]


def answer_text(endpoint: str, body: Mapping[str, Any], seed: bytes, fault: str | None) -> str | None:
    """The structured answer's text for this body (None when the body asks for no JSON)."""
    schema = requested_schema(endpoint, body)
    if schema is None:
        return None
    value = instance(schema, seed)
    if fault == "schema_mismatch":
        value = _mismatch(value, schema)
    text = dumps(value).decode()
    if fault == "invalid_json":
        return text[:-1] + ",}"  # a trailing comma and an extra brace: what a model slip looks like
    return text


def shape(
    endpoint: str, result: dict[str, Any], body: Mapping[str, Any], seed: bytes, fault: str | None
) -> None:
    """Rewrite a chat or Responses ``result`` in place: the structured answer, then the fault, if any."""
    text = answer_text(endpoint, body, seed, fault)
    if endpoint == "/v1/chat/completions":
        choice = result["choices"][0]
        message = choice["message"]
        if text is not None:
            message["content"] = text
        if fault == "truncated":
            message["content"] = message["content"][: max(1, len(message["content"]) // 2)]
            choice["finish_reason"] = "length"
        elif fault == "refusal":
            message["content"], message["refusal"] = None, REFUSAL_TEXT
    elif endpoint == "/v1/responses":
        content = result["output"][0]["content"]
        if text is not None:
            content[0]["text"] = text
        if fault == "truncated":
            content[0]["text"] = content[0]["text"][: max(1, len(content[0]["text"]) // 2)]
            result["status"] = "incomplete"
            result["incomplete_details"] = {"reason": "max_output_tokens"}
            result["output"][0]["status"] = "incomplete"
        elif fault == "refusal":
            content[0] = {"type": "refusal", "refusal": REFUSAL_TEXT}
