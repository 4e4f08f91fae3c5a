"""The extra link: the URL the operator pushed to XCom (tests/unit/hooks/test_connection.py: how it is made)."""

from __future__ import annotations

import pytest

from airflow_provider_openai_batch.links import openai_batch as link_module
from airflow_provider_openai_batch.links.openai_batch import (
    BATCH_IDS_XCOM_KEY,
    BATCH_URL_XCOM_KEY,
    OpenAIBatchLink,
)


@pytest.fixture
def xcoms(monkeypatch):
    store: dict[str, object] = {}
    monkeypatch.setattr(link_module.XCom, "get_value", staticmethod(lambda *, key, ti_key: store.get(key)))
    return store


def test_link_reads_the_url_the_operator_pushed(xcoms):
    xcoms[BATCH_URL_XCOM_KEY] = "http://127.0.0.1:8000/batches/batch_9"
    xcoms[BATCH_IDS_XCOM_KEY] = ["batch_9"]
    assert OpenAIBatchLink().get_link(None, ti_key=object()) == "http://127.0.0.1:8000/batches/batch_9"


def test_no_link_before_a_batch_exists(xcoms):
    assert OpenAIBatchLink().get_link(None, ti_key=object()) == ""
