"""One validator for answers: a Pydantic model, a JSON schema, or ``"auto"`` (the schema each request asked for).

:meth:`OutputSchema.check` takes a response body (and, for ``"auto"``, the request body) and returns the parsed
answer or an ``invalid_output`` error that says why: ``truncated``, ``refusal`` or ``no_answer`` before any
parsing, else ``invalid_json`` or ``schema_mismatch`` with each failing field. A Pydantic model parses and
validates in one call (``model_validate_json``); a JSON schema is checked with ``jsonschema``, one compiled
validator per distinct schema.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson
import pydantic

from airflow_provider_openai_batch.structured.answers import answer_of, plain_text

INVALID_OUTPUT = "invalid_output"
INVALID_JSON, SCHEMA_MISMATCH, NO_SCHEMA = "invalid_json", "schema_mismatch", "no_schema"
#: Every reason an answer is invalid, in the order a reader meets them.
REASONS = ("truncated", "refusal", "no_answer", INVALID_JSON, SCHEMA_MISMATCH, NO_SCHEMA)
#: Field errors kept per answer (the message says how many more there were).
MAX_ERRORS = 10
AUTO = "auto"
_CACHED_VALIDATORS = 256


def request_schema(body: Any) -> dict[str, Any] | None:
    """The JSON schema a request body asks for: ``response_format.json_schema.schema`` (chat) or
    ``text.format.schema`` (Responses API); None when it asks for none."""
    if not isinstance(body, Mapping):
        return None
    fmt = body.get("response_format")
    if isinstance(fmt, Mapping) and fmt.get("type") == "json_schema":
        schema = (fmt.get("json_schema") or {}).get("schema")
        return schema if isinstance(schema, dict) else None
    text = body.get("text")
    fmt = text.get("format") if isinstance(text, Mapping) else None
    if isinstance(fmt, Mapping) and fmt.get("type") == "json_schema":
        schema = fmt.get("schema")
        return schema if isinstance(schema, dict) else None
    return None


def invalid(reason: str, message: str, errors: list[dict[str, str]] | None = None) -> dict[str, Any]:
    """The ``error`` of an invalid answer: ``{"code": "invalid_output", "reason", "message", "errors"}``."""
    return {"code": INVALID_OUTPUT, "reason": reason, "message": message, "errors": errors or []}


def _summary(errors: list[dict[str, str]], total: int) -> str:
    first = errors[0]
    where = f"{first['field']}: " if first["field"] else ""
    more = f" (and {total - 1} more)" if total > 1 else ""
    return f"{where}{first['message']}{more}"


class OutputSchema:
    """What every answer must match.

    :param spec: a Pydantic model class (answers become instances of it), a JSON schema dict (answers become
        dicts), or ``"auto"``: the schema each request's own body carries (needs the requests joined).
    :raises ValueError: for a JSON schema that is not a valid schema, or another kind of ``spec``.
    """

    def __init__(self, spec: Any) -> None:
        self.spec = spec
        self._model: type[pydantic.BaseModel] | None = None
        self._schema: dict[str, Any] | None = None
        self._validators: dict[bytes, Any] = {}
        if isinstance(spec, type) and issubclass(spec, pydantic.BaseModel):
            self._model = spec
        elif isinstance(spec, Mapping):
            self._schema = dict(spec)
            self._validator(self._schema)  # a bad schema fails here, before any answer is read
        elif spec != AUTO:
            raise ValueError(
                "Expected a Pydantic model class, a JSON schema dict or 'auto' as the output schema but "
                f"received {spec!r}"
            )

    @property
    def needs_requests(self) -> bool:
        """Whether checking needs each record's request body (``"auto"``)."""
        return isinstance(self.spec, str) and self.spec == AUTO

    def describe(self) -> str:
        if self._model is not None:
            return f"Pydantic model {self._model.__qualname__}"
        return "the schema of each request" if self.needs_requests else "a JSON schema"

    def check(self, response: Any, request: Any = None) -> tuple[Any, dict[str, Any] | None]:
        """``(parsed, None)`` for a valid answer, ``(None, error)`` for an invalid one (see :func:`invalid`).

        :param response: the response body of a request that succeeded.
        :param request: its request body (used with ``"auto"`` only).
        """
        text = plain_text(response)
        if text is None:
            answer = answer_of(response)
            if answer.problem is not None:
                return None, invalid(answer.problem, answer.detail)
            assert answer.text is not None
            text = answer.text
        if self._model is not None:
            try:
                return self._model.model_validate_json(text), None
            except pydantic.ValidationError as err:
                return None, _pydantic_error(err)
        schema = self._schema if self._schema is not None else request_schema(request)
        if schema is None:
            return None, invalid(
                NO_SCHEMA, "the request asked for no JSON schema (response_format / text.format)"
            )
        try:
            value = orjson.loads(text)
        except orjson.JSONDecodeError as err:
            return None, invalid(INVALID_JSON, f"the answer is not JSON: {err}")
        try:
            validator = self._validator(schema)
        except ValueError as err:  # "auto": a request's own schema can be broken
            return None, invalid(NO_SCHEMA, f"the request's schema cannot be used: {err}")
        failures = list(validator.iter_errors(value))
        if not failures:
            return value, None
        failures.sort(key=lambda e: [str(p) for p in e.absolute_path])
        errors = [{"field": _field(e), "message": e.message} for e in failures[:MAX_ERRORS]]
        return None, invalid(SCHEMA_MISMATCH, _summary(errors, len(failures)), errors)

    def _validator(self, schema: dict[str, Any]) -> Any:
        key = orjson.dumps(schema, option=orjson.OPT_SORT_KEYS)
        validator = self._validators.get(key)
        if validator is None:
            import jsonschema  # only JSON-schema checks need it (a dependency of Airflow, and of ours)

            cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
            try:
                cls.check_schema(schema)
            except jsonschema.SchemaError as err:
                raise ValueError(
                    f"Expected a valid JSON schema but received one where {err.message}"
                ) from None
            if len(self._validators) >= _CACHED_VALIDATORS:
                self._validators.clear()
            validator = self._validators[key] = cls(schema)
        return validator


def _field(error: Any) -> str:
    """The failing field's dotted path; a missing property is named itself, not by the object holding it."""
    path = [str(p) for p in error.absolute_path]
    if error.validator == "required" and isinstance(error.instance, dict):
        path += [p for p in error.validator_value if p not in error.instance][:1]
    return ".".join(path)


def _pydantic_error(err: pydantic.ValidationError) -> dict[str, Any]:
    details = err.errors(include_url=False, include_input=False)
    if any(d["type"] == "json_invalid" for d in details):
        return invalid(INVALID_JSON, f"the answer is not JSON: {details[0]['msg']}")
    errors = [
        {"field": ".".join(str(p) for p in d["loc"]), "message": d["msg"]} for d in details[:MAX_ERRORS]
    ]
    return invalid(SCHEMA_MISMATCH, _summary(errors, len(details)), errors)
