"""Answers never bill more output than the request allows: usage stays within max_tokens and its siblings."""

from __future__ import annotations

import pytest

from airflow_provider_openai_batch.emulator.responses import respond
from tests.emulator.conftest import request_line, results, upload, wait_terminal

ENDPOINTS = {
    "/v1/chat/completions": lambda r: (r["usage"]["completion_tokens"], r["choices"][0]["finish_reason"]),
    "/v1/completions": lambda r: (r["usage"]["completion_tokens"], r["choices"][0]["finish_reason"]),
    "/v1/responses": lambda r: (r["usage"]["output_tokens"], r["status"]),
}
CUT = {"length", "incomplete"}


@pytest.mark.parametrize("endpoint", sorted(ENDPOINTS))
@pytest.mark.parametrize("key", ["max_tokens", "max_completion_tokens", "max_output_tokens"])
def test_output_tokens_never_exceed_the_limit(endpoint, key):
    cut = uncut = 0
    for limit in (1, 2, 3, 5, 8, 13, 40):
        for n in range(30):
            body = {**request_line(f"r-{n}", endpoint)["body"], key: limit}
            result, (_, _, output, _) = respond(endpoint, f"r-{n}", body, created=0, embedding_dim=8)
            reported, finish = ENDPOINTS[endpoint](result)
            assert reported == output <= limit, (limit, result)
            # cut at the limit, as the service does: exactly the limit, and said so
            if finish in CUT:
                cut += 1
                assert output == limit
            else:
                uncut += 1
    assert cut and uncut  # both cases were seen


def test_no_limit_no_cut():
    result, usage = respond(
        "/v1/chat/completions", "r", request_line("r")["body"], created=0, embedding_dim=8
    )
    assert result["choices"][0]["finish_reason"] == "stop" and usage[2] > 5


def test_a_batch_with_max_tokens_reports_no_more_over_http(client):
    lines = [request_line(f"m-{i}", max_tokens=5) for i in range(20)]
    batch = client.batches.create(
        input_file_id=upload(client, lines), endpoint="/v1/chat/completions", completion_window="24h"
    )
    batch, _ = wait_terminal(client, batch.id)
    output, errors = results(client, batch)
    assert len(output) == 20 and not errors
    tokens = [line["response"]["body"]["usage"]["completion_tokens"] for line in output]
    assert max(tokens) <= 5 and 5 in tokens
    assert batch.usage is None or batch.usage.output_tokens <= 5 * 20
