"""Seeded batches, exact ``batches.list`` paging among same-second batches, and the journal counts of paid
creates and file deletes that the never-pay-twice and cleanup tests rely on."""

from __future__ import annotations

import time

import httpx
import openai
import pytest
from conftest import request_line, upload, wait_terminal
from openai import OpenAI

from airflow_provider_openai_batch.emulator.admin import SEED_TIMESTAMPS


@pytest.fixture
def admin(emulator):
    with httpx.Client(base_url=emulator.root_url + "/_emulator") as admin:
        yield admin


def _create(client, lines=None, **kwargs):
    file_id = upload(client, lines or [request_line("a")])
    return client.batches.create(
        input_file_id=file_id, endpoint="/v1/chat/completions", completion_window="24h", **kwargs
    )


@pytest.mark.parametrize("status", sorted(SEED_TIMESTAMPS))
def test_seeded_batches_look_like_batches_in_that_status_and_stay_there(
    emulator, client, http, schemas, status
):
    ids = emulator.seed_batches(3, status=status, metadata={"tenant": "someone-else"})
    assert len(set(ids)) == 3
    for batch_id in ids:
        body = http.get(f"/batches/{batch_id}").json()
        schemas.check("Batch", body)
        assert (body["status"], body["metadata"]) == (status, {"tenant": "someone-else"})
        stamps = {name for name in body if name.endswith("_at") and name not in ("created_at", "expires_at")}
        assert stamps == set(SEED_TIMESTAMPS[status])
    time.sleep(0.6)  # twice the test validating/finalizing times: a worker would have moved them
    assert {client.batches.retrieve(batch_id).status for batch_id in ids} == {status}


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({}, "count"),
        ({"count": 0}, "count"),
        ({"count": 10_001}, "count"),
        ({"count": True}, "count"),
        ({"count": 1, "status": "done"}, "status"),
        ({"count": 1, "created_at": "yesterday"}, "created_at"),
        ({"count": 1, "endpoint": "/v1/nothing"}, "endpoint"),
        ({"count": 1, "metadata": {"k": 1}}, "metadata.k"),
        ({"count": 1, "colour": "blue"}, None),
    ],
)
def test_bad_seed_requests_are_400_and_seed_nothing(client, admin, body, param):
    response = admin.post("/batches/seed", json=body)
    assert response.status_code == 400 and response.json()["error"]["param"] == param
    assert client.batches.list().data == []


def test_list_pages_are_exact_when_hundreds_of_batches_share_a_second(emulator, client, schemas, http):
    second = int(time.time()) - 60
    first_group = emulator.seed_batches(150, created_at=second, metadata={"tenant": "a"})
    ours = [_create(client).id for _ in range(3)]  # created now: newer than every seeded batch
    second_group = emulator.seed_batches(120, created_at=second, status="in_progress")
    older = emulator.seed_batches(5, created_at=second - 1)
    # Newest first by created_at; within one second the last created first.
    expected = [*reversed(ours), *reversed(second_group), *reversed(first_group), *reversed(older)]

    for limit in (1, 7, 100):
        seen: list[str] = []
        after = None
        while True:
            params = {"limit": limit, **({"after": after} if after else {})}
            body = http.get("/batches", params=params).json()
            if not seen:
                schemas.check("ListBatchesResponse", body)  # slow; the shape is the same on every page
            seen += [batch["id"] for batch in body["data"]]
            assert len(body["data"]) == min(limit, len(expected) - len(seen) + len(body["data"]))
            if not body["has_more"]:
                break
            after = body["last_id"]
        assert seen == expected, limit
    assert [batch.id for batch in client.batches.list(limit=13)] == expected  # the client's auto-paging


def test_list_limit_is_1_to_100(client, http):
    _create(client)
    assert http.get("/batches", params={"limit": 100}).status_code == 200
    for limit in (0, 101):
        response = http.get("/batches", params={"limit": limit})
        assert response.status_code == 400 and response.json()["error"]["param"] == "limit"


def test_journal_counts_paid_creates_even_when_the_answer_is_lost(emulator):
    client = OpenAI(base_url=emulator.base_url, api_key="sk-test", max_retries=0)
    file_id = upload(client, [request_line("a")])
    emulator.add_fault(method="POST", path="/v1/batches", status=503)  # refused: not paid
    emulator.add_fault(method="POST", path="/v1/batches", kind="drop_mid_body", after_bytes=10)  # paid, lost
    for _ in range(2):
        with pytest.raises((openai.APIStatusError, openai.APIConnectionError)):
            client.batches.create(
                input_file_id=file_id, endpoint="/v1/chat/completions", completion_window="24h"
            )
    answered = client.batches.create(
        input_file_id=file_id, endpoint="/v1/chat/completions", completion_window="24h"
    )

    assert [entry["status"] for entry in emulator.calls("POST", "/v1/batches")] == [503, 200, 200]
    assert emulator.paid_creates() == [batch.id for batch in reversed(list(client.batches.list()))]
    assert emulator.paid_creates()[-1] == answered.id and len(emulator.paid_creates()) == 2
    client.batches.cancel(answered.id)  # a cancel is a POST under /v1/batches/, not a create
    assert len(emulator.paid_creates()) == 2
    assert emulator.calls("POST", "/v1/files", status=200)[0]["id"] == file_id


def test_deleting_a_batch_s_files_is_journalled_and_they_leave_the_list(emulator, client, http, schemas):
    emulator.configure(fail_custom_id_regex="bad")
    final, _ = wait_terminal(client, _create(client, [request_line("ok"), request_line("bad")]).id)
    files = [final.input_file_id, final.output_file_id, final.error_file_id]
    assert {f.id for f in client.files.list()} == set(files)

    for file_id in files:
        deleted = http.delete(f"/files/{file_id}")
        schemas.check("DeleteFileResponse", deleted.json())
        assert deleted.json() == {"id": file_id, "object": "file", "deleted": True}
    assert http.delete(f"/files/{files[0]}").status_code == 404  # a second delete finds nothing
    assert emulator.deleted_files() == files  # the 404 is not counted
    listed = http.get("/files").json()
    schemas.check("ListFilesResponse", listed)
    assert listed["data"] == [] and http.get(f"/files/{files[1]}/content").status_code == 404
    assert client.batches.retrieve(final.id).output_file_id == files[1]  # the batch still names its files


def test_deleting_the_input_file_while_the_batch_runs_does_not_stop_it(emulator, client):
    lines = [request_line(f"r{i}") for i in range(20)]
    batch = _create(client, lines)
    client.files.delete(batch.input_file_id)  # still validating: nothing has been read yet
    final, _ = wait_terminal(client, batch.id)
    assert (final.status, final.request_counts.completed) == ("completed", len(lines))
    assert emulator.deleted_files() == [batch.input_file_id]
