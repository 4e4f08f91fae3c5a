"""The structured answer inside a response body, or why there is none: truncated, refused, or no text at all.

A completed request can still carry no usable answer: the model hit its token limit mid-JSON
(``finish_reason == "length"`` on chat, ``status == "incomplete"`` on the Responses API), refused
(``message.refusal`` / a ``refusal`` content part), or answered with tool calls only. Those are named as such
before any parsing, so a truncated answer is reported as truncated, not as bad JSON.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

TRUNCATED, REFUSAL, NO_ANSWER = "truncated", "refusal", "no_answer"


@dataclass(frozen=True, slots=True)
class Answer:
    """The answer's text, or the reason (``truncated``, ``refusal``, ``no_answer``) there is none to parse."""

    text: str | None
    problem: str | None = None
    detail: str = ""


def plain_text(body: Any) -> str | None:
    """The text of an answer with nothing wrong (the common case, checked in a few lookups), else None: then
    :func:`answer_of` says why."""
    try:
        choice = body["choices"][0]
        message = choice["message"]
        content = message["content"]
        if choice["finish_reason"] == "stop" and type(content) is str and not message.get("refusal"):
            return content
    except (KeyError, IndexError, TypeError):
        pass
    return None


def answer_of(body: Any) -> Answer:
    """The text a chat completion or a Responses API response answered, or why it has none."""
    if not isinstance(body, Mapping):
        return Answer(None, NO_ANSWER, f"expected a response body but received {type(body).__name__}")
    choices = body.get("choices")
    if isinstance(choices, list):
        return _chat(choices)
    if isinstance(body.get("output"), list) or body.get("object") == "response":
        return _responses(body)
    return Answer(
        None, NO_ANSWER, f"expected a chat completion or a Responses API response, got {_kind(body)}"
    )


def _chat(choices: list[Any]) -> Answer:
    first: Mapping[str, Any] = choices[0] if choices and isinstance(choices[0], Mapping) else {}
    message: Mapping[str, Any] = first.get("message") or {}
    if not isinstance(message, Mapping):
        message = {}
    finish = first.get("finish_reason")
    if message.get("refusal"):
        return Answer(None, REFUSAL, str(message["refusal"]))
    if finish == "length":
        return Answer(
            message.get("content"), TRUNCATED, "finish_reason 'length': the answer hit its token limit"
        )
    if finish == "content_filter":
        return Answer(None, REFUSAL, "finish_reason 'content_filter'")
    content = message.get("content")
    if not isinstance(content, str):
        return Answer(None, NO_ANSWER, f"no message content (finish_reason {finish!r})")
    return Answer(content)


def _responses(body: Mapping[str, Any]) -> Answer:
    texts: list[str] = []
    for item in body.get("output") or ():
        if not isinstance(item, Mapping) or item.get("type") != "message":
            continue
        for part in item.get("content") or ():
            if not isinstance(part, Mapping):
                continue
            if part.get("type") == "refusal":
                return Answer(None, REFUSAL, str(part.get("refusal") or "refused"))
            if part.get("type") == "output_text":
                texts.append(str(part.get("text") or ""))
    text = "".join(texts) if texts else body.get("output_text")
    if body.get("status") == "incomplete":
        reason = (body.get("incomplete_details") or {}).get("reason") or "unknown"
        return Answer(text, TRUNCATED, f"status 'incomplete' (reason {reason!r})")
    if not isinstance(text, str):
        return Answer(None, NO_ANSWER, f"no output_text (status {body.get('status')!r})")
    return Answer(text)


def _kind(body: Mapping[str, Any]) -> str:
    return f"object {body['object']!r}" if "object" in body else f"keys {sorted(body)[:8]}"
