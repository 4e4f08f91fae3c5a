"""Deterministic fake response bodies, shaped like each endpoint's real response.

Everything except the ``created`` timestamp derives from a hash of the custom_id and the request body,
so the same input file gives the same output file.
"""

from __future__ import annotations

import base64
import hashlib
import math
import struct
from collections.abc import Iterator
from typing import Any

from . import structured
from .jsonl import dumps

Usage = tuple[int, int, int, int]  # input, cached, output, reasoning tokens

_WORDS = (
    "alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima mike november oscar papa "
    "quebec romeo sierra tango uniform victor whiskey xray yankee zulu"
).split()


def digest(custom_id: str, body: dict[str, Any]) -> bytes:
    return hashlib.sha256(custom_id.encode() + b"\0" + dumps(body)).digest()


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for key, item in value.items():
            if key != "model":
                yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)


def count_tokens(value: Any) -> int:
    """About four characters a token, like the service's rule of thumb."""
    return max(1, math.ceil(sum(len(s) for s in _strings(value)) / 4))


def _text(seed: bytes, words: int) -> str:
    return (
        " ".join(_WORDS[b % len(_WORDS)] for b in (seed * (words // len(seed) + 1))[:words]).capitalize()
        + "."
    )


def _output_limit(body: dict[str, Any]) -> int | None:
    for key in ("max_completion_tokens", "max_tokens", "max_output_tokens"):
        limit = body.get(key)
        if isinstance(limit, int) and limit > 0:
            return limit
    return None


def respond(
    endpoint: str,
    custom_id: str,
    body: dict[str, Any],
    *,
    created: int,
    embedding_dim: int,
    answer_fault: str | None = None,
) -> tuple[dict[str, Any], Usage]:
    """The 200 response body for one request, and its token usage.

    :param answer_fault: one of :data:`.structured.FAULTS`, to break the answer (chat and Responses only).
    """
    seed = digest(custom_id, body)
    handler = _HANDLERS.get(endpoint, _generic)
    result, usage = handler(seed, body, created, embedding_dim)
    structured.shape(endpoint, result, body, seed, answer_fault)
    return result, usage


def _reply(seed: bytes, body: dict[str, Any]) -> tuple[str, int, int, bool]:
    """The answer's text, prompt and completion tokens, and whether the output limit cut it.

    An answer longer than ``max_tokens`` / ``max_completion_tokens`` / ``max_output_tokens`` is cut at the limit
    (four characters a token) and reports exactly the limit, as the service does (``finish_reason: "length"``).
    """
    text = _text(seed[1:], 6 + seed[0] % 10)
    completion = max(1, math.ceil(len(text) / 4))
    limit = _output_limit(body)
    if limit is not None and completion > limit:
        return text[: 4 * limit], count_tokens(body), limit, True
    return text, count_tokens(body), completion, False


def _chat(seed: bytes, body: dict[str, Any], created: int, _dim: int) -> tuple[dict[str, Any], Usage]:
    text, prompt, completion, cut = _reply(seed, body)
    result = {
        "id": "chatcmpl-" + seed.hex()[:29],
        "object": "chat.completion",
        "created": created,
        "model": body.get("model", "gpt-4o-mini"),
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text, "refusal": None, "annotations": []},
                "logprobs": None,
                "finish_reason": "length" if cut else "stop",
            }
        ],
        "usage": {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
            "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0},
        },
        "service_tier": "default",
        "system_fingerprint": "fp_emulator",
    }
    return result, (prompt, 0, completion, 0)


def _responses(seed: bytes, body: dict[str, Any], created: int, _dim: int) -> tuple[dict[str, Any], Usage]:
    text, prompt, completion, cut = _reply(seed, body)
    result = {
        "id": "resp_" + seed.hex()[:48],
        "object": "response",
        "created_at": created,
        "status": "incomplete" if cut else "completed",
        "model": body.get("model", "gpt-4o-mini"),
        "output": [
            {
                "type": "message",
                "id": "msg_" + seed.hex()[8:56],
                "status": "incomplete" if cut else "completed",
                "role": "assistant",
                "content": [{"type": "output_text", "text": text, "annotations": []}],
            }
        ],
        "error": None,
        "incomplete_details": {"reason": "max_output_tokens"} if cut else None,
        "instructions": body.get("instructions"),
        "max_output_tokens": body.get("max_output_tokens"),
        "metadata": body.get("metadata") or {},
        "parallel_tool_calls": True,
        "previous_response_id": None,
        "temperature": body.get("temperature", 1.0),
        "text": {"format": {"type": "text"}},
        "tool_choice": "auto",
        "tools": [],
        "top_p": body.get("top_p", 1.0),
        "truncation": "disabled",
        "usage": {
            "input_tokens": prompt,
            "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
            "output_tokens": completion,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": prompt + completion,
        },
    }
    return result, (prompt, 0, completion, 0)


def _completions(seed: bytes, body: dict[str, Any], created: int, _dim: int) -> tuple[dict[str, Any], Usage]:
    text, prompt, completion, cut = _reply(seed, body)
    result = {
        "id": "cmpl-" + seed.hex()[:29],
        "object": "text_completion",
        "created": created,
        "model": body.get("model", "gpt-3.5-turbo-instruct"),
        "choices": [
            {"text": " " + text, "index": 0, "logprobs": None, "finish_reason": "length" if cut else "stop"}
        ],
        "usage": {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
        },
    }
    return result, (prompt, 0, completion, 0)


def _vector(seed: bytes, index: int, dim: int) -> list[float]:
    raw = hashlib.shake_256(seed + index.to_bytes(4, "big")).digest(2 * dim)
    values = [int.from_bytes(raw[2 * i : 2 * i + 2], "big") / 32767.5 - 1.0 for i in range(dim)]
    norm = math.sqrt(sum(v * v for v in values)) or 1.0
    return [round(v / norm, 6) for v in values]


def _embeddings(seed: bytes, body: dict[str, Any], _created: int, dim: int) -> tuple[dict[str, Any], Usage]:
    inputs = body.get("input", "")
    # A list of ints is one tokenised input; a list of anything else is several inputs.
    items = inputs if isinstance(inputs, list) and inputs and not isinstance(inputs[0], int) else [inputs]
    size = body.get("dimensions")
    if not isinstance(size, int):
        size = dim
    data = []
    for index, _item in enumerate(items):
        vector = _vector(seed, index, size)
        if body.get("encoding_format") == "base64":
            embedding: Any = base64.b64encode(struct.pack(f"<{size}f", *vector)).decode()
        else:
            embedding = vector
        data.append({"object": "embedding", "index": index, "embedding": embedding})
    prompt = sum(len(item) if isinstance(item, list) else count_tokens(item) for item in items)
    result = {
        "object": "list",
        "data": data,
        "model": body.get("model", "text-embedding-3-small"),
        "usage": {"prompt_tokens": prompt, "total_tokens": prompt},
    }
    return result, (prompt, 0, 0, 0)


_CATEGORIES = (
    "harassment",
    "harassment/threatening",
    "hate",
    "hate/threatening",
    "illicit",
    "illicit/violent",
    "self-harm",
    "self-harm/instructions",
    "self-harm/intent",
    "sexual",
    "sexual/minors",
    "violence",
    "violence/graphic",
)


def _moderations(seed: bytes, body: dict[str, Any], _created: int, _dim: int) -> tuple[dict[str, Any], Usage]:
    inputs = body.get("input", "")
    items = inputs if isinstance(inputs, list) else [inputs]
    results = []
    for index, _item in enumerate(items):
        scores = {c: round(seed[(index + i) % len(seed)] / 25500, 6) for i, c in enumerate(_CATEGORIES)}
        results.append(
            {
                "flagged": False,
                "categories": {c: False for c in _CATEGORIES},
                "category_scores": scores,
                "category_applied_input_types": {c: ["text"] for c in _CATEGORIES},
            }
        )
    result = {
        "id": "modr-" + seed.hex()[:32],
        "model": body.get("model", "omni-moderation-latest"),
        "results": results,
    }
    return result, (count_tokens(body), 0, 0, 0)


def _images(seed: bytes, body: dict[str, Any], created: int, _dim: int) -> tuple[dict[str, Any], Usage]:
    count = body.get("n")
    if not isinstance(count, int):
        count = 1
    data = [{"url": f"https://emulator.invalid/images/{seed.hex()[:16]}-{i}.png"} for i in range(count)]
    prompt = count_tokens(body)
    usage = {
        "input_tokens": prompt,
        "input_tokens_details": {"text_tokens": prompt, "image_tokens": 0},
        "output_tokens": 272 * count,
        "total_tokens": prompt + 272 * count,
    }
    return {"created": created, "data": data, "usage": usage}, (prompt, 0, 272 * count, 0)


def _videos(seed: bytes, body: dict[str, Any], created: int, _dim: int) -> tuple[dict[str, Any], Usage]:
    result = {
        "id": "video_" + seed.hex()[:32],
        "object": "video",
        "model": body.get("model", "sora-2"),
        "status": "completed",
        "progress": 100,
        "created_at": created,
        "completed_at": created,
        "seconds": str(body.get("seconds", "4")),
        "size": body.get("size", "720x1280"),
        "prompt": body.get("prompt"),
        "error": None,
    }
    return result, (count_tokens(body), 0, 0, 0)


def _generic(seed: bytes, body: dict[str, Any], created: int, _dim: int) -> tuple[dict[str, Any], Usage]:
    return {"id": seed.hex()[:24], "object": "emulated", "created": created}, (count_tokens(body), 0, 0, 0)


_HANDLERS = {
    "/v1/chat/completions": _chat,
    "/v1/responses": _responses,
    "/v1/completions": _completions,
    "/v1/embeddings": _embeddings,
    "/v1/moderations": _moderations,
    "/v1/images/generations": _images,
    "/v1/images/edits": _images,
    "/v1/videos": _videos,
}
