"""Every test here runs twice: with one big read, and with reads so small that lines span many of them."""

from __future__ import annotations

import pytest

from airflow_provider_openai_batch.requests_input import reading


@pytest.fixture(autouse=True, params=["1MiB-reads", "small-reads"])
def read_size(request, monkeypatch):
    """Run every test with one read of the whole input, and with 300-byte reads: many batches, lines
    spanning reads, shards filling up inside a batch."""
    if request.param == "small-reads":
        monkeypatch.setattr(reading, "CHUNK_SIZE", 300)
