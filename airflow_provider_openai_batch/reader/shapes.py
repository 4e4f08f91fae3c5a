"""The answer inside a response body, for the common endpoints: generated text, and embedding vectors.

Both helpers take a record from :func:`read_results` or a bare response body, so they also work on a
``response`` column (``df["response"].map(text)``). A record that failed has no answer: they return None.
"""

from __future__ import annotations

import base64
import sys
from array import array
from collections.abc import Mapping
from typing import Any


def _body(record_or_body: Any) -> Any:
    if isinstance(record_or_body, Mapping) and "custom_id" in record_or_body:
        return record_or_body.get("response")
    return record_or_body


def _shape(body: Mapping[str, Any]) -> str:
    return repr(body.get("object")) if "object" in body else f"keys {sorted(body)[:8]}"


def text(record: Any) -> str | None:
    """The generated text of a chat completion, a Responses API response or a (legacy) completion.

    Chat completions: ``choices[0].message.content`` (None when the model answered with tool calls only).
    Responses API: ``output_text`` when present, else the ``output_text`` parts of every ``message`` item
    in ``output``, joined (what the openai SDK's ``Response.output_text`` returns). Completions:
    ``choices[0].text``.

    :param record: a record from :func:`read_results`, or a response body.
    :return: the text, or None when the record is an error.
    :raises ValueError: when the body is of another kind (e.g. an embedding list), naming its ``object``.
    """
    body = _body(record)
    if body is None:
        return None
    if not isinstance(body, Mapping):
        raise ValueError(f"Expected a response body (a JSON object) but received {type(body).__name__}")
    choices = body.get("choices")
    if isinstance(choices, list):
        if not choices:
            return None
        first = choices[0]
        if isinstance(first.get("message"), Mapping):
            content: str | None = first["message"].get("content")
            return content
        if "text" in first:
            completion: str | None = first["text"]
            return completion
    output_text = body.get("output_text")
    if isinstance(output_text, str):
        return output_text
    if isinstance(body.get("output"), list):
        return "".join(
            part.get("text") or ""
            for item in body["output"]
            if isinstance(item, Mapping) and item.get("type") == "message"
            for part in item.get("content") or ()
            if isinstance(part, Mapping) and part.get("type") == "output_text"
        )
    raise ValueError(
        "Expected a chat completion, a Responses API response or a completion body but received one with "
        f"object {_shape(body)}"
    )


def _vector(item: Mapping[str, Any]) -> list[float]:
    vector = item.get("embedding")
    if isinstance(vector, str):  # encoding_format="base64": little-endian float32
        floats = array("f")
        floats.frombytes(base64.b64decode(vector))
        if sys.byteorder == "big":
            floats.byteswap()
        return floats.tolist()
    return vector  # type: ignore[return-value]


def embedding(record: Any) -> list[float] | list[list[float]] | None:
    """The embedding vector(s) of an embeddings response.

    :param record: a record from :func:`read_results`, or a response body.
    :return: ``data[0].embedding`` when the request embedded one input; a list of vectors, in input order,
        when it embedded several; None when the record is an error. Base64-encoded vectors are decoded.
    :raises ValueError: when the body is not an embeddings list, naming its ``object``.
    """
    body = _body(record)
    if body is None:
        return None
    data = body.get("data") if isinstance(body, Mapping) else None
    if not isinstance(data, list) or any(not isinstance(d, Mapping) or "embedding" not in d for d in data):
        shape = _shape(body) if isinstance(body, Mapping) else type(body).__name__
        raise ValueError(
            f"Expected an embeddings response (object 'list' of embeddings) but received {shape}"
        )
    if len(data) == 1:
        return _vector(data[0])
    return [_vector(d) for d in sorted(data, key=lambda d: d.get("index", 0))]
