"""The create's retry policy: openai-python's decisions and delays, and a lost create never billed twice."""

from __future__ import annotations

import email.utils
import json
import time

import httpx2
import openai
import pytest
from openai._constants import MAX_RETRY_AFTER_DELAY

from airflow_provider_openai_batch.hooks import clients as clients_module
from airflow_provider_openai_batch.hooks import create_retry
from airflow_provider_openai_batch.hooks.openai_batch import OpenAIBatchHook
from tests.support.builders import batch

CONN_ID = "openai_retry"


def batch_json(batch_id: str, status: str = "validating") -> dict:
    return batch(batch_id, status, counts=(0, 0, 0))


def status_error(client: openai.OpenAI, status: int, headers: dict[str, str]) -> openai.APIStatusError:
    request = httpx2.Request("POST", "http://openai.test/v1/batches")
    response = httpx2.Response(status, headers=headers, json={"error": {"message": "x"}}, request=request)
    return client._make_status_error_from_response(response)


@pytest.fixture
def client():
    return openai.OpenAI(api_key="sk-test", base_url="http://openai.test/v1", max_retries=2)


@pytest.fixture
def no_jitter(monkeypatch):
    # openai takes 0-25 % off each backoff delay; random() == 0 takes nothing off.
    monkeypatch.setattr("openai._base_client.random", lambda: 0.0)


def http_date(seconds_from_now: float) -> str:
    return email.utils.formatdate(time.time() + seconds_from_now, usegmt=True)


# (status, headers) -> (retry?, delay after the first attempt); delay None where there is no retry.
DECISIONS = [
    (500, {}, True, 0.5),
    (502, {}, True, 0.5),
    (408, {}, True, 0.5),
    (409, {}, True, 0.5),
    (429, {}, True, 0.5),
    (400, {}, False, None),
    (401, {}, False, None),
    (404, {}, False, None),
    (422, {}, False, None),
    (429, {"retry-after": "3"}, True, 3.0),
    (429, {"retry-after": "2.5"}, True, 2.5),
    (503, {"retry-after-ms": "1500"}, True, 1.5),
    (503, {"retry-after-ms": "250", "retry-after": "30"}, True, 0.25),  # milliseconds win
    (429, {"retry-after": "0"}, True, 0.5),  # not a positive delay: backoff
    (429, {"retry-after": "soon"}, True, 0.5),  # neither number nor date: backoff
    (429, {"retry-after": str(MAX_RETRY_AFTER_DELAY)}, True, float(MAX_RETRY_AFTER_DELAY)),
    (429, {"retry-after": str(MAX_RETRY_AFTER_DELAY + 1)}, False, None),  # above openai's cap
    (429, {"retry-after-ms": str((MAX_RETRY_AFTER_DELAY + 1) * 1000)}, False, None),
    (500, {"x-should-retry": "false"}, False, None),
    (400, {"x-should-retry": "true"}, True, 0.5),
]


@pytest.mark.parametrize(("status", "headers", "retry", "delay"), DECISIONS)
def test_decision_and_delay_follow_openai(client, no_jitter, status, headers, retry, delay):
    err = status_error(client, status, headers)
    assert create_retry.should_retry(client, err) is retry
    if delay is not None:
        assert create_retry.retry_delay(client, err, retries_taken=0, max_retries=2) == pytest.approx(delay)


def test_retry_after_as_http_date(client):
    err = status_error(client, 503, {"retry-after": http_date(30)})
    assert create_retry.should_retry(client, err)
    assert create_retry.retry_delay(client, err, retries_taken=0, max_retries=2) == pytest.approx(30, abs=2)


def test_backoff_doubles_up_to_the_cap_with_jitter(client):
    err = openai.APIConnectionError(request=httpx2.Request("POST", "http://openai.test/v1/batches"))
    assert create_retry.should_retry(client, err)
    delays = {
        taken: [create_retry.retry_delay(client, err, retries_taken=taken, max_retries=20) for _ in range(50)]
        for taken in (0, 1, 2, 10)
    }
    for taken, base in ((0, 0.5), (1, 1.0), (2, 2.0), (10, 8.0)):
        assert all(0.75 * base <= d <= base for d in delays[taken]), (taken, delays[taken])
    assert len(set(delays[0])) > 1  # jittered, so retries of many tasks do not arrive together


# -- the loop, over an httpx2 MockTransport --------------------------------------------------------------


class Server:
    """Answers each POST /v1/batches from a script; GET /v1/batches lists what the posts 'made', GET
    /v1/batches/{id} reads one of them."""

    def __init__(self, script: list[tuple[int, dict[str, str], bool]]) -> None:
        # (status, headers, made): ``made`` means the batch was created although the answer is an error.
        self.script = list(script)
        self.posts: list[dict] = []
        self.lists = 0
        self.made: list[dict] = []

    def __call__(self, request: httpx2.Request) -> httpx2.Response:
        if request.method == "POST" and request.url.path == "/v1/batches":
            self.posts.append(json.loads(request.content))
            status, headers, made = self.script.pop(0) if self.script else (200, {}, True)
            batch = batch_json(f"batch_{len(self.posts)}")
            if made:
                self.made.append(batch)
            if status == 0:
                raise httpx2.ReadTimeout("answer lost", request=request)
            if status == 200:
                return httpx2.Response(200, json=batch)
            return httpx2.Response(status, headers=headers, json={"error": {"message": f"HTTP {status}"}})
        if request.method == "GET" and request.url.path == "/v1/batches":
            self.lists += 1
            return httpx2.Response(200, json={"object": "list", "data": self.made[::-1], "has_more": False})
        made = {b["id"]: b for b in self.made}
        if request.method == "GET" and request.url.path.removeprefix("/v1/batches/") in made:
            return httpx2.Response(200, json=made[request.url.path.removeprefix("/v1/batches/")])
        return httpx2.Response(404, json={"error": {"message": "no route"}})


@pytest.fixture
def sleeps(monkeypatch):
    recorded: list[float] = []
    monkeypatch.setattr(create_retry, "_sleep", recorded.append)
    return recorded


def make_hook(monkeypatch, server: Server, max_retries: int = 2) -> OpenAIBatchHook:
    monkeypatch.setenv(
        f"AIRFLOW_CONN_{CONN_ID.upper()}",
        json.dumps(
            {
                "conn_type": "openai_batch",
                "password": "sk-test",
                "host": "http://openai.test/v1",
                "extra": {"max_retries": max_retries},
            }
        ),
    )
    monkeypatch.setattr(
        clients_module, "_new_sync_http_client", lambda: httpx2.Client(transport=httpx2.MockTransport(server))
    )
    return OpenAIBatchHook(CONN_ID)


def find_in_listing(hook: OpenAIBatchHook):
    def find():
        page = hook.list_batches(limit=100).data
        return page[0]["id"] if page else None

    return find


def create(hook, **kwargs):
    return hook.create_batch(input_file_id="file-in", endpoint="/v1/chat/completions", **kwargs)


def test_lost_answer_returns_the_batch_that_was_made_without_posting_again(monkeypatch, sleeps):
    server = Server([(0, {}, True)])  # the create made the batch, its answer timed out
    hook = make_hook(monkeypatch, server)
    batch = create(hook, find_existing=find_in_listing(hook))
    assert batch["id"] == "batch_1"
    assert len(server.posts) == 1 and server.lists == 1
    assert len(sleeps) == 1 and 0.375 <= sleeps[0] <= 0.5


def test_5xx_that_made_nothing_is_posted_again_after_openais_delay(monkeypatch, sleeps):
    server = Server([(503, {"retry-after-ms": "1200"}, False), (500, {}, False)])
    hook = make_hook(monkeypatch, server)
    batch = create(hook, find_existing=find_in_listing(hook))
    assert batch["id"] == "batch_3"
    assert len(server.posts) == 3 and server.lists == 2
    assert sleeps[0] == pytest.approx(1.2) and 0.75 <= sleeps[1] <= 1.0


def test_rate_limit_is_retried_without_searching(monkeypatch, sleeps):
    server = Server([(429, {"retry-after": "2"}, False)])
    hook = make_hook(monkeypatch, server)
    found = []
    batch = create(hook, find_existing=lambda: found.append(1))
    assert batch["id"] == "batch_2" and not found
    assert sleeps == [pytest.approx(2.0)]


def test_attempts_are_the_clients_max_retries_plus_one(monkeypatch, sleeps):
    server = Server([(500, {}, False)] * 10)
    hook = make_hook(monkeypatch, server, max_retries=3)
    with pytest.raises(openai.InternalServerError):
        create(hook, find_existing=find_in_listing(hook))
    assert len(server.posts) == 4
    # The last failure is searched for too: that create may have made it.
    assert server.lists == 4


def test_a_refused_create_is_raised_at_once(monkeypatch, sleeps):
    server = Server([(400, {}, False)])
    hook = make_hook(monkeypatch, server)
    with pytest.raises(openai.BadRequestError):
        create(hook, find_existing=find_in_listing(hook))
    assert len(server.posts) == 1 and server.lists == 0 and not sleeps


def test_retry_after_above_the_cap_is_raised_at_once(monkeypatch, sleeps):
    server = Server([(429, {"retry-after": str(MAX_RETRY_AFTER_DELAY + 60)}, False)])
    hook = make_hook(monkeypatch, server)
    with pytest.raises(openai.RateLimitError):
        create(hook, find_existing=find_in_listing(hook))
    assert len(server.posts) == 1 and not sleeps


def test_a_failed_search_raises_the_creates_error(monkeypatch, sleeps):
    server = Server([(502, {}, True)])
    hook = make_hook(monkeypatch, server)

    def broken_search():
        raise openai.APIConnectionError(request=httpx2.Request("GET", "http://openai.test/v1/batches"))

    with pytest.raises(openai.InternalServerError) as err:
        create(hook, find_existing=broken_search)
    assert isinstance(err.value.__cause__, openai.APIConnectionError)
    assert len(server.posts) == 1  # never posted blind: the first may exist


def test_without_find_existing_the_client_retries_on_its_own(monkeypatch, no_jitter):
    server = Server([(500, {}, True), (500, {}, True)])
    hook = make_hook(monkeypatch, server, max_retries=2)
    monkeypatch.setattr(hook.client, "_sleep_for_retry", lambda **kwargs: None)
    assert create(hook)["id"] == "batch_3"
    assert len(server.posts) == 3 and server.lists == 0
