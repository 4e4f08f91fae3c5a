"""The API key never leaves the connection: not into task or triggerer logs, XCom, serialized triggers, rendered
template fields, or exception text, on the success path and on failing paths.

The connection carries a recognisable key (``TEST_API_KEY``); the example DAGs and failing runs of the
reliability test DAG go through Airflow with real deferral, then every place a key could end up is searched.
Each search is shown to be real first: the key is in the connection we set, and each haystack holds what it
should (log lines, XCom rows, rendered fields, serialized triggers), so an empty search cannot pass by accident.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import openai
import pytest

from airflow_provider_openai_batch.hooks import clients as clients_module
from airflow_provider_openai_batch.hooks.openai_batch import OpenAIBatchHook
from airflow_provider_openai_batch.operators.openai_batch import OpenAIBatchOperator
from airflow_provider_openai_batch.triggers.openai_batch import OpenAIBatchTrigger
from tests.integration.conftest import TEST_API_KEY, storage_env
from tests.support.builders import jsonl, request, write_input
from tests.support.environment import dag_env, openai_connection
from tests.support.journal import faulted

pytestmark = pytest.mark.integration

# Also look for a distinctive piece, in case something prints the key cut short or reformatted.
NEEDLES = (TEST_API_KEY, TEST_API_KEY[8:30])


def assert_no_key(where: str, text: str) -> None:
    for needle in NEEDLES:
        assert needle not in text, f"the API key leaked into {where}"


@pytest.fixture
def captured_triggers(monkeypatch) -> list[tuple[str, dict[str, Any]]]:
    """Every trigger the operator defers to, serialized as the triggerer table would store it."""
    seen: list[tuple[str, dict[str, Any]]] = []
    original = OpenAIBatchOperator.defer

    def defer(self, *args, **kwargs):
        trigger = kwargs.get("trigger") or args[0]
        seen.append(trigger.serialize())
        return original(self, *args, **kwargs)

    monkeypatch.setattr(OpenAIBatchOperator, "defer", defer)
    return seen


def db_rows(runs: list[tuple[str, str]]) -> dict[str, list[str]]:
    """Text of the XCom, rendered-template-field and trigger rows of these (dag_id, run_id) runs."""
    from airflow.models.renderedtifields import RenderedTaskInstanceFields
    from airflow.models.trigger import Trigger
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    found: dict[str, list[str]] = {"xcom": [], "rendered": [], "trigger": []}
    with create_session() as session:
        for dag_id, run_id in runs:
            for x in session.scalars(
                select(XComModel).where(XComModel.dag_id == dag_id, XComModel.run_id == run_id)
            ):
                found["xcom"].append(f"{x.task_id} {x.key} {x.value!r} {XComModel.deserialize_value(x)!r}")
            for r in session.scalars(
                select(RenderedTaskInstanceFields).where(
                    RenderedTaskInstanceFields.dag_id == dag_id, RenderedTaskInstanceFields.run_id == run_id
                )
            ):
                found["rendered"].append(
                    f"{r.task_id} {json.dumps(r.rendered_fields, default=str)} {r.k8s_pod_yaml!r}"
                )
        for t in session.scalars(select(Trigger)):
            found["trigger"].append(f"{t.classpath} {t.encrypted_kwargs!r} {t.kwargs!r}")
    return found


def log_files() -> str:
    logs = Path(os.environ["AIRFLOW_HOME"], "logs")
    if not logs.exists():
        return ""
    return "\n".join(p.read_text(errors="replace") for p in sorted(logs.rglob("*")) if p.is_file())


def test_api_key_reaches_no_log_xcom_trigger_template_or_error(
    run_dag, openai_conn, moto_s3, tmp_path, monkeypatch, capfd, caplog, captured_triggers
):
    # The search is real: the key is in the connection every task and trigger uses.
    assert TEST_API_KEY in os.environ["AIRFLOW_CONN_OPENAI_DEFAULT"]
    clients_module.clear_async_client_cache()
    s3, bucket = moto_s3["client"], moto_s3["bucket"]
    runs: list[tuple[str, str]] = []

    # Success paths: both example DAGs.
    # Under a prefix of its own, so the other suites' listings of the shared bucket do not see it.
    storage_env(monkeypatch, base=f"s3://{moto_s3['conn_id']}@{bucket}/security")
    lines = jsonl(*(request(f"daily-{i}") for i in range(4)))
    s3.put_object(Bucket=bucket, Key="security/requests/2026-11-21.jsonl", Body=lines)
    daily = run_dag("openai_batch_daily", "2026-11-21")
    assert daily.state == "success"
    runs.append(("openai_batch_daily", daily.run.run_id))
    monkeypatch.setenv("AIRFLOW_VAR_OPENAI_BATCH_LOCAL_BASE", str(tmp_path / "local"))
    iterator = run_dag("openai_batch_iterator", "2026-11-21")
    assert iterator.state == "success"
    runs.append(("openai_batch_iterator", iterator.run.run_id))

    # Failing path 1: requests that fail on the emulator with max_failed_ratio=0 (OpenAIBatchRequestsFailed).
    ids = [f"sec-{i}" for i in range(4)]
    write_input(tmp_path / "input.jsonl", ids, {"sec-1": 401, "sec-3": 500})
    dag_env(
        monkeypatch,
        "RELIABILITY",
        input=tmp_path / "input.jsonl",
        output=tmp_path / "out",
        max_failed_ratio=0,
    )
    failed = run_dag("reliability_batch", "2026-11-01")
    assert failed.state == "failed"
    runs.append(("reliability_batch", failed.run.run_id))
    rows_failed_requests = db_rows(runs[-1:])

    # Failing path 2: polling fails until the trigger gives up (OpenAIBatchPollError).
    openai_connection(monkeypatch, openai_conn.base_url, max_retries=0)
    assert TEST_API_KEY in os.environ["AIRFLOW_CONN_OPENAI_DEFAULT"]
    openai_conn.add_fault(method="GET", path="/v1/batches/*", status=500, times=None)
    gave_up = run_dag("reliability_batch", "2026-11-02")
    openai_conn.clear_faults()
    assert gave_up.state == "failed"
    runs.append(("reliability_batch", gave_up.run.run_id))

    out, err = capfd.readouterr()
    logs = out + err + caplog.text + log_files()
    rows = db_rows(runs)

    # Each haystack holds what it should: the searches below look at real content.
    assert "Landed 4 output line(s)" in logs  # task log
    assert "Watching 1 batch(es)" in logs  # triggerer log
    assert "OpenAIBatchRequestsFailed" in logs and "OpenAIBatchPollError" in logs  # failing paths' errors
    assert any(" return_value " in x for x in rows["xcom"])
    assert any("batch_result" in x for x in rows_failed_requests["xcom"])
    assert len(rows["rendered"]) >= len(runs)
    assert any("metadata" in r for r in rows["rendered"])
    assert len(captured_triggers) >= len(runs)
    assert all(path.endswith("OpenAIBatchTrigger") for path, _ in captured_triggers)

    assert_no_key("task and triggerer logs", logs)
    assert_no_key("XCom", "\n".join(rows["xcom"]))
    assert_no_key("rendered template fields", "\n".join(rows["rendered"]))
    assert_no_key("the trigger table", "\n".join(rows["trigger"]))
    assert_no_key("serialized triggers", json.dumps(captured_triggers))
    for _, kwargs in captured_triggers:  # and a trigger rebuilt from them still finds its connection by id
        assert OpenAIBatchTrigger(**kwargs).openai_conn_id == "openai_default"


def test_api_key_reaches_no_exception_text_or_repr(openai_conn, monkeypatch):
    assert TEST_API_KEY in os.environ["AIRFLOW_CONN_OPENAI_DEFAULT"]
    hook = OpenAIBatchHook()
    assert hook.client.api_key == TEST_API_KEY  # the hook really holds the key we search for

    texts = [repr(hook), str(hook)]
    with pytest.raises(openai.NotFoundError) as missing:
        hook.get_batch("batch_does_not_exist")
    texts += [str(missing.value), repr(missing.value), repr(missing.value.body)]

    openai_conn.add_fault(method="GET", path="/v1/batches/*", status=401, times=None)
    with pytest.raises(openai.AuthenticationError) as denied:
        hook.get_batch("batch_any")
    texts += [str(denied.value), repr(denied.value)]

    # A misconfigured connection: the error names what is missing, never the key.
    monkeypatch.setenv(
        "AIRFLOW_CONN_OPENAI_AZURE_BROKEN",
        json.dumps(
            {
                "conn_type": "openai_batch",
                "password": TEST_API_KEY,
                "extra": {"azure_endpoint": "https://example.openai.azure.com"},
            }
        ),
    )
    with pytest.raises(ValueError, match="api_version") as broken:
        _ = OpenAIBatchHook(openai_conn_id="openai_azure_broken").client
    texts += [str(broken.value), repr(broken.value)]

    # The operator's own failure messages (a poll error event, an unknown status, a malformed event).
    operator = OpenAIBatchOperator(task_id="t", input_path="/in.jsonl", output_path="/out")
    for event in (
        {"status": "error", "batch_ids": ["batch_x"], "message": "Polling failed 5 consecutive times"},
        {"status": "nonsense"},
        None,
    ):
        with pytest.raises(Exception) as info:  # noqa: PT011 - several OpenAIBatchError subclasses
            operator.execute_complete({}, event=event)
        texts += [str(info.value), repr(info.value)]

    for text in texts:
        assert_no_key("exception text or repr", text)


def test_a_server_echoing_the_key_leaks_it_nowhere(
    run_dag, openai_conn, tmp_path, monkeypatch, capfd, caplog
):
    """A gateway whose 401 quotes the whole key, on the upload (worker) and on the poll (triggerer)."""
    openai_connection(monkeypatch, openai_conn.base_url, max_retries=0)
    clients_module.clear_async_client_cache()
    echo = f"Incorrect API key provided: {TEST_API_KEY}. You can find your API key at your gateway."
    write_input(tmp_path / "input.jsonl", [f"echo-{i}" for i in range(3)])
    dag_env(monkeypatch, "RELIABILITY", input=tmp_path / "input.jsonl", output=tmp_path / "out")
    runs = []

    openai_conn.add_fault(method="POST", path="/v1/files", status=401, message=echo, times=None)
    on_upload = run_dag("reliability_batch", "2026-11-03")
    openai_conn.clear_faults()
    assert on_upload.state == "failed"
    assert openai_conn.paid_creates() == []
    runs.append(("reliability_batch", on_upload.run.run_id))

    openai_conn.add_fault(method="GET", path="/v1/batches/*", status=401, message=echo, times=None)
    on_poll = run_dag("reliability_batch", "2026-11-04")
    openai_conn.clear_faults()
    assert on_poll.state == "failed"
    runs.append(("reliability_batch", on_poll.run.run_id))

    # The server really sent the key, to the worker and to the triggerer.
    assert faulted(openai_conn, "POST", "/v1/files") and faulted(openai_conn, "GET", "/v1/batches/")
    out, err = capfd.readouterr()
    logs = out + err + caplog.text + log_files()
    rows = db_rows(runs)
    assert "Incorrect API key provided: ***" in logs  # the server's message reached the log, less the key
    assert "AuthenticationError" in logs
    assert any("batch_ids" in x or "openai_batch" in x for x in rows["xcom"])
    assert_no_key("task and triggerer logs", logs)
    assert_no_key("XCom", "\n".join(rows["xcom"]))
