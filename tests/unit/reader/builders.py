"""Builders for landed results: request lines, and output and error lines in OpenAI's format."""

from __future__ import annotations

import json
from pathlib import Path

ENDPOINT = "/v1/chat/completions"


def request(cid: str, content: str) -> dict:
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": content}], "max_tokens": 20}
    return {"custom_id": cid, "method": "POST", "url": ENDPOINT, "body": body}


def chat_body(answer: str) -> dict:
    return {
        "object": "chat.completion",
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": answer}, "finish_reason": "stop"}
        ],
        "usage": {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7},
    }


def ok_line(cid: str, body: dict) -> dict:
    return {
        "id": f"batch_req_{cid}",
        "custom_id": cid,
        "response": {"status_code": 200, "request_id": "req_1", "body": body},
        "error": None,
    }


def expired_line(cid: str) -> dict:
    return {
        "id": f"batch_req_{cid}",
        "custom_id": cid,
        "response": None,
        "error": {"code": "batch_expired", "message": "This request could not be executed before expiry."},
    }


def refused_line(cid: str, status: int = 400) -> dict:
    error = {
        "message": "Invalid 'messages'.",
        "type": "invalid_request_error",
        "param": "messages",
        "code": None,
    }
    return {
        "id": f"batch_req_{cid}",
        "custom_id": cid,
        "response": {"status_code": status, "request_id": "req_2", "body": {"error": error}},
        "error": None,
    }


def write_jsonl(path: Path, items) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(item) + "\n" for item in items))
    return path
