"""What a clear of a successful run leaves for a user: the link and batch ids in XCom again, a log naming the batch
it reused, and an asset event that says it repeats one. Through dag.test() (the UI's "Clear" keeps the run and
its task state store), the emulator and local storage.
"""

from __future__ import annotations

import pytest

from airflow_provider_openai_batch.links.openai_batch import BATCH_IDS_XCOM_KEY, BATCH_URL_XCOM_KEY
from tests.integration.conftest import storage_env
from tests.support.airflow_records import asset_events
from tests.support.assertions import assert_each_custom_id_once, assert_paid
from tests.support.builders import write_input

pytestmark = pytest.mark.integration

DAG_ID, TASK_ID, ASSET = "openai_batch_daily", "run_batch", "openai_batch_daily_results"
LINK_XCOM_KEY = "_link_OpenAIBatchLink"  # where Airflow keeps the link when a try ends


@pytest.mark.parametrize("clear", [True, False], ids=["clear", "another-run-of-the-date"])
def test_a_reland_pushes_its_link_names_the_batch_and_marks_the_asset_event(
    run_dag, openai_conn, tmp_path, monkeypatch, capfd, caplog, clear
):
    date = "2026-11-09" if clear else "2026-11-10"
    storage_env(monkeypatch, base=f"file://{tmp_path}")
    ids = [f"{date}-{i}" for i in range(3)]
    (tmp_path / "requests").mkdir()
    write_input(tmp_path / "requests" / f"{date}.jsonl", ids)
    before = len(asset_events(ASSET))

    first = run_dag(DAG_ID, date)
    assert first.state == "success", first.ti_states()
    (paid,) = assert_paid(openai_conn, 1)
    page = f"{openai_conn.root_url}/batches/{paid}"
    assert first.xcoms[(TASK_ID, LINK_XCOM_KEY)] == page

    capfd.readouterr()
    caplog.clear()
    second = run_dag(DAG_ID, date, clear=clear, run_after=None if clear else f"{date}T06:00:00+00:00")
    log = (
        "".join(capfd.readouterr()) + caplog.text
    )  # the task's own logger prints; module loggers reach caplog
    assert second.state == "success", second.ti_states()
    assert_paid(openai_conn, 1)  # nothing new paid
    assert_each_custom_id_once(tmp_path / "results" / date, ids)

    # XCom was cleared (or this is another run): the ids and the page are pushed again, and the link kept.
    assert second.xcoms[(TASK_ID, BATCH_IDS_XCOM_KEY)] == [paid]
    assert second.xcoms[(TASK_ID, BATCH_URL_XCOM_KEY)] == page
    assert second.xcoms[(TASK_ID, LINK_XCOM_KEY)] == page
    origin = "created by an earlier try" if clear else f"created by DAG run {first.run.run_id!r}"
    assert f"Re-landing batch {paid} ({origin}, completed): nothing new paid" in log

    # Two events for one batch: the second says it repeats, with the batch ids a consumer de-duplicates by.
    events = [e["extra"] for e in asset_events(ASSET)[before:]]
    assert [(e["batch_ids"], e["relanded"]) for e in events] == [([paid], False), ([paid], True)]


def test_a_task_failing_on_its_input_has_no_link_and_pulls_no_xcom(
    run_dag, openai_conn, tmp_path, monkeypatch
):
    date = "2026-11-11"
    storage_env(monkeypatch, base=f"file://{tmp_path}")
    (tmp_path / "requests").mkdir()
    (tmp_path / "requests" / f"{date}.jsonl").write_text("{not json\n")
    pulled: list[str] = []
    from airflow.sdk.execution_time.xcom import XCom

    original = XCom.get_one.__func__  # type: ignore[attr-defined]

    def spy(cls, *, key, **kwargs):
        pulled.append(key)
        return original(cls, key=key, **kwargs)

    monkeypatch.setattr(XCom, "get_one", classmethod(spy))

    outcome = run_dag(DAG_ID, date)

    assert outcome.state == "failed"
    assert_paid(openai_conn, 0)
    assert not [k for k in pulled if k in (BATCH_IDS_XCOM_KEY, BATCH_URL_XCOM_KEY)], pulled
    assert outcome.xcoms.get((TASK_ID, LINK_XCOM_KEY)) in (None, "")
