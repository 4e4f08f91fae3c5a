"""HTTP transports that break the network in ways the emulator's faults cannot: the server acts, the client
never hears. Real HTTP to the emulator otherwise, installed as the hook's sync HTTP client."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx2
import openai

from airflow_provider_openai_batch.hooks import openai_batch as hook_module


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
            hook_module, "_new_sync_http_client", lambda: openai.DefaultHttpxClient(transport=self)
        )
        return self
