"""text() and embedding(): the answer inside the common response bodies, from a record or a bare body."""

from __future__ import annotations

import base64
import struct

import pytest

from airflow_provider_openai_batch.reader import embedding, text
from tests.unit.reader.builders import chat_body


def test_text_of_chat_completion_record_and_body():
    record = {"custom_id": "a", "response": chat_body("hello"), "error": None}
    assert text(record) == "hello"
    assert text(chat_body("bye")) == "bye"


def test_text_of_responses_api_joins_output_text_parts_of_messages_only():
    body = {
        "object": "response",
        "output": [
            {"type": "reasoning", "summary": [{"type": "summary_text", "text": "thinking"}]},
            {
                "type": "message",
                "content": [
                    {"type": "output_text", "text": "Hello, "},
                    {"type": "refusal", "refusal": "no"},
                    {"type": "output_text", "text": "world"},
                ],
            },
        ],
    }
    assert text(body) == "Hello, world"
    assert text({**body, "output_text": "precomputed"}) == "precomputed"


def test_text_of_completion_and_of_failures():
    assert text({"object": "text_completion", "choices": [{"index": 0, "text": "done"}]}) == "done"
    assert text({"custom_id": "x", "response": None, "error": {"code": "batch_expired"}}) is None
    with pytest.raises(ValueError, match="object 'list'"):
        text({"object": "list", "data": [{"embedding": [0.1]}]})


def test_embedding_single_several_in_input_order_and_base64():
    one = {"object": "list", "data": [{"index": 0, "embedding": [0.5, 0.25]}]}
    assert embedding({"custom_id": "a", "response": one}) == [0.5, 0.25]
    several = {"object": "list", "data": [{"index": 1, "embedding": [2.0]}, {"index": 0, "embedding": [1.0]}]}
    assert embedding(several) == [[1.0], [2.0]]
    packed = base64.b64encode(struct.pack("<3f", 0.5, -1.0, 2.25)).decode()
    assert embedding({"object": "list", "data": [{"index": 0, "embedding": packed}]}) == [0.5, -1.0, 2.25]
    assert embedding({"custom_id": "a", "response": None}) is None
    with pytest.raises(ValueError, match="chat.completion"):
        embedding(chat_body("x"))
