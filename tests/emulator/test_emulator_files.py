"""Files API: upload, list, retrieve, download, delete; limits and error shapes, all schema-checked."""

from __future__ import annotations

import io

import openai
import pytest
from conftest import request_line, to_jsonl, upload


def test_upload_retrieve_download_delete(client, http, schemas):
    data = to_jsonl([request_line(f"r{i}") for i in range(3)])
    created = client.files.create(file=("in.jsonl", io.BytesIO(data)), purpose="batch")
    assert (created.bytes, created.filename, created.purpose) == (len(data), "in.jsonl", "batch")
    assert created.expires_at == created.created_at + 30 * 24 * 3600

    raw = http.get(f"/files/{created.id}")
    schemas.check("OpenAIFile", raw.json())
    assert client.files.retrieve(created.id).id == created.id

    with client.files.with_streaming_response.content(created.id) as response:
        assert b"".join(response.iter_bytes()) == data
    assert client.files.content(created.id).content == data

    deleted = http.delete(f"/files/{created.id}")
    schemas.check("DeleteFileResponse", deleted.json())
    assert deleted.json() == {"id": created.id, "object": "file", "deleted": True}
    with pytest.raises(openai.NotFoundError):
        client.files.retrieve(created.id)


def test_upload_other_purpose_and_expires_after(client):
    made = client.files.create(
        file=("notes.txt", io.BytesIO(b"anything")),
        purpose="user_data",
        expires_after={"anchor": "created_at", "seconds": 7200},
    )
    assert made.purpose == "user_data" and made.expires_at == made.created_at + 7200


def test_list_pagination_order_and_purpose(client, http, schemas):
    ids = [upload(client, [request_line("a")], name=f"f{i}.jsonl") for i in range(5)]
    other = client.files.create(file=("x.txt", io.BytesIO(b"x")), purpose="assistants").id

    page = http.get("/files", params={"limit": 2, "purpose": "batch"}).json()
    schemas.check("ListFilesResponse", page)
    assert [f["id"] for f in page["data"]] == ids[::-1][:2]
    assert (page["first_id"], page["last_id"], page["has_more"]) == (ids[4], ids[3], True)

    walked = [f.id for f in client.files.list(purpose="batch", limit=2, order="asc")]
    assert walked == ids  # the client follows `after` across pages
    assert [f.id for f in client.files.list()][0] == other

    empty = http.get("/files", params={"purpose": "fine-tune"}).json()
    schemas.check("ListFilesResponse", empty)
    assert empty["data"] == [] and empty["has_more"] is False


@pytest.mark.parametrize(
    ("name", "purpose", "status", "param"),
    [
        ("input.csv", "batch", 400, "file"),
        ("input.jsonl", "nonsense", 400, "purpose"),
    ],
)
def test_upload_rejections(http, schemas, name, purpose, status, param):
    response = http.post("/files", files={"file": (name, b"{}\n")}, data={"purpose": purpose})
    assert response.status_code == status
    body = response.json()
    assert body["error"]["param"] == param and body["error"]["type"] == "invalid_request_error"
    _check_error_shape(body)


def test_batch_upload_over_limit_is_413(emulator, client):
    emulator.configure(max_file_bytes=1000)
    with pytest.raises(openai.APIStatusError) as caught:
        client.files.create(file=("big.jsonl", io.BytesIO(b"x" * 1001)), purpose="batch")
    assert caught.value.status_code == 413
    _check_error_shape(caught.value.body and {"error": caught.value.body})
    # the limit is for batch input only, and exactly the limit is fine
    client.files.create(file=("big.txt", io.BytesIO(b"x" * 5000)), purpose="user_data")
    client.files.create(file=("ok.jsonl", io.BytesIO(b"x" * 1000)), purpose="batch")
    assert [f.filename for f in client.files.list(order="asc")] == ["big.txt", "ok.jsonl"]


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/files/file-missing"),
        ("GET", "/files/file-missing/content"),
        ("DELETE", "/files/file-missing"),
    ],
)
def test_unknown_file_is_404(http, method, path):
    response = http.request(method, path)
    assert response.status_code == 404
    _check_error_shape(response.json())


def test_bad_list_params_are_400(http):
    for params in ({"limit": 0}, {"limit": "x"}, {"order": "sideways"}, {"after": "file-nope"}):
        response = http.get("/files", params=params)
        assert response.status_code == 400, params
        _check_error_shape(response.json())


def test_download_is_byte_exact_for_a_multi_megabyte_file(client):
    data = to_jsonl(
        [request_line(f"r{i}", messages=[{"role": "user", "content": "y" * 1000}]) for i in range(3000)]
    )
    file_id = client.files.create(file=("in.jsonl", io.BytesIO(data)), purpose="batch").id
    with client.files.with_streaming_response.content(file_id) as response:
        chunks = list(response.iter_bytes())
    assert len(chunks) > 1 and b"".join(chunks) == data


def _check_error_shape(body):
    assert set(body) == {"error"}
    error = body["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert isinstance(error["message"], str) and isinstance(error["type"], str)
    assert error["param"] is None or isinstance(error["param"], str)
    assert error["code"] is None or isinstance(error["code"], str)
