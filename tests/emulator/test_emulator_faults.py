"""Fault injection, the journal, reset and config, seen through the real openai client."""

from __future__ import annotations

import io
import time

import httpx
import httpx2
import openai
import pytest
from conftest import request_line, to_jsonl, upload
from openai import OpenAI

from airflow_provider_openai_batch.emulator.faults import parse_fault_spec


def _client(emulator, retries):
    return OpenAI(base_url=emulator.base_url, api_key="sk-test", max_retries=retries)


def _create(client, file_id):
    return client.batches.create(
        input_file_id=file_id, endpoint="/v1/chat/completions", completion_window="24h"
    )


def test_429_with_retry_after_is_retried_once(emulator):
    client = _client(emulator, retries=2)
    file_id = upload(client, [request_line("a")])
    emulator.add_fault(method="POST", path="/v1/batches", status=429, retry_after=1, times=1)
    started = time.monotonic()
    batch = _create(client, file_id)
    assert time.monotonic() - started >= 0.9  # the client waited out Retry-After
    calls = emulator.calls("POST", "/v1/batches")
    assert [c["status"] for c in calls] == [429, 200]
    assert client.batches.list().data[0].id == batch.id and len(client.batches.list().data) == 1
    assert emulator.faults() == []  # disarmed after one use


@pytest.mark.parametrize(
    ("status", "error"), [(500, openai.InternalServerError), (503, openai.APIStatusError)]
)
def test_server_errors(emulator, status, error):
    client = _client(emulator, retries=0)
    emulator.add_fault(method="GET", path="/v1/files", status=status)
    with pytest.raises(error) as caught:
        client.files.list()
    assert caught.value.status_code == status
    assert set(caught.value.body) == {"message", "type", "param", "code"}
    assert caught.value.body["type"] == "server_error"
    client.files.list()  # the fault fired once


def test_fault_fires_times_then_disarms(emulator):
    emulator.add_fault(method="*", path="/v1/files*", status=500, times=2)
    http = httpx.Client(base_url=emulator.base_url)
    assert [http.get("/files").status_code for _ in range(3)] == [500, 500, 200]


def test_regex_path_and_unlimited_times(emulator):
    emulator.add_fault(method="GET", path=r"re:/v1/batches/batch_\w+", status=503, times=None)
    http = httpx.Client(base_url=emulator.base_url)
    assert [http.get("/batches/batch_x").status_code for _ in range(3)] == [503] * 3
    assert http.get("/batches").status_code == 200
    emulator.clear_faults()
    assert http.get("/batches/batch_x").status_code == 404


def test_latency(emulator, client):
    emulator.add_fault(method="GET", path="/v1/batches", kind="latency", delay=0.5)
    started = time.monotonic()
    client.batches.list()
    assert time.monotonic() - started >= 0.5
    started = time.monotonic()
    client.batches.list()
    assert time.monotonic() - started < 0.5


def test_hold_creates_at_once_and_answers_after_the_delay(emulator):
    client = _client(emulator, retries=0)
    file_id = upload(client, [request_line("a")])
    emulator.add_fault(method="POST", path="/v1/batches", kind="hold", delay=3)
    impatient = OpenAI(base_url=emulator.base_url, api_key="sk-test", max_retries=0, timeout=1)
    with pytest.raises(openai.APITimeoutError):  # the client gave up while the answer was held
        _create(impatient, file_id)
    # The batch was made before the answer was held, and the journal counts it as paid.
    assert [b.id for b in client.batches.list().data] == emulator.paid_creates()
    assert [(c["status"], c["fault"]) for c in emulator.calls("POST", "/v1/batches")] == [(200, "hold")]
    started = time.monotonic()
    emulator.add_fault(method="POST", path="/v1/batches", kind="hold", delay=0.5)
    batch = _create(client, file_id)
    assert time.monotonic() - started >= 0.5
    assert batch.id == emulator.paid_creates()[-1] and len(emulator.paid_creates()) == 2


def test_drop_is_a_connection_error(emulator):
    client = _client(emulator, retries=0)
    emulator.add_fault(method="GET", path="/v1/batches", kind="drop")
    with pytest.raises(openai.APIConnectionError):
        client.batches.list()
    assert [c["status"] for c in emulator.calls("GET", "/v1/batches")] == [None]


def test_dropped_create_is_retried_by_the_client(emulator):
    client = _client(emulator, retries=1)
    file_id = upload(client, [request_line("a")])
    emulator.add_fault(method="POST", path="/v1/batches", kind="drop")
    _create(client, file_id)
    assert [c["status"] for c in emulator.calls("POST", "/v1/batches")] == [None, 200]


def test_drop_mid_download(emulator):
    client = _client(emulator, retries=0)
    data = to_jsonl([request_line(f"r{i}") for i in range(2000)])
    file_id = client.files.create(file=("in.jsonl", io.BytesIO(data)), purpose="batch").id
    emulator.add_fault(method="GET", path="/v1/files/*/content", kind="drop_mid_body", after_bytes=100_000)
    received = bytearray()
    # openai 3.x streams through httpx2, which reports the short body as a protocol error
    with pytest.raises(httpx2.RemoteProtocolError, match="incomplete|complete message body"):
        with client.files.with_streaming_response.content(file_id) as response:
            assert response.status_code == 200
            for chunk in response.iter_bytes():
                received += chunk
    assert 0 < len(received) <= 100_000 < len(data)
    emulator.add_fault(method="GET", path="/v1/files/*/content", kind="drop_mid_body")
    with pytest.raises(openai.APIConnectionError):
        client.files.content(file_id)  # the non-streaming read fails as a connection error
    # the next download is whole
    with client.files.with_streaming_response.content(file_id) as response:
        assert b"".join(response.iter_bytes()) == data


def test_journal_records_api_calls_only(emulator, client):
    client.files.list(limit=5)
    emulator.config()
    journal = emulator.journal()
    assert [(e["method"], e["path"], e["status"], e["query"]) for e in journal] == [
        ("GET", "/v1/files", 200, {"limit": "5"})
    ]
    assert isinstance(journal[0]["time"], float)


def test_reset_clears_everything_and_restores_settings(emulator, client):
    file_id = upload(client, [request_line("a")])
    _create(client, file_id)
    emulator.add_fault(path="/v1/nothing", status=500)
    before = emulator.config()
    emulator.configure(rate=1, embedding_dim=3, fail_custom_id_regex="x")
    emulator.reset()
    assert emulator.config() == before and emulator.faults() == [] and emulator.journal() == []
    assert client.files.list().data == [] and client.batches.list().data == []


def test_bad_admin_input_is_400(emulator):
    http = httpx.Client(base_url=emulator.root_url)
    assert http.post("/_emulator/faults", json={"path": "/v1/files", "kind": "explode"}).status_code == 400
    assert http.post("/_emulator/faults", json={"kind": "drop"}).status_code == 400
    assert http.post("/_emulator/config", json={"rate": -1}).status_code == 400
    assert http.post("/_emulator/config", json={"fail_custom_id_regex": "("}).status_code == 400
    assert http.post("/_emulator/config", json={"colour": "blue"}).status_code == 400


def test_fail_regex_at_runtime(emulator, client):
    from conftest import results, wait_terminal

    emulator.configure(fail_custom_id_regex="7$", fail_status=503)
    file_id = upload(client, [request_line(f"r{i}") for i in range(10)])
    final, _ = wait_terminal(client, _create(client, file_id).id)
    _, errors = results(client, final)
    assert [(e["custom_id"], e["response"]["status_code"]) for e in errors] == [("r7", 503)]


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        (
            "POST:/v1/batches:429:times=1:retry_after=1",
            {
                "method": "POST",
                "path": "/v1/batches",
                "kind": "status",
                "status": 429,
                "retry_after": 1.0,
                "times": 1,
            },
        ),
        (
            "GET:/v1/files/*/content:drop_mid_body:after_bytes=10",
            {"kind": "drop_mid_body", "after_bytes": 10},
        ),
        ("*:/v1/batches/*:latency:delay=0.5:times=inf", {"method": "*", "delay": 0.5, "times": None}),
        ("post:/v1/files:drop:times=3", {"method": "POST", "kind": "drop", "times": 3}),
    ],
)
def test_fault_spec_syntax(spec, expected):
    fault = parse_fault_spec(spec).to_dict()
    assert {k: fault[k] for k in expected} == expected


@pytest.mark.parametrize(
    "spec", ["POST:/v1/batches", "GET:/x:boom", "GET:/x:500:times=0", "GET:/x:500:color=red"]
)
def test_bad_fault_specs(spec):
    with pytest.raises(ValueError):
        parse_fault_spec(spec)
