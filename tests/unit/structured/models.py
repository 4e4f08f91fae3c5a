"""A Pydantic model of a structured answer, its strict JSON schema, and response bodies answering it."""

from __future__ import annotations

import json

import pydantic

from airflow_provider_openai_batch.structured.formats import output_format


class Owner(pydantic.BaseModel):
    name: str
    age: int | None


class Ticket(pydantic.BaseModel):
    label: str
    score: float
    owner: Owner


SCHEMA = output_format(Ticket)["response_format"]["json_schema"]["schema"]
VALID = {"label": "spam", "score": 0.9, "owner": {"name": "Ann", "age": None}}


def chat(content: str | None, finish: str = "stop", refusal: str | None = None) -> dict:
    message = {"role": "assistant", "content": content, "refusal": refusal}
    return {
        "object": "chat.completion",
        "choices": [{"index": 0, "message": message, "finish_reason": finish}],
    }


def responses(text: str, status: str = "completed", refusal: bool = False) -> dict:
    part = {"type": "refusal", "refusal": "no"} if refusal else {"type": "output_text", "text": text}
    body = {"object": "response", "status": status, "output": [{"type": "message", "content": [part]}]}
    if status == "incomplete":
        body["incomplete_details"] = {"reason": "max_output_tokens"}
    return body


def as_text(value: object) -> str:
    return json.dumps(value)
