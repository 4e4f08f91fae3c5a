"""The organisation's batch queue: a batch over its model's enqueued-token limit fails, unbilled, as OpenAI's does."""

from __future__ import annotations

import pytest
from conftest import request_line, results, upload, wait_terminal

from airflow_provider_openai_batch.cost.estimate import prompt_tokens
from airflow_provider_openai_batch.cost.tokens import token_counter
from airflow_provider_openai_batch.emulator.testing import wait_for

CHAT = "/v1/chat/completions"


def _lines(prefix: str, n: int) -> list[dict]:
    return [request_line(f"{prefix}-{i}", content="x" * 400) for i in range(n)]


def _tokens(lines: list[dict], model: str = "gpt-4o-mini") -> int:
    count = token_counter(model).count
    return sum(prompt_tokens(line["body"], CHAT, count) for line in lines)


def _create(client, lines):
    return client.batches.create(input_file_id=upload(client, lines), endpoint=CHAT, completion_window="24h")


def test_a_batch_over_the_limit_fails_with_openais_error_unbilled_and_without_output(
    emulator, client, schemas
):
    first, second = _lines("a", 10), _lines("b", 10)
    limit = _tokens(first) + _tokens(second) - 1  # room for either batch, not both
    emulator.configure(enqueued_token_limits={"gpt-4o-mini": limit}, rate=20)
    running = _create(client, first)
    wait_for(lambda: client.batches.retrieve(running.id).status == "in_progress")
    refused = _create(client, second)
    batch, seen = wait_terminal(client, refused.id)

    assert seen[-1] == "failed" and batch.output_file_id is None and batch.error_file_id is None
    schemas.check("Batch", client.batches.with_raw_response.retrieve(refused.id).http_response.json())
    [error] = batch.errors.data
    assert (error.code, error.line, error.param) == ("token_limit_exceeded", None, None)
    assert error.message == (
        f"Enqueued token limit reached for gpt-4o-mini in organization org-emulator. Limit: {limit:,} "
        "enqueued tokens. Please try again once some in_progress batches have been completed."
    )
    assert emulator.free_creates() == [refused.id]
    assert emulator.paid_creates() == [running.id]  # created with 200, yet not billed
    assert batch.request_counts.completed == 0


def test_room_comes_back_when_a_batch_finishes(emulator, client):
    first, second = _lines("a", 5), _lines("b", 5)
    emulator.configure(enqueued_token_limits={"gpt-4o-mini": _tokens(first) + _tokens(second) - 1})
    done, _ = wait_terminal(client, _create(client, first).id)
    assert done.status == "completed"
    later, _ = wait_terminal(client, _create(client, second).id)
    assert later.status == "completed"
    output, errors = results(client, later)
    assert sorted(line["custom_id"] for line in output) == sorted(line["custom_id"] for line in second)
    assert errors == [] and emulator.free_creates() == []


def test_the_limit_is_per_model_and_star_covers_the_others(emulator, client):
    mini, other = _lines("a", 5), [request_line(f"o-{i}", model="gpt-4o") for i in range(5)]
    emulator.configure(
        enqueued_token_limits={"gpt-4o-mini": 10**6, "*": _tokens(other, "gpt-4o") - 1}, rate=50
    )
    assert wait_terminal(client, _create(client, mini).id)[0].status == "completed"
    refused, _ = wait_terminal(client, _create(client, other).id)
    assert (
        refused.errors.data[0].code == "token_limit_exceeded"
        and "gpt-4o in" in refused.errors.data[0].message
    )


@pytest.mark.openai_emulator(enqueued_token_limits={"gpt-4o-mini": 1})
def test_the_fixture_marker_sets_the_limit_after_its_reset(emulator, client):
    assert emulator.config()["enqueued_token_limits"] == {"gpt-4o-mini": 1}
    refused, _ = wait_terminal(client, _create(client, _lines("a", 1)).id)
    assert refused.errors.data[0].code == "token_limit_exceeded"


def test_off_by_default(emulator, client):
    assert emulator.config()["enqueued_token_limits"] is None
    assert wait_terminal(client, _create(client, _lines("a", 50)).id)[0].status == "completed"


def test_an_embeddings_file_over_50000_inputs_fails_validation(emulator, client):
    lines = [
        request_line(f"e-{i}", "/v1/embeddings", input=["w"] * 2_000) for i in range(26)
    ]  # 52,000 inputs in 26 requests
    file_id = upload(client, lines)
    batch = client.batches.create(input_file_id=file_id, endpoint="/v1/embeddings", completion_window="24h")
    batch, _ = wait_terminal(client, batch.id)
    assert batch.status == "failed"
    [error] = batch.errors.data
    assert (error.code, error.line, error.param) == ("too_many_embedding_inputs", 26, "body.input")
