"""What a user sees of a task's life in Airflow: no retries spent on what a retry cannot mend, batches traceable
from the dashboard, and the extra link pointing at the connection's own host. Through dag.test() and the emulator.
"""

from __future__ import annotations

import json

import pytest
from openai import OpenAI

from airflow_provider_openai_batch.lifecycle.tags import (
    TAG_DAG,
    TAG_INPUT,
    TAG_KEY,
    TAG_RUN,
    TAG_SHARD,
    TAG_TASK,
)
from airflow_provider_openai_batch.links.openai_batch import BATCH_URL_XCOM_KEY
from tests.support.assertions import assert_each_custom_id_once, assert_paid
from tests.support.builders import request, write_input

pytestmark = pytest.mark.integration

DAG_ID, DATE = "reliability_batch", "2026-11-01"


@pytest.fixture
def dag_env(openai_conn, tmp_path, monkeypatch):
    def use(source, **env):
        monkeypatch.setenv("RELIABILITY_INPUT", str(source))
        monkeypatch.setenv("RELIABILITY_OUTPUT", str(tmp_path / "out"))
        for name, value in env.items():
            monkeypatch.setenv(f"RELIABILITY_{name.upper()}", str(value))
        return tmp_path / "out" / DATE

    return use


def test_bad_input_fails_at_once_without_spending_retries(run_dag, openai_conn, dag_env, tmp_path, capfd):
    source = tmp_path / "input.jsonl"
    bad = {**request("a"), "url": "/v1/embeddings"}
    source.write_text(json.dumps(request("ok")) + "\n" + json.dumps(bad) + "\n")
    dag_env(source)

    outcome = run_dag(DAG_ID, DATE, retries=3, retry_delay=0.1)

    assert outcome.state == "failed"
    (ti,) = outcome.run.get_task_instances()
    assert ti.try_number == 1  # AirflowFailException: no retry of an input that cannot get better
    out, err = capfd.readouterr()
    assert "line 2" in out + err and "'url'" in out + err
    assert openai_conn.calls("POST", "/v1/files") == []
    assert_paid(openai_conn, 0)


def test_batches_carry_readable_tags_and_the_link_follows_the_connection(
    run_dag, openai_conn, dag_env, tmp_path
):
    ids = [f"t-{i}" for i in range(3)]
    folder = dag_env(write_input(tmp_path / "input.jsonl", ids))

    outcome = run_dag(DAG_ID, DATE)

    assert outcome.state == "success", outcome.ti_states()
    (paid,) = assert_paid(openai_conn, 1)
    meta = OpenAI(base_url=openai_conn.base_url, api_key="sk-test").batches.retrieve(paid).metadata
    assert meta[TAG_DAG] == DAG_ID and meta[TAG_TASK] == "run_batch" and meta[TAG_RUN] == outcome.run.run_id
    assert meta[TAG_SHARD] == "0/1" and len(meta[TAG_KEY]) == 32 and len(meta[TAG_INPUT]) == 32
    assert meta["suite"] == "reliability" and meta["partition"] == DATE  # the user's own metadata too
    url = outcome.xcoms[("run_batch", BATCH_URL_XCOM_KEY)]
    assert url == f"{openai_conn.root_url}/batches/{paid}"
    assert_each_custom_id_once(folder, ids)
