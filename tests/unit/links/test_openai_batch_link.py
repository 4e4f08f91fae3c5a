"""The extra link: a URL that follows the connection, read from XCom, with a fallback for older XComs."""

from __future__ import annotations

import pytest

from airflow_provider_openai_batch.links import openai_batch as link_module
from airflow_provider_openai_batch.links.openai_batch import (
    BATCH_IDS_XCOM_KEY,
    BATCH_URL_XCOM_KEY,
    OpenAIBatchLink,
    batch_dashboard_url,
)


@pytest.mark.parametrize(
    ("kind", "kwargs", "url"),
    [
        ("openai", {}, "https://platform.openai.com/batches/batch_1"),
        ("openai", {"base_url": None}, "https://platform.openai.com/batches/batch_1"),
        ("openai", {"base_url": "https://api.openai.com/v1"}, "https://platform.openai.com/batches/batch_1"),
        (
            "openai",
            {"base_url": "https://us.api.openai.com/v1/"},
            "https://platform.openai.com/batches/batch_1",
        ),
        ("openai", {"base_url": "http://127.0.0.1:8000/v1"}, "http://127.0.0.1:8000/batches/batch_1"),
        (
            "openai",
            {"base_url": "https://gw.example.com/openai/v1"},
            "https://gw.example.com/batches/batch_1",
        ),
        (
            "openai",
            {"base_url": "https://u:secret@gw.example.com/v1"},
            "https://gw.example.com/batches/batch_1",
        ),
        ("openai", {"base_url": "http://notopenai.com/v1"}, "http://notopenai.com/batches/batch_1"),
        ("azure", {"azure_endpoint": "https://r.openai.azure.com"}, "https://oai.azure.com/resource/batch"),
    ],
)
def test_batch_dashboard_url(kind, kwargs, url):
    assert batch_dashboard_url(kind, {"api_key": "sk-x", **kwargs}, "batch_1") == url


def test_batch_id_is_quoted_into_the_path():
    url = batch_dashboard_url("openai", {"base_url": "http://127.0.0.1:8000/v1"}, "a/b?c")
    assert url == "http://127.0.0.1:8000/batches/a%2Fb%3Fc"


def test_an_empty_batch_id_is_refused():
    with pytest.raises(ValueError, match="Expected a non-empty value for `batch_id` but received ''"):
        batch_dashboard_url("openai", {}, "")


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
