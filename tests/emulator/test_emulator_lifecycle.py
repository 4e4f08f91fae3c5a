"""Batch lifecycle through the real openai client: every endpoint, every terminal state, schema-checked."""

from __future__ import annotations

import asyncio
import io
import time

import openai
import pytest
from conftest import (
    TERMINAL,
    assert_each_custom_id_once,
    request_line,
    results,
    to_jsonl,
    upload,
    wait_terminal,
)
from openai import AsyncOpenAI
from openai.types import Completion, CreateEmbeddingResponse, ModerationCreateResponse
from openai.types.chat import ChatCompletion
from openai.types.responses import Response

BODY_TYPES = {
    "/v1/chat/completions": ChatCompletion,
    "/v1/responses": Response,
    "/v1/embeddings": CreateEmbeddingResponse,
    "/v1/completions": Completion,
    "/v1/moderations": ModerationCreateResponse,
}


def _create(client, lines, endpoint="/v1/chat/completions", **kwargs):
    file_id = upload(client, lines)
    return client.batches.create(input_file_id=file_id, endpoint=endpoint, completion_window="24h", **kwargs)


@pytest.mark.parametrize("endpoint", sorted(BODY_TYPES))
def test_every_endpoint_completes_with_real_response_shapes(emulator, client, http, schemas, endpoint):
    emulator.configure(embedding_dim=16, rate=100)  # 0.2 s in_progress: a poller sees every state
    lines = [request_line(f"req-{i}", endpoint) for i in range(20)]
    batch = _create(client, lines, endpoint, metadata={"job": "nightly"})
    schemas.check("Batch", http.get(f"/batches/{batch.id}").json())
    final, seen = wait_terminal(client, batch.id)

    assert seen == ["validating", "in_progress", "finalizing", "completed"]
    assert final.request_counts.model_dump() == {"total": 20, "completed": 20, "failed": 0}
    assert final.error_file_id is None and final.metadata == {"job": "nightly"}
    assert final.created_at <= final.in_progress_at <= final.finalizing_at <= final.completed_at
    assert final.expires_at == final.created_at + 24 * 3600
    schemas.check("Batch", http.get(f"/batches/{batch.id}").json())
    assert client.files.retrieve(final.output_file_id).purpose == "batch_output"

    output, errors = results(client, final)
    assert_each_custom_id_once(lines, output, errors)
    total_in = total_out = 0
    for line in output:
        assert line["id"].startswith("batch_req_") and line["error"] is None
        assert line["response"]["status_code"] == 200 and line["response"]["request_id"].startswith("req_")
        body = BODY_TYPES[endpoint].model_validate(line["response"]["body"])
        if endpoint == "/v1/embeddings":
            assert len(body.data[0].embedding) == 16
            total_in += body.usage.prompt_tokens
        elif endpoint in ("/v1/chat/completions", "/v1/completions"):
            total_in += body.usage.prompt_tokens
            total_out += body.usage.completion_tokens
        elif endpoint == "/v1/responses":
            assert body.output_text
            total_in += body.usage.input_tokens
            total_out += body.usage.output_tokens
    if endpoint != "/v1/moderations":
        assert (final.usage.input_tokens, final.usage.output_tokens) == (total_in, total_out)
    assert final.usage.total_tokens == final.usage.input_tokens + final.usage.output_tokens > 0


def test_responses_are_deterministic(client):
    lines = [request_line(f"r{i}") for i in range(5)]
    bodies = []
    for _ in range(2):
        final, _ = wait_terminal(client, _create(client, lines).id)
        output, _ = results(client, final)
        bodies.append({o["custom_id"]: o["response"]["body"]["choices"] for o in output})
    assert bodies[0] == bodies[1]


def test_request_counts_advance_while_in_progress(emulator, client):
    emulator.configure(rate=100)
    batch = _create(client, [request_line(f"r{i}") for i in range(100)])
    progress = []
    while (current := client.batches.retrieve(batch.id)).status not in TERMINAL:
        if current.status == "in_progress":
            progress.append(current.request_counts.completed)
        time.sleep(0.05)
    assert len(set(progress)) >= 3 and progress == sorted(progress)
    assert 0 < progress[len(progress) // 2] < 100


def test_some_requests_fail(emulator, client, schemas, http):
    emulator.configure(fail_custom_id_regex=r"^bad-")
    lines = [request_line(f"ok-{i}") for i in range(6)]
    lines += [
        request_line("bad-1"),
        request_line("rate-1", x_emulator_status=429),
        request_line("e-400", x_emulator_status=400),
    ]
    final, _ = wait_terminal(client, _create(client, lines).id)
    schemas.check("Batch", http.get(f"/batches/{final.id}").json())

    assert final.status == "completed"
    assert final.request_counts.model_dump() == {"total": 9, "completed": 6, "failed": 3}
    output, errors = results(client, final)
    assert_each_custom_id_once(lines, output, errors)
    by_id = {e["custom_id"]: e for e in errors}
    assert {k: v["response"]["status_code"] for k, v in by_id.items()} == {
        "bad-1": 500,
        "rate-1": 429,
        "e-400": 400,
    }
    for line in errors:
        assert line["error"] is None
        error = line["response"]["body"]["error"]
        assert set(error) == {"message", "type", "param", "code"}
    assert by_id["rate-1"]["response"]["body"]["error"]["code"] == "rate_limit_exceeded"


def test_all_failed_completes_without_output_file(client, http, schemas):
    lines = [request_line(f"r{i}", x_emulator_status=500) for i in range(4)]
    final, _ = wait_terminal(client, _create(client, lines).id)
    raw = http.get(f"/batches/{final.id}").json()
    schemas.check("Batch", raw)
    assert final.status == "completed" and final.output_file_id is None and "output_file_id" not in raw
    assert final.request_counts.model_dump() == {"total": 4, "completed": 0, "failed": 4}
    output, errors = results(client, final)
    assert_each_custom_id_once(lines, output, errors)


def test_validation_failures_name_code_and_line(client, http, schemas):
    good = request_line("a")
    lines = [
        good,
        "{not json",
        {k: v for k, v in request_line("x").items() if k != "custom_id"},
        request_line("a"),
        {**request_line("m"), "method": "GET"},
        {**request_line("u"), "url": "/v1/embeddings"},
        request_line("n", model="gpt-4o"),
    ]
    final, seen = wait_terminal(client, _create(client, lines).id)
    assert seen == ["validating", "failed"]
    assert final.failed_at and not final.in_progress_at and final.output_file_id is None
    raw = http.get(f"/batches/{final.id}").json()
    schemas.check("Batch", raw)
    assert raw["errors"]["object"] == "list"
    found = [(e["code"], e["line"], e["param"]) for e in raw["errors"]["data"]]
    assert found == [
        ("invalid_json_line", 2, None),
        ("missing_required_parameter", 3, "custom_id"),
        ("duplicate_custom_id", 4, "custom_id"),
        ("invalid_method", 5, "method"),
        ("url_mismatch", 6, "url"),
        ("model_mismatch", 7, "body.model"),
    ]
    assert all(isinstance(e["message"], str) and e["message"] for e in raw["errors"]["data"])


def test_too_many_requests_and_empty_file_fail(emulator, client):
    emulator.configure(max_requests=5)
    final, _ = wait_terminal(client, _create(client, [request_line(f"r{i}") for i in range(7)]).id)
    assert [(e.code, e.line) for e in final.errors.data] == [("too_many_tasks", 6)]
    final, _ = wait_terminal(client, _create(client, []).id)
    assert final.status == "failed" and [e.code for e in final.errors.data] == ["empty_file"]


def test_cancel_keeps_finished_part_and_marks_the_rest(emulator, client, http, schemas):
    emulator.configure(rate=40)
    lines = [request_line(f"r{i}") for i in range(100)]
    batch = _create(client, lines)
    while (current := client.batches.retrieve(batch.id)).request_counts.completed < 5:
        time.sleep(0.02)
    cancelling = client.batches.cancel(batch.id)
    assert cancelling.status == "cancelling" and cancelling.cancelling_at
    schemas.check("Batch", http.post(f"/batches/{batch.id}/cancel").json())  # cancelling again is fine
    final, seen = wait_terminal(client, batch.id)
    assert current.status == "in_progress" and seen[-1] == "cancelled" and final.cancelled_at
    schemas.check("Batch", http.get(f"/batches/{batch.id}").json())

    output, errors = results(client, final)
    assert_each_custom_id_once(lines, output, errors)
    assert 5 <= len(output) < 100 and len(output) == final.request_counts.completed
    assert {e["error"]["code"] for e in errors} == {"batch_cancelled"}
    assert all(e["response"] is None for e in errors)


def test_cancel_while_validating(client):
    lines = [request_line(f"r{i}") for i in range(5)]
    batch = _create(client, lines)
    assert client.batches.cancel(batch.id).status == "cancelling"
    final, _ = wait_terminal(client, batch.id)
    output, errors = results(client, final)
    assert final.status == "cancelled" and output == [] and final.request_counts.total == 5
    assert_each_custom_id_once(lines, output, errors)


def test_cancel_finished_batch_is_409(client, http):
    final, _ = wait_terminal(client, _create(client, [request_line("a")]).id)
    with pytest.raises(openai.ConflictError):
        client.batches.cancel(final.id)
    body = http.post(f"/batches/{final.id}/cancel").json()
    assert body["error"]["type"] == "invalid_request_error"


def test_forced_expiry_keeps_finished_part(emulator, client, http, schemas):
    emulator.configure(rate=40)
    lines = [request_line(f"r{i}") for i in range(100)]
    batch = _create(client, lines)
    while client.batches.retrieve(batch.id).request_counts.completed < 3:
        time.sleep(0.02)
    emulator.expire(batch.id)
    final, seen = wait_terminal(client, batch.id)
    assert final.status == "expired" and final.expired_at
    schemas.check("Batch", http.get(f"/batches/{batch.id}").json())
    output, errors = results(client, final)
    assert_each_custom_id_once(lines, output, errors)
    assert len(output) >= 3 and {e["error"]["code"] for e in errors} == {"batch_expired"}


def test_time_scaled_window_expires_on_its_own(emulator, client):
    emulator.configure(rate=50, time_scale=1.5 / 86400)  # the 24h window lasts 1.5 s
    lines = [request_line(f"r{i}") for i in range(200)]
    batch = _create(client, lines)
    assert batch.expires_at - batch.created_at <= 2
    final, _ = wait_terminal(client, batch.id)
    assert final.status == "expired"
    output, errors = results(client, final)
    assert_each_custom_id_once(lines, output, errors)
    assert 0 < len(output) < 200 and {e["error"]["code"] for e in errors} == {"batch_expired"}


@pytest.mark.parametrize(
    ("change", "param"),
    [
        ({"endpoint": "/v1/audio"}, "endpoint"),
        ({"completion_window": "48h"}, "completion_window"),
        ({"input_file_id": "file-nope"}, "input_file_id"),
        ({"metadata": {f"k{i}": "v" for i in range(17)}}, "metadata"),
        ({"metadata": {"k" * 65: "v"}}, "metadata." + "k" * 65),
        ({"metadata": {"k": "v" * 513}}, "metadata.k"),
        ({"output_expires_after": {"anchor": "created_at", "seconds": 60}}, "output_expires_after"),
        ({"output_expires_after": {"anchor": "completed_at", "seconds": 3600}}, "output_expires_after"),
    ],
)
def test_create_validation(client, http, change, param):
    file_id = upload(client, [request_line("a")])
    body = {
        "input_file_id": file_id,
        "endpoint": "/v1/chat/completions",
        "completion_window": "24h",
        **change,
    }
    response = http.post("/batches", json=body)
    assert response.status_code == 400
    assert response.json()["error"]["param"] == param


def test_create_rejects_a_file_without_batch_purpose(client, http):
    file_id = client.files.create(file=("x.jsonl", io.BytesIO(b"{}\n")), purpose="user_data").id
    with pytest.raises(openai.BadRequestError):
        client.batches.create(input_file_id=file_id, endpoint="/v1/chat/completions", completion_window="24h")


def test_output_expires_after_sets_output_file_expiry(client):
    batch = _create(
        client, [request_line("a")], output_expires_after={"anchor": "created_at", "seconds": 3600}
    )
    final, _ = wait_terminal(client, batch.id)
    made = client.files.retrieve(final.output_file_id)
    assert made.expires_at == made.created_at + 3600


def test_list_batches_newest_first_with_cursor(client, http, schemas):
    file_id = upload(client, [request_line("a")])
    ids = [
        client.batches.create(
            input_file_id=file_id, endpoint="/v1/chat/completions", completion_window="24h"
        ).id
        for _ in range(5)
    ]
    page = http.get("/batches", params={"limit": 2}).json()
    schemas.check("ListBatchesResponse", page)
    assert [b["id"] for b in page["data"]] == ids[::-1][:2]
    assert (page["first_id"], page["last_id"], page["has_more"]) == (ids[4], ids[3], True)
    assert [b.id for b in client.batches.list(limit=2)] == ids[::-1]
    last = http.get("/batches", params={"after": ids[1]}).json()
    assert [b["id"] for b in last["data"]] == [ids[0]] and last["has_more"] is False
    for bad in ({"limit": 0}, {"limit": 101}):
        assert http.get("/batches", params=bad).status_code == 400
    assert http.get("/batches/batch_nope").status_code == 404
    assert http.post("/batches/batch_nope/cancel").status_code == 404


def test_async_client_full_lifecycle(emulator):
    emulator.configure(rate=100)

    async def run():
        async with AsyncOpenAI(base_url=emulator.base_url, api_key="sk-test", max_retries=0) as client:
            lines = [request_line(f"r{i}", "/v1/responses") for i in range(30)]
            data = to_jsonl(lines)
            made = await client.files.create(file=("a.jsonl", data), purpose="batch")
            batch = await client.batches.create(
                input_file_id=made.id, endpoint="/v1/responses", completion_window="24h"
            )
            seen = []
            while batch.status not in TERMINAL:
                await asyncio.sleep(0.02)
                batch = await client.batches.retrieve(batch.id)
                if not seen or seen[-1] != batch.status:
                    seen.append(batch.status)
            output = []
            async with client.files.with_streaming_response.content(batch.output_file_id) as response:
                async for line in response.iter_lines():
                    output.append(line)
            listed = [b.id async for b in client.batches.list()]
            return lines, batch, seen, output, listed

    lines, batch, seen, output, listed = asyncio.run(run())
    assert seen[-3:] == ["in_progress", "finalizing", "completed"]
    assert batch.request_counts.completed == 30 and len(output) == 30 and listed == [batch.id]


def test_every_state_snapshot_matches_the_schema(emulator, client, http, schemas):
    emulator.configure(rate=100)
    batch = _create(client, [request_line(f"r{i}") for i in range(30)])
    seen = []
    while True:
        raw = http.get(f"/batches/{batch.id}").json()
        schemas.check("Batch", raw)
        schemas.check("ListBatchesResponse", http.get("/batches").json())
        if not seen or seen[-1] != raw["status"]:
            seen.append(raw["status"])
        if raw["status"] in TERMINAL:
            break
        time.sleep(0.02)
    assert seen == ["validating", "in_progress", "finalizing", "completed"]


def test_unknown_route_has_openai_error_shape(http):
    response = http.get("/nothing/here")
    assert response.status_code == 404 and set(response.json()["error"]) == {
        "message",
        "type",
        "param",
        "code",
    }
