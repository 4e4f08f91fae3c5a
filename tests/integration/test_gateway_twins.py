"""Issue 21 case 1, the twin rule, through Airflow over real HTTP: a gateway repeats our one create (LiteLLM's
proxy re-sends ``POST /v1/batches`` up to twice when the backend's answer is lost), so the emulator makes several
batches with identical tags. Exactly one counts (the oldest); every live twin is cancelled while it is still
validating, so it is never billed; a twin that already ran is reported as paid twice. Each test counts the paid
creates in the emulator's journal, the billed ones (requests completed), and checks every custom_id lands once.
"""

from __future__ import annotations

import json

import pytest

from airflow_provider_openai_batch.files import MANIFEST
from tests.support.assertions import assert_each_custom_id_once, assert_paid
from tests.support.builders import write_input
from tests.support.environment import connected_emulator, dag_env
from tests.support.journal import api_client
from tests.support.transports import GatewayRepeatsCreate

pytestmark = pytest.mark.integration

DAG_ID, DATE = "reliability_batch", "2026-11-01"


@pytest.fixture
def emulator(openai_emulator, monkeypatch):
    yield from connected_emulator(openai_emulator, monkeypatch, timeout=10)


@pytest.fixture
def job(tmp_path, monkeypatch):
    ids = [f"req-{i}" for i in range(6)]
    source = write_input(tmp_path / "input.jsonl", ids)
    dag_env(monkeypatch, "RELIABILITY", input=source, output=tmp_path / "out")
    return ids, tmp_path / "out" / DATE


def billed(emulator, batch_ids):
    """The batches that ran any request (what OpenAI bills); one cancelled while validating ran none."""
    client = api_client(emulator)
    return [b for b in batch_ids if (client.batches.retrieve(b).request_counts.completed or 0) > 0]


def oldest(emulator, batch_ids):
    client = api_client(emulator)
    return min(batch_ids, key=lambda b: (client.batches.retrieve(b).created_at, b))


@pytest.mark.parametrize(
    "gateway",
    [
        pytest.param(dict(sends=3), id="two-lost-answers"),
        pytest.param(dict(sends=2, same_second=True), id="one-lost-answer-same-second"),
        pytest.param(dict(sends=3, answer_lost=True), id="every-answer-lost"),
    ],
)
def test_a_gateway_repeating_our_create_bills_one_batch(run_dag, emulator, job, monkeypatch, caplog, gateway):
    ids, folder = job
    emulator.configure(validating_seconds=2)  # the twins are cancelled before any request runs
    transport = GatewayRepeatsCreate(**gateway).install(monkeypatch)

    outcome = run_dag(DAG_ID, DATE)

    assert outcome.state == "success", outcome.ti_states()
    paid = assert_paid(emulator, gateway["sends"])
    assert paid == transport.made
    if gateway.get("same_second"):
        client = api_client(emulator)
        assert len({client.batches.retrieve(b).created_at for b in paid}) == 1
    kept = oldest(emulator, paid)
    result = outcome.xcoms[("run_batch", "return_value")]
    assert result["batch_ids"] == [kept] and result["paid_twice"] == []
    for twin in (b for b in paid if b != kept):
        assert len(emulator.calls("POST", f"/v1/batches/{twin}/cancel")) == 1
    assert emulator.calls("POST", f"/v1/batches/{kept}/cancel") == []
    assert billed(emulator, paid) == [kept]
    assert_each_custom_id_once(folder, ids)
    assert "made by a repeated create (gateway retry) of this run" in caplog.text
    assert "moments earlier" not in caplog.text and "PAID TWICE" not in caplog.text


def test_a_gateway_twin_that_already_ran_is_reported_as_paid_twice(
    run_dag, emulator, job, monkeypatch, caplog
):
    ids, folder = job
    # The gateway's answer comes back late: both batches have run (and were billed) when we first see them.
    transport = GatewayRepeatsCreate(2, answer_after=3.0).install(monkeypatch)

    outcome = run_dag(DAG_ID, DATE)

    assert outcome.state == "success", outcome.ti_states()
    paid = assert_paid(emulator, 2)
    assert paid == transport.made
    kept = oldest(emulator, paid)
    (twin,) = [b for b in paid if b != kept]
    result = outcome.xcoms[("run_batch", "return_value")]
    assert result["batch_ids"] == [kept]
    (entry,) = result["paid_twice"]
    assert entry["batch_id"] == twin and entry["counted_batch_id"] == kept and entry["label"] == "0/1"
    assert entry["status"] in ("in_progress", "finalizing", "completed")
    assert entry["made_by"] in ("this try's create", "a repeated create (gateway retry) of this run")
    manifest = json.loads((folder / MANIFEST).read_text())
    assert manifest["paid_twice"] == result["paid_twice"]
    assert sorted(billed(emulator, paid)) == sorted(paid)  # never hidden: both were billed
    assert_each_custom_id_once(folder, ids)  # the results of the one that counts, each request once
    assert f"Batch {twin} (0/1, made by" in caplog.text and "PAID TWICE" in caplog.text
