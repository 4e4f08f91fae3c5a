"""Connection host paths, the connection test and the dashboard URL, over a mock transport and the emulator."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import httpx2
import openai
import pytest
from airflow.sdk import Connection

from airflow_provider_openai_batch.hooks import clients as clients_module
from airflow_provider_openai_batch.hooks.connection import (
    base_url_from_host,
    batch_dashboard_url,
    client_kwargs_from_connection,
)
from airflow_provider_openai_batch.hooks.connection_test import MISSING_BATCH_ID
from airflow_provider_openai_batch.hooks.openai_batch import OpenAIBatchHook

API_KEY = "sk-test-DO-NOT-LEAK-0123456789"
CONN_ID = "openai_conntest"


def set_conn(monkeypatch, conn_id: str = CONN_ID, **fields) -> None:
    fields.setdefault("conn_type", "openai_batch")
    fields.setdefault("password", API_KEY)
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps(fields))


@pytest.mark.parametrize(
    ("host", "base_url"),
    [
        ("http://127.0.0.1:8000", "http://127.0.0.1:8000/v1"),
        ("http://127.0.0.1:8000/", "http://127.0.0.1:8000/v1"),
        ("api.openai.com", "https://api.openai.com/v1"),
        ("  https://api.openai.com  ", "https://api.openai.com/v1"),
        ("https://api.openai.com/v1", "https://api.openai.com/v1"),
        ("http://127.0.0.1:8000/v1/", "http://127.0.0.1:8000/v1/"),
        ("https://gateway.example.com/openai/v1", "https://gateway.example.com/openai/v1"),
        ("https://gateway.example.com/proxy", "https://gateway.example.com/proxy"),
    ],
)
def test_a_host_without_a_path_gets_v1_and_a_path_is_kept(host, base_url):
    assert base_url_from_host(host) == base_url
    conn = Connection(conn_id="c", conn_type="openai_batch", password=API_KEY, host=host)
    assert client_kwargs_from_connection(conn)[1]["base_url"] == base_url


def test_azure_host_is_the_endpoint_and_gets_no_v1():
    conn = Connection(
        conn_id="c",
        conn_type="openai_batch",
        password=API_KEY,
        host="res.openai.azure.com",
        extra=json.dumps({"api_type": "azure", "api_version": "2024-10-21"}),
    )
    kind, kwargs = client_kwargs_from_connection(conn)
    assert (kind, kwargs["azure_endpoint"]) == ("azure", "https://res.openai.azure.com")


@pytest.mark.parametrize("host", ["ftp://files.example.com", "http://", "https://:443/v1"])
def test_a_host_that_is_not_a_url_is_refused_without_credentials(host):
    with pytest.raises(ValueError, match="Expected the connection host to be a URL"):
        base_url_from_host(host)
    with pytest.raises(ValueError) as err:
        base_url_from_host("ftp://user:secret@files.example.com")
    assert "secret" not in str(err.value)


# -- test_connection over a mock transport -------------------------------------------------------------


def mock_api(monkeypatch, handler) -> list[httpx2.Request]:
    seen: list[httpx2.Request] = []

    def recording(request):
        seen.append(request)
        return handler(request)

    monkeypatch.setattr(
        clients_module,
        "_new_sync_http_client",
        lambda: httpx2.Client(transport=httpx2.MockTransport(recording)),
    )
    return seen


def error(status):
    return lambda request: httpx2.Response(status, json={"error": {"message": f"upstream says {status}"}})


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (401, ["Authentication failed", "HTTP 401", "upstream says 401", "API key"]),
        (403, ["Authentication failed", "HTTP 403"]),
        (404, ["Not found", "http://openai.test/proxy/batches", "lacks `/v1`"]),
        (500, ["HTTP 500", "upstream says 500"]),
    ],
)
def test_connection_test_names_the_cause(monkeypatch, status, expected):
    set_conn(monkeypatch, host="http://openai.test/proxy")
    seen = mock_api(monkeypatch, error(status))
    ok, message = OpenAIBatchHook(CONN_ID).test_connection()
    assert ok is False
    for part in expected:
        assert part in message
    assert API_KEY not in message
    assert len(seen) == 1  # one call, no retries, even for a 500


def fake_api(*, batches: int = 1, cursor=None, missing=None):
    """A server with ``batches`` batches; ``cursor`` / ``missing`` answer the next-page and missing-batch reads."""
    listed = [{**BATCH, "id": f"batch_{i}"} for i in range(batches)]

    def handler(request):
        if request.url.path.endswith(f"/batches/{MISSING_BATCH_ID}"):
            return (missing or error(404))(request)
        if "after" in request.url.params and cursor is not None:
            return cursor(request)
        return httpx2.Response(200, json={"object": "list", "data": listed[:1], "has_more": batches > 1})

    return handler


BATCH = {
    "id": "batch_0",
    "object": "batch",
    "endpoint": "/v1/chat/completions",
    "input_file_id": "file_1",
    "completion_window": "24h",
    "status": "completed",
    "created_at": 1,
}


def test_connection_test_makes_three_cheap_authenticated_reads(monkeypatch):
    set_conn(monkeypatch, host="http://openai.test")
    seen = mock_api(monkeypatch, fake_api())
    ok, message = OpenAIBatchHook(CONN_ID).test_connection()
    assert (ok, message) == (
        True,
        "Connected to http://openai.test/v1/: the API key can list batches, pages with `after=` and a missing "
        "batch answers 404.",
    )
    assert [(r.method, r.url.path, dict(r.url.params)) for r in seen] == [
        ("GET", "/v1/batches", {"limit": "1"}),
        ("GET", "/v1/batches", {"limit": "1", "after": "batch_0"}),
        ("GET", f"/v1/batches/{MISSING_BATCH_ID}", {}),
    ]
    assert all(r.headers["authorization"] == f"Bearer {API_KEY}" for r in seen)


def test_an_empty_account_cannot_show_paging_and_says_nothing_of_it(monkeypatch):
    set_conn(monkeypatch, host="http://openai.test")
    seen = mock_api(monkeypatch, fake_api(batches=0))
    ok, message = OpenAIBatchHook(CONN_ID).test_connection()
    assert ok and "after=" not in message and len(seen) == 2


@pytest.mark.parametrize(
    ("api", "expected"),
    [
        # LiteLLM's model-routed mode re-encodes ids: the cursor it handed out is refused.
        (
            fake_api(cursor=lambda r: httpx2.Response(400, json={"error": {"message": "Invalid cursor"}})),
            ["answered HTTP 400 (Invalid cursor) to the next page (`after=batch_0`)", "honours the `after=`"],
        ),
        # LiteLLM without prisma: a 404 comes back as a plain 500.
        (
            fake_api(missing=error(500)),
            [
                f"/batches/{MISSING_BATCH_ID} answered HTTP 500",
                "expected HTTP 404",
                "hides the server's status",
            ],
        ),
        # LiteLLM without a database, given a key it cannot look up.
        (
            lambda r: httpx2.Response(400, json={"error": {"message": "No connected db."}}),
            ["answered HTTP 400 (No connected db.)", "cannot check this key", "master key"],
        ),
        # A server error on the first, authenticated read.
        (error(500), ["answered HTTP 500 (upstream says 500) to the cheapest authenticated call", "prisma"]),
    ],
    ids=["invalid-cursor", "missing-as-500", "no-connected-db", "list-500"],
)
def test_connection_test_names_what_a_gateway_does_wrong(monkeypatch, api, expected):
    set_conn(monkeypatch, host="http://gateway.test/openai/v1")
    mock_api(monkeypatch, api)
    ok, message = OpenAIBatchHook(CONN_ID).test_connection()
    assert ok is False
    for part in expected:
        assert part in message, message


def test_a_server_echoing_the_key_and_header_secrets_is_scrubbed(monkeypatch):
    gateway_token = "gw-token-0123456789abcdef"
    set_conn(
        monkeypatch,
        host="http://gateway.test",
        extra={"default_headers": {"X-Gateway-Key": gateway_token, "X-Team": "analytics-team"}},
    )
    echo = f"Incorrect API key provided: {API_KEY}; gateway key {gateway_token}; cut {API_KEY[:20]}"
    mock_api(monkeypatch, lambda r: httpx2.Response(401, json={"error": {"message": echo}}))
    hook = OpenAIBatchHook(CONN_ID)
    ok, message = hook.test_connection()
    assert not ok and "Incorrect API key provided: ***; gateway key ***; cut ***" in message
    with pytest.raises(openai.AuthenticationError) as raised:
        hook.get_batch("batch_1")
    texts = [str(raised.value), repr(raised.value), json.dumps(raised.value.body)]
    assert "Incorrect API key provided: ***" in texts[0]
    for text in [message, *texts]:
        assert API_KEY not in text and API_KEY[8:30] not in text and gateway_token not in text


def test_connection_test_reports_a_bad_connection_without_raising(monkeypatch):
    set_conn(monkeypatch, extra={"timeout": "soon"})
    ok, message = OpenAIBatchHook(CONN_ID).test_connection()
    assert ok is False and "timeout" in message and API_KEY not in message


# -- test_connection over real HTTP against the emulator -------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.integration
def test_connection_test_against_the_emulator(monkeypatch, openai_emulator):
    root = openai_emulator.root_url
    set_conn(monkeypatch, host=root)  # no path: /v1 is added
    ok, message = OpenAIBatchHook(CONN_ID).test_connection()
    assert ok and message.startswith(f"Connected to {root}/v1/: the API key can list batches")

    openai_emulator.add_fault(path="/v1/batches", method="GET", status=401)
    ok, message = OpenAIBatchHook(CONN_ID).test_connection()
    assert not ok and message.startswith("Authentication failed") and API_KEY not in message

    set_conn(monkeypatch, host=f"{root}/api")
    ok, message = OpenAIBatchHook(CONN_ID).test_connection()
    assert not ok and message.startswith("Not found") and "lacks `/v1`" in message

    set_conn(monkeypatch, host=f"http://127.0.0.1:{free_port()}")
    ok, message = OpenAIBatchHook(CONN_ID).test_connection()
    assert not ok and message.startswith("Cannot reach http://127.0.0.1:") and "ConnectError" in message


@pytest.mark.integration
def test_connection_test_reads_a_gateways_answers_over_http(monkeypatch, openai_emulator):
    set_conn(monkeypatch, host=openai_emulator.base_url)
    openai_emulator.seed_batches(2)
    ok, message = OpenAIBatchHook(CONN_ID).test_connection()
    assert ok and "pages with `after=` and a missing batch answers 404" in message

    # Model-routed LiteLLM: the cursor it handed out is refused.
    openai_emulator.add_fault(
        method="GET", path="/v1/batches", query="after", status=400, message="Invalid cursor"
    )
    ok, message = OpenAIBatchHook(CONN_ID).test_connection()
    assert not ok and "HTTP 400 (Invalid cursor) to the next page" in message

    # LiteLLM without prisma: a missing batch is a plain 500.
    openai_emulator.add_fault(method="GET", path=f"/v1/batches/{MISSING_BATCH_ID}", status=500)
    ok, message = OpenAIBatchHook(CONN_ID).test_connection()
    assert not ok and "answered HTTP 500" in message and "expected HTTP 404" in message
    assert [c["status"] for c in openai_emulator.calls("GET", "/v1/batches")][-5:] == [
        200,
        400,
        200,
        200,
        500,
    ]


@pytest.mark.integration
def test_airflow_connections_test_cli_against_the_emulator(openai_emulator, tmp_path):
    env = {
        **os.environ,
        "AIRFLOW__CORE__TEST_CONNECTION": "Enabled",
        "AIRFLOW_CONN_OPENAI_CLI": json.dumps(
            {"conn_type": "openai_batch", "password": API_KEY, "host": openai_emulator.root_url}
        ),
    }
    cli = [sys.executable, "-m", "airflow", "connections", "test", "openai_cli"]
    passed = subprocess.run(cli, env=env, capture_output=True, text=True, timeout=120)
    assert passed.returncode == 0, passed.stdout + passed.stderr
    assert "Connection success!" in passed.stdout

    # A gateway whose 401 echoes the whole key.
    echo = f"Incorrect API key provided: {API_KEY}."
    openai_emulator.add_fault(path="/v1/batches", method="GET", status=401, message=echo)
    failed = subprocess.run(cli, env=env, capture_output=True, text=True, timeout=120)
    # The exit status of a failed test is 1 from Airflow 3.3 on; 3.1 and 3.2 print the failure and exit 0.
    assert "Connection failed!" in failed.stdout and "Authentication failed" in failed.stdout
    assert "Incorrect API key provided: ***." in failed.stdout  # the server's words, less the key
    assert openai_emulator.calls("GET", "/v1/batches", status=401)  # the server really answered with the key
    assert API_KEY not in failed.stdout + failed.stderr and API_KEY[8:30] not in failed.stdout + failed.stderr


# -- dashboard URL -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "url"),
    [
        ({}, "https://platform.openai.com/batches/batch_1"),
        ({"host": "https://api.openai.com/v1"}, "https://platform.openai.com/batches/batch_1"),
        ({"host": "http://127.0.0.1:8000"}, "http://127.0.0.1:8000/batches/batch_1"),
        (
            {
                "extra": {
                    "api_type": "azure",
                    "azure_endpoint": "https://r.openai.azure.com",
                    "api_version": "v",
                }
            },
            "https://oai.azure.com/resource/batch",
        ),
        (
            {
                "host": "http://127.0.0.1:8000",
                "extra": {"dashboard_url": "https://ops.example.com/b/{batch_id}"},
            },
            "https://ops.example.com/b/batch_1",
        ),
    ],
)
def test_dashboard_url_follows_the_connection(monkeypatch, fields, url):
    set_conn(monkeypatch, **fields)
    assert OpenAIBatchHook(CONN_ID).dashboard_url("batch_1") == url


def test_a_dashboard_url_template_with_other_placeholders_is_refused(monkeypatch):
    set_conn(monkeypatch, extra={"dashboard_url": "https://ops.example.com/{project}/{batch_id}"})
    with pytest.raises(ValueError, match=r"`\{batch_id\}` as its only placeholder"):
        OpenAIBatchHook(CONN_ID).dashboard_url("batch_1")


@pytest.mark.parametrize(
    ("kind", "kwargs", "url"),
    [
        ("openai", {}, "https://platform.openai.com/batches/batch_1"),
        ("openai", {"host": "https://api.openai.com/v1"}, "https://platform.openai.com/batches/batch_1"),
        ("openai", {"host": "https://us.api.openai.com/v1/"}, "https://platform.openai.com/batches/batch_1"),
        ("openai", {"host": "http://127.0.0.1:8000/v1"}, "http://127.0.0.1:8000/batches/batch_1"),
        ("openai", {"host": "https://gw.example.com/openai/v1"}, "https://gw.example.com/batches/batch_1"),
        ("openai", {"host": "https://u:secret@gw.example.com/v1"}, "https://gw.example.com/batches/batch_1"),
        ("openai", {"host": "http://notopenai.com/v1"}, "http://notopenai.com/batches/batch_1"),
        (
            "openai",
            {"extra": json.dumps({"openai_client_kwargs": {"base_url": "gw.example.com/v1"}})},
            "https://gw.example.com/batches/batch_1",
        ),
        (
            "azure",
            {"extra": json.dumps({"azure_endpoint": "https://r.openai.azure.com", "api_version": "v"})},
            "https://oai.azure.com/resource/batch",
        ),
    ],
)
def test_batch_dashboard_url_from_the_connection_alone(kind, kwargs, url):
    conn = Connection(conn_id="c", conn_type="openai_batch", password=API_KEY, **kwargs)
    assert client_kwargs_from_connection(conn)[0] == kind
    assert batch_dashboard_url(conn, "batch_1") == url


def test_batch_id_is_quoted_into_the_path_and_an_empty_one_refused():
    conn = Connection(conn_id="c", conn_type="openai_batch", host="http://127.0.0.1:8000/v1")
    assert batch_dashboard_url(conn, "a/b?c") == "http://127.0.0.1:8000/batches/a%2Fb%3Fc"
    with pytest.raises(ValueError, match="Expected a non-empty value for `batch_id` but received ''"):
        batch_dashboard_url(conn, "")
