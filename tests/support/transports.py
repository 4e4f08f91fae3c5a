"""HTTP transports that break the network in ways the emulator's faults cannot: the server acts, the client
never hears. Real HTTP to the emulator otherwise, installed as the hook's sync HTTP client."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import httpx2
import openai

from airflow_provider_openai_batch.hooks import clients as clients_module


class LoseFirstCreateAnswer(httpx2.HTTPTransport):
    """The answer to the first ``POST /v1/batches`` is lost after the server made (and billed) the batch: a
    timeout or reset on the way back, what a slow or flaky network does to a paid call.

    :param on_lost: called when the answer is dropped, before the client hears of it (e.g. other users create
        batches in the organisation meanwhile).
    """

    def __init__(self, on_lost: Callable[[], Any] | None = None) -> None:
        super().__init__()
        self.on_lost = on_lost
        self.lost: list[str] = []  # the id of the batch whose answer was lost

    def handle_request(self, request: httpx2.Request) -> httpx2.Response:
        response = super().handle_request(request)
        if request.method == "POST" and request.url.path.endswith("/v1/batches") and not self.lost:
            response.read()
            response.close()
            self.lost.append(json.loads(response.content)["id"])
            if self.on_lost is not None:
                self.on_lost()
            raise httpx2.ReadTimeout("emulated: the answer to batches.create was lost", request=request)
        return response

    def install(self, monkeypatch: Any) -> LoseFirstCreateAnswer:
        """Make the hook's sync client send through this transport (for the test's duration)."""
        monkeypatch.setattr(
            clients_module, "_new_sync_http_client", lambda: openai.DefaultHttpxClient(transport=self)
        )
        return self


class GatewayRepeatsCreate(httpx2.HTTPTransport):
    """A gateway in front of the emulator (LiteLLM's proxy does this): our first ``POST /v1/batches`` is sent to
    the backend ``sends`` times, because the backend's answers to all but the last were lost on the way to the
    gateway, so the backend makes ``sends`` batches with identical tags for one call of ours. Every send is real
    HTTP, billed as the emulator's journal shows.

    :param sends: how many times the backend receives the one create (LiteLLM: up to 3).
    :param same_second: send them all early in one wall-clock second, so their ``created_at`` are equal.
    :param answer_after: seconds the last answer takes to reach us (the batches run meanwhile).
    :param answer_lost: the gateway gives up too: we get a 502 instead of the last answer.
    """

    def __init__(
        self, sends: int, *, same_second: bool = False, answer_after: float = 0.0, answer_lost: bool = False
    ) -> None:
        super().__init__()
        self.sends, self.same_second = sends, same_second
        self.answer_after, self.answer_lost = answer_after, answer_lost
        self.made: list[str] = []  # the batches the backend made for our one create, in order

    def handle_request(self, request: httpx2.Request) -> httpx2.Response:
        if request.method != "POST" or not request.url.path.endswith("/v1/batches") or self.made:
            return super().handle_request(request)
        body = request.read()
        if self.same_second:
            time.sleep(1.0 - time.time() % 1.0)  # the start of a second: every send lands within it
        for _ in range(self.sends):
            resend = httpx2.Request(request.method, request.url, headers=request.headers, content=body)
            answer = super().handle_request(resend)
            answer.read()
            self.made.append(json.loads(answer.content)["id"])
        time.sleep(self.answer_after)
        if self.answer_lost:
            return httpx2.Response(
                502, json={"error": {"message": "upstream timed out", "type": "server_error"}}
            )
        headers = {
            k: v for k, v in answer.headers.items() if k.lower() not in ("content-length", "content-encoding")
        }
        return httpx2.Response(answer.status_code, headers=headers, content=answer.content)

    def install(self, monkeypatch: Any) -> GatewayRepeatsCreate:
        """Make the hook's sync client send through this gateway (for the test's duration)."""
        monkeypatch.setattr(
            clients_module, "_new_sync_http_client", lambda: openai.DefaultHttpxClient(transport=self)
        )
        return self
