"""Helpers for the emulator tests: an OpenAI client on the emulator, JSONL builders, schema checks."""

from __future__ import annotations

import io
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from jsonschema import Draft202012Validator
from openai import OpenAI
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

SPEC_PATH = Path(__file__).resolve().parent / "openai-batch-files-openapi.json"
TERMINAL = {"completed", "failed", "expired", "cancelled"}


class Schemas:
    """Validates bodies against ``#/components/schemas/<name>`` of the official OpenAPI subset."""

    def __init__(self, spec: dict[str, Any]) -> None:
        self.registry = Registry().with_resource("urn:openai-spec", Resource(spec, DRAFT202012))

    def check(self, name: str, body: Any) -> None:
        schema = {"$ref": f"urn:openai-spec#/components/schemas/{name}"}
        Draft202012Validator(schema, registry=self.registry).validate(body)


@pytest.fixture(scope="session")
def schemas() -> Schemas:
    return Schemas(json.loads(SPEC_PATH.read_text()))


@pytest.fixture
def emulator(openai_emulator):
    """The plugin's reset emulator."""
    return openai_emulator


@pytest.fixture
def http(openai_emulator) -> Iterator[httpx.Client]:
    """A raw HTTP client on the ``/v1`` API, to see bodies exactly as sent."""
    with httpx.Client(base_url=openai_emulator.base_url, headers={"Authorization": "Bearer sk-test"}) as http:
        yield http


@pytest.fixture
def client(openai_emulator) -> OpenAI:
    return OpenAI(base_url=openai_emulator.base_url, api_key="sk-test", max_retries=0)


def request_line(custom_id: str, endpoint: str = "/v1/chat/completions", **body: Any) -> dict[str, Any]:
    """One input line for ``endpoint`` with a plausible body; ``body`` overrides its fields."""
    defaults: dict[str, dict[str, Any]] = {
        "/v1/chat/completions": {
            "model": "gpt-4o-mini",
            "messages": [{"role": "user", "content": f"Hello {custom_id}"}],
        },
        "/v1/responses": {"model": "gpt-4o-mini", "input": f"Hello {custom_id}"},
        "/v1/embeddings": {"model": "text-embedding-3-small", "input": f"Embed {custom_id}"},
        "/v1/completions": {"model": "gpt-3.5-turbo-instruct", "prompt": f"Say {custom_id}"},
        "/v1/moderations": {"model": "omni-moderation-latest", "input": f"Check {custom_id}"},
    }
    return {
        "custom_id": custom_id,
        "method": "POST",
        "url": endpoint,
        "body": {**defaults.get(endpoint, {}), **body},
    }


def to_jsonl(lines: list[dict[str, Any] | str]) -> bytes:
    """JSONL bytes; a str line is written verbatim (to make broken lines)."""
    return "".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines).encode()


def upload(client: OpenAI, lines: list[dict[str, Any] | str], name: str = "input.jsonl") -> str:
    return client.files.create(file=(name, io.BytesIO(to_jsonl(lines))), purpose="batch").id


def wait_terminal(client: OpenAI, batch_id: str, timeout: float = 30) -> tuple[Any, list[str]]:
    """Poll until terminal; returns the final batch and the distinct statuses seen, in order."""
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    while True:
        batch = client.batches.retrieve(batch_id)
        if not seen or seen[-1] != batch.status:
            seen.append(batch.status)
        if batch.status in TERMINAL:
            return batch, seen
        assert time.monotonic() < deadline, f"batch still {batch.status} after {timeout}s"
        time.sleep(0.02)


def read_jsonl(client: OpenAI, file_id: str | None) -> list[dict[str, Any]]:
    if file_id is None:
        return []
    with client.files.with_streaming_response.content(file_id) as response:
        return [json.loads(line) for line in response.iter_lines() if line]


def results(client: OpenAI, batch: Any) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    return read_jsonl(client, batch.output_file_id), read_jsonl(client, batch.error_file_id)


def assert_each_custom_id_once(
    inputs: list[dict[str, Any]], output: list[dict[str, Any]], errors: list[dict[str, Any]]
):
    ids = [line["custom_id"] for line in output + errors]
    assert sorted(ids) == sorted(line["custom_id"] for line in inputs)
    assert len(set(ids)) == len(ids)
