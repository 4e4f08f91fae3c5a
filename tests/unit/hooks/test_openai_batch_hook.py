from __future__ import annotations

import asyncio
import io
import json
import logging

import httpx2
import openai
import pytest
from airflow.sdk import BaseHook, Connection

from airflow_provider_openai_batch.hooks import clients as clients_module
from airflow_provider_openai_batch.hooks import openai_batch as hook_module
from airflow_provider_openai_batch.hooks.openai_batch import (
    OpenAIBatchHook,
    client_kwargs_from_connection,
)
from tests.support.builders import batch

API_KEY = "sk-test-DO-NOT-LEAK-0123456789"
CONN_ID = "openai_test"


def batch_json(batch_id: str = "batch_1", status: str = "in_progress") -> dict:
    return batch(batch_id, status, counts=(3, 1, 0))


def set_conn(monkeypatch, conn_id: str = CONN_ID, **fields) -> None:
    fields.setdefault("conn_type", "openai_batch")
    fields.setdefault("password", API_KEY)
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps(fields))


@pytest.fixture(autouse=True)
def _fresh_cache():
    clients_module.clear_async_client_cache()
    yield
    clients_module.clear_async_client_cache()


def use_transport(monkeypatch, handler) -> list[httpx2.Request]:
    """Route the hook's sync and async clients through ``handler``; return the requests seen."""
    seen: list[httpx2.Request] = []

    def recording(request: httpx2.Request) -> httpx2.Response:
        seen.append(request)
        return handler(request)

    monkeypatch.setattr(
        clients_module,
        "_new_sync_http_client",
        lambda: httpx2.Client(transport=httpx2.MockTransport(recording)),
    )
    monkeypatch.setattr(
        clients_module,
        "_new_async_http_client",
        lambda: httpx2.AsyncClient(transport=httpx2.MockTransport(recording)),
    )
    return seen


# -- connection mapping --------------------------------------------------------------------------------


def test_openai_batch_connection_maps_every_field():
    conn = Connection(
        conn_id="c",
        conn_type="openai_batch",
        password=API_KEY,
        host="http://127.0.0.1:9999/v1",
        extra=json.dumps(
            {
                "organization": "org-1",
                "project": "proj-1",
                "timeout": "30",
                "max_retries": "4",
                "default_headers": {"X-Team": "data"},
            }
        ),
    )
    kind, kwargs = client_kwargs_from_connection(conn)
    assert kind == "openai"
    assert kwargs == {
        "api_key": API_KEY,
        "base_url": "http://127.0.0.1:9999/v1",
        "organization": "org-1",
        "project": "proj-1",
        "timeout": 30.0,
        "max_retries": 4,
        "default_headers": {"X-Team": "data"},
    }
    client = clients_module.new_sync_client(kind, kwargs)
    assert isinstance(client, openai.OpenAI) and not isinstance(client, openai.AzureOpenAI)
    assert str(client.base_url) == "http://127.0.0.1:9999/v1/"
    assert client.organization == "org-1" and client.max_retries == 4


def test_providers_openai_connection_with_openai_client_kwargs():
    conn = Connection(
        conn_id="c",
        conn_type="openai",
        password=API_KEY,
        extra=json.dumps(
            {
                "openai_client_kwargs": {
                    "base_url": "http://proxy.local/v1",
                    "organization": "org-legacy",
                    "max_retries": 1,
                    "http_client": "not allowed",
                }
            }
        ),
    )
    kind, kwargs = client_kwargs_from_connection(conn)
    assert kind == "openai"
    assert kwargs == {
        "api_key": API_KEY,
        "base_url": "http://proxy.local/v1",
        "organization": "org-legacy",
        "max_retries": 1,
    }


def test_connection_fields_win_over_openai_client_kwargs():
    conn = Connection(
        conn_id="c",
        conn_type="openai",
        password=API_KEY,
        host="api.example.com/v1",
        extra=json.dumps({"openai_client_kwargs": {"base_url": "http://old/v1"}, "organization": "org-new"}),
    )
    _, kwargs = client_kwargs_from_connection(conn)
    assert kwargs["base_url"] == "https://api.example.com/v1"
    assert kwargs["organization"] == "org-new"


def test_azure_connection():
    conn = Connection(
        conn_id="c",
        conn_type="openai_batch",
        password=API_KEY,
        extra=json.dumps(
            {
                "azure_endpoint": "https://res.openai.azure.com",
                "api_version": "2024-10-21",
                "azure_deployment": "gpt4o",
            }
        ),
    )
    kind, kwargs = client_kwargs_from_connection(conn)
    assert kind == "azure"
    assert kwargs == {
        "api_key": API_KEY,
        "azure_endpoint": "https://res.openai.azure.com",
        "api_version": "2024-10-21",
        "azure_deployment": "gpt4o",
    }
    assert isinstance(clients_module.new_sync_client(kind, kwargs), openai.AzureOpenAI)


def test_azure_by_api_type_uses_host_as_endpoint_and_requires_api_version():
    conn = Connection(
        conn_id="c",
        conn_type="openai_batch",
        password=API_KEY,
        host="https://res.openai.azure.com",
        extra=json.dumps({"api_type": "azure", "api_version": "2024-10-21"}),
    )
    kind, kwargs = client_kwargs_from_connection(conn)
    assert kind == "azure" and kwargs["azure_endpoint"] == "https://res.openai.azure.com"
    assert "base_url" not in kwargs

    no_version = Connection(
        conn_id="c", conn_type="openai_batch", password=API_KEY, extra=json.dumps({"api_type": "azure"})
    )
    with pytest.raises(ValueError, match="api_version") as err:
        client_kwargs_from_connection(no_version, {"api_type": "azure", "azure_endpoint": "https://x"})
    assert API_KEY not in str(err.value)


def test_bad_numbers_in_extras_are_reported_without_the_key():
    conn = Connection(
        conn_id="c", conn_type="openai_batch", password=API_KEY, extra=json.dumps({"timeout": "soon"})
    )
    with pytest.raises(ValueError, match="timeout") as err:
        client_kwargs_from_connection(conn)
    assert API_KEY not in str(err.value)


# -- clients -------------------------------------------------------------------------------------------


def test_sync_client_from_env_connection(monkeypatch):
    set_conn(monkeypatch, host="http://127.0.0.1:1/v1")
    hook = OpenAIBatchHook(CONN_ID)
    assert hook.get_conn() is hook.client
    assert hook.client.api_key == API_KEY
    assert API_KEY not in repr(hook)


def test_async_client_is_shared_per_settings_and_rebuilt_when_connection_changes(monkeypatch):
    set_conn(monkeypatch, host="http://127.0.0.1:1/v1")
    set_conn(monkeypatch, conn_id="openai_same", host="http://127.0.0.1:1/v1")

    async def main():
        a = await OpenAIBatchHook(CONN_ID).get_async_client()
        b = await OpenAIBatchHook(CONN_ID).get_async_client()
        same_settings = await OpenAIBatchHook("openai_same").get_async_client()
        concurrent = await asyncio.gather(*(OpenAIBatchHook(CONN_ID).get_async_client() for _ in range(20)))
        set_conn(monkeypatch, host="http://127.0.0.1:2/v1")
        changed = await OpenAIBatchHook(CONN_ID).get_async_client()
        return a, b, same_settings, concurrent, changed

    a, b, same_settings, concurrent, changed = asyncio.run(main())
    assert isinstance(a, openai.AsyncOpenAI)
    assert a is b is same_settings
    assert all(c is a for c in concurrent)
    assert changed is not a
    assert str(changed.base_url) == "http://127.0.0.1:2/v1/"


def test_async_client_is_not_shared_across_event_loops(monkeypatch):
    set_conn(monkeypatch, host="http://127.0.0.1:1/v1")
    first = asyncio.run(OpenAIBatchHook(CONN_ID).get_async_client())
    second = asyncio.run(OpenAIBatchHook(CONN_ID).get_async_client())
    assert first is not second


def test_async_client_uses_async_connection_lookup(monkeypatch):
    set_conn(monkeypatch, host="http://127.0.0.1:1/v1")

    def forbidden(*args, **kwargs):
        raise AssertionError("sync get_connection called inside the event loop")

    monkeypatch.setattr(BaseHook, "get_connection", classmethod(forbidden))
    client = asyncio.run(OpenAIBatchHook(CONN_ID).get_async_client())
    assert client.api_key == API_KEY


def test_default_async_pool_limits():
    client = clients_module._new_async_http_client()
    pool = client._transport._pool
    assert pool._max_connections == clients_module.ASYNC_MAX_CONNECTIONS


# -- verbs ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("call", "field"),
    [
        (lambda h: h.get_batch(""), "batch_id"),
        (lambda h: h.cancel_batch(""), "batch_id"),
        (lambda h: h.delete_file(""), "file_id"),
        (lambda h: h.download_file("", local_path="/tmp/x"), "file_id"),
        (lambda h: h.create_batch(input_file_id="", endpoint="/v1/chat/completions"), "input_file_id"),
        (lambda h: h.create_batch(input_file_id="file-1", endpoint=""), "endpoint"),
        (lambda h: h.upload_file(file=io.BytesIO(b"{}"), filename=""), "filename"),
        (lambda h: asyncio.run(h.aget_batch("")), "batch_id"),
        (lambda h: asyncio.run(h.acancel_batch("")), "batch_id"),
    ],
)
def test_arguments_are_validated_before_any_request(call, field):
    hook = OpenAIBatchHook("no_such_connection")
    with pytest.raises(ValueError, match=f"Expected a non-empty value for `{field}` but received ''"):
        call(hook)


def test_list_limit_is_validated():
    with pytest.raises(ValueError, match="between 1 and 100"):
        OpenAIBatchHook("no_such_connection").list_batches(limit=500)


@pytest.mark.parametrize(
    "call",
    [
        lambda h: h.upload_file(io.BytesIO(b"{}"), "in.jsonl"),
        lambda h: h.create_batch("file-1", "/v1/chat/completions"),
        lambda h: h.list_batches("batch_1"),
        lambda h: h.iter_batches(5),
        lambda h: h.download_file("file-1", "/tmp/out"),
        lambda h: asyncio.run(h.alist_batches("batch_1")),
    ],
)
def test_verb_options_are_keyword_only(call):
    # As in openai-python: the id may be positional, everything else is named, so a reordered
    # signature can never silently swap two arguments.
    with pytest.raises(TypeError, match="positional"):
        call(OpenAIBatchHook("no_such_connection"))


def test_sync_verbs_hit_the_api(monkeypatch):
    set_conn(monkeypatch, host="http://openai.test/v1")

    def handler(request: httpx2.Request) -> httpx2.Response:
        path = request.url.path
        if request.method == "POST" and path == "/v1/files":
            return httpx2.Response(
                200,
                json={
                    "id": "file-1",
                    "object": "file",
                    "bytes": 3,
                    "created_at": 1,
                    "filename": "in.jsonl",
                    "purpose": "batch",
                    "status": "uploaded",
                },
            )
        if request.method == "POST" and path == "/v1/batches":
            body = json.loads(request.content)
            assert body == {
                "input_file_id": "file-1",
                "endpoint": "/v1/chat/completions",
                "completion_window": "24h",
                "metadata": {"k": "v"},
            }
            return httpx2.Response(200, json=batch_json("batch_1", "validating"))
        if request.method == "GET" and path == "/v1/batches/batch_1":
            return httpx2.Response(200, json=batch_json("batch_1", "in_progress"))
        if request.method == "POST" and path == "/v1/batches/batch_1/cancel":
            return httpx2.Response(200, json=batch_json("batch_1", "cancelling"))
        if request.method == "GET" and path == "/v1/batches":
            after = request.url.params.get("after")
            if after is None:
                data, more = [batch_json("b3"), batch_json("b2")], True
            else:
                data, more = [batch_json("b1")], False
            return httpx2.Response(200, json={"object": "list", "data": data, "has_more": more})
        if request.method == "DELETE" and path == "/v1/files/file-1":
            return httpx2.Response(200, json={"id": "file-1", "object": "file", "deleted": True})
        return httpx2.Response(404, json={"error": {"message": f"no route {path}"}})

    seen = use_transport(monkeypatch, handler)
    hook = OpenAIBatchHook(CONN_ID)
    assert hook.upload_file(file=io.BytesIO(b"{}\n"), filename="in.jsonl").id == "file-1"
    created = hook.create_batch(input_file_id="file-1", endpoint="/v1/chat/completions", metadata={"k": "v"})
    assert created["status"] == "validating"
    assert hook.get_batch("batch_1")["status"] == "in_progress"
    assert hook.cancel_batch("batch_1")["status"] == "cancelling"
    assert [b["id"] for b in hook.list_batches().data] == ["b3", "b2"]
    assert [b["id"] for b in hook.iter_batches(max_pages=5)] == ["b3", "b2", "b1"]
    assert [b["id"] for b in hook.iter_batches(max_pages=1)] == ["b3", "b2"]
    assert hook.delete_file("file-1").deleted is True
    assert all(r.headers["authorization"] == f"Bearer {API_KEY}" for r in seen)

    async def async_verbs():
        return (
            (await hook.aget_batch("batch_1"))["status"],
            (await hook.acancel_batch("batch_1"))["status"],
            [b["id"] for b in (await hook.alist_batches(limit=2)).data],
        )

    assert asyncio.run(async_verbs()) == ("in_progress", "cancelling", ["b3", "b2"])


class CountingReader(io.BytesIO):
    """A file object that records how much each read asked for."""

    def __init__(self, data: bytes) -> None:
        super().__init__(data)
        self.reads: list[int] = []

    def read(self, size: int | None = -1) -> bytes:
        self.reads.append(-1 if size is None else size)
        return super().read(size)


def test_upload_streams_the_file_object_in_chunks(monkeypatch):
    set_conn(monkeypatch, host="http://openai.test/v1")
    received = {}

    def handler(request: httpx2.Request) -> httpx2.Response:
        received["body"] = request.content
        return httpx2.Response(
            200,
            json={
                "id": "file-1",
                "object": "file",
                "bytes": 1,
                "created_at": 1,
                "filename": "big.jsonl",
                "purpose": "batch",
            },
        )

    use_transport(monkeypatch, handler)
    payload = b'{"custom_id": "x"}\n' * 50_000  # about 1 MB
    reader = CountingReader(payload)
    OpenAIBatchHook(CONN_ID).upload_file(file=reader, filename="big.jsonl")
    assert payload in received["body"]
    # Never one read of the whole file: the HTTP client reads bounded chunks.
    assert reader.reads and all(0 < size < len(payload) for size in reader.reads)


# -- download ------------------------------------------------------------------------------------------


class DroppingStream(httpx2.SyncByteStream):
    def __init__(self, data: bytes, drop_after: int | None) -> None:
        self.data, self.drop_after = data, drop_after

    def __iter__(self):
        step = 64 * 1024
        for start in range(0, len(self.data), step):
            if self.drop_after is not None and start >= self.drop_after:
                raise httpx2.RemoteProtocolError(
                    "peer closed connection without sending complete message body"
                )
            yield self.data[start : start + step]


def content_lines(n: int) -> bytes:
    return b"".join(
        json.dumps({"custom_id": f"r{i}", "response": {"x": "y" * 50}}).encode() + b"\n" for i in range(n)
    )


def test_download_retries_after_a_mid_body_drop_and_writes_the_full_file(monkeypatch, tmp_path):
    set_conn(monkeypatch, host="http://openai.test/v1")
    data = content_lines(20_000)
    attempts = []

    def handler(request: httpx2.Request) -> httpx2.Response:
        assert request.url.path == "/v1/files/file-out/content"
        attempts.append(1)
        drop = len(data) // 2 if len(attempts) == 1 else None
        return httpx2.Response(
            200, headers={"content-length": str(len(data))}, stream=DroppingStream(data, drop)
        )

    use_transport(monkeypatch, handler)
    target = tmp_path / "out.jsonl"
    nbytes, lines = OpenAIBatchHook(CONN_ID).download_file("file-out", local_path=target)
    assert len(attempts) == 2
    assert (nbytes, lines) == (len(data), 20_000)
    assert target.read_bytes() == data


def test_download_counts_a_last_line_without_newline(monkeypatch, tmp_path):
    set_conn(monkeypatch, host="http://openai.test/v1")
    use_transport(monkeypatch, lambda request: httpx2.Response(200, content=b'{"a": 1}\n{"b": 2}'))
    assert OpenAIBatchHook(CONN_ID).download_file("file-out", local_path=str(tmp_path / "o")) == (17, 2)


def test_download_gives_up_after_max_attempts_with_a_clear_error(monkeypatch, tmp_path, caplog):
    set_conn(monkeypatch, host="http://openai.test/v1")
    data = content_lines(5_000)

    def handler(request):
        return httpx2.Response(200, stream=DroppingStream(data, 64 * 1024))

    use_transport(monkeypatch, handler)
    caplog.set_level(logging.DEBUG)
    with pytest.raises(Exception, match=r"Could not download file file-out .* on each of 3 attempts") as err:
        OpenAIBatchHook(CONN_ID).download_file("file-out", local_path=str(tmp_path / "o"), max_attempts=3)
    assert err.type.__name__ == "OpenAIBatchError"
    assert caplog.text.count("failed on attempt") == 3
    assert API_KEY not in str(err.value) and API_KEY not in caplog.text


def test_download_does_not_retry_http_errors(monkeypatch, tmp_path):
    set_conn(monkeypatch, host="http://openai.test/v1")
    seen = use_transport(
        monkeypatch, lambda r: httpx2.Response(404, json={"error": {"message": "No such file"}})
    )
    with pytest.raises(openai.NotFoundError):
        OpenAIBatchHook(CONN_ID).download_file("file-gone", local_path=str(tmp_path / "o"))
    assert len(seen) == 1


def test_api_key_never_in_logs_reprs_or_errors(monkeypatch, caplog, tmp_path):
    set_conn(monkeypatch, host="http://openai.test/v1", extra={"max_retries": 0})
    caplog.set_level(logging.DEBUG)
    use_transport(
        monkeypatch, lambda r: httpx2.Response(401, json={"error": {"message": "Incorrect API key"}})
    )
    hook = OpenAIBatchHook(CONN_ID)
    with pytest.raises(openai.AuthenticationError) as err:
        hook.get_batch("batch_1")
    with pytest.raises(openai.AuthenticationError) as aerr:
        asyncio.run(hook.aget_batch("batch_1"))
    for text in (repr(hook), str(hook), str(err.value), str(aerr.value), caplog.text):
        assert API_KEY not in text


def test_a_batch_leaves_the_hook_as_the_json_dict_with_unset_fields_present():
    from openai.types import Batch

    model = Batch(
        id="batch_x",
        object="batch",
        endpoint="/v1/chat/completions",
        input_file_id="file-1",
        completion_window="24h",
        status="completed",
        created_at=1,
        request_counts={"total": 1, "completed": 1, "failed": 0},
    )
    batch = hook_module.batch_dict(model)
    assert batch["id"] == "batch_x" and batch["request_counts"] == {"total": 1, "completed": 1, "failed": 0}
    assert batch["output_file_id"] is None  # unset fields present, so .get() and [] both work
