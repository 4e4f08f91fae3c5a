"""The extra link: a URL that follows the connection, held by the operator that worked it out."""

from __future__ import annotations

import pytest

from airflow_provider_openai_batch.links.openai_batch import OpenAIBatchLink, batch_dashboard_url
from airflow_provider_openai_batch.operators.openai_batch import OpenAIBatchOperator


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


def test_link_is_the_page_the_operator_worked_out(monkeypatch):
    # Airflow 3 asks the link when a try ends, with the operator that ran it; the link reads no XCom, so a
    # task that never knew a batch logs no "XCom not found" error.
    monkeypatch.setattr(
        "airflow.sdk.execution_time.xcom.XCom.get_value",
        lambda **kw: pytest.fail(f"the link pulled an XCom: {kw}"),
    )
    operator = OpenAIBatchOperator(task_id="t", input_path="in.jsonl", output_path="out")
    assert OpenAIBatchLink().get_link(operator, ti_key=object()) == ""
    operator.batch_page_url = "http://127.0.0.1:8000/batches/batch_9"
    assert OpenAIBatchLink().get_link(operator, ti_key=object()) == "http://127.0.0.1:8000/batches/batch_9"
