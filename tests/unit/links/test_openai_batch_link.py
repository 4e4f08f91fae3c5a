"""The extra link: the page the operator worked out (tests/unit/hooks/test_connection.py: how it is made)."""

from __future__ import annotations

import pytest

from airflow_provider_openai_batch.links.openai_batch import OpenAIBatchLink
from airflow_provider_openai_batch.operators.openai_batch import OpenAIBatchOperator


def test_link_is_the_page_the_operator_worked_out(monkeypatch):
    # Airflow 3 asks the link when a try ends, with the operator that ran it; the link reads no XCom, so a
    # task that never knew a batch logs no "XCom not found" error.
    monkeypatch.setattr(
        "airflow.sdk.execution_time.xcom.XCom.get_value",
        lambda **kw: pytest.fail(f"the link pulled an XCom: {kw}"),
    )
    operator = OpenAIBatchOperator(task_id="t", input_path="in.jsonl", output_path="out")
    assert OpenAIBatchLink().get_link(operator, ti_key=object()) == ""
    operator.progress.batch_page_url = "http://127.0.0.1:8000/batches/batch_9"
    assert OpenAIBatchLink().get_link(operator, ti_key=object()) == "http://127.0.0.1:8000/batches/batch_9"
