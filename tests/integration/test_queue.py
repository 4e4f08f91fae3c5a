"""The organisation's batch queue (issue 15) on the emulator with an enqueued-token limit, through Airflow.

A shard refused by a full queue is free: it waits for room and is created again from its upload, on the
first try. Each test counts the billed creates (every shard paid once) and lands every custom_id once.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_openai_batch import exceptions as exc
from airflow_provider_openai_batch.cost.estimate import prompt_tokens
from airflow_provider_openai_batch.cost.tokens import token_counter
from airflow_provider_openai_batch.emulator.testing import wait_for
from airflow_provider_openai_batch.operators.openai_batch import OpenAIBatchOperator
from tests.support.assertions import assert_each_custom_id_once, assert_paid
from tests.support.backfill import run_backfill
from tests.support.journal import api_client, batch_ids
from tests.support.operator_runs import (
    OUTCOME_DAG,
    configure_outcome_dag,
    in_background,
    join_checked,
    only_error,
    raised_fixture,  # noqa: F401 - the `raised` fixture
)

pytestmark = pytest.mark.integration

CHAT = "/v1/chat/completions"
MODEL = "gpt-4o-mini"


def request(custom_id: str, size: int = 400) -> dict:
    body = {"model": MODEL, "messages": [{"role": "user", "content": f"{custom_id} " + "x" * size}]}
    return {"custom_id": custom_id, "method": "POST", "url": CHAT, "body": body}


def write(path: Path, requests: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in requests))
    return path


def tokens(requests: list[dict]) -> int:
    count = token_counter(MODEL).count
    return sum(prompt_tokens(r["body"], CHAT, count) for r in requests)


def one_shard_three_times_the_limit(
    emulator: Any, tmp_path: Path, monkeypatch: Any, *, configured: bool
) -> tuple[list[dict], Path]:
    """30 requests, one shard by the per-file limits, about three times the emulator's limit; the limit also
    given to Airflow when ``configured``. Returns the requests and the output folder."""
    requests = [request(f"r{i}") for i in range(30)]
    limit = tokens(requests) // 3 + 50
    emulator.configure(enqueued_token_limits={MODEL: limit}, rate=40)
    if configured:
        monkeypatch.setenv("AIRFLOW__OPENAI_BATCH__ENQUEUED_TOKEN_LIMITS", json.dumps({MODEL: limit}))
    out = tmp_path / "out"
    configure_outcome_dag(
        monkeypatch,
        input_path=str(write(tmp_path / "in.jsonl", requests)),
        output_path=str(out),
        poll_interval=0.3,
    )
    return requests, out


@pytest.mark.parametrize("deferrable", [True, False], ids=["deferred", "in_place"])
def test_five_shards_holding_three_times_the_limit_complete_on_the_first_try(
    run_dag, openai_conn, tmp_path, monkeypatch, raised, deferrable
):
    requests = [request(f"r{i}") for i in range(50)]  # 5 shards of 10
    limit = tokens(requests) // 3
    openai_conn.configure(enqueued_token_limits={MODEL: limit}, rate=40)
    out = tmp_path / "out"
    configure_outcome_dag(
        monkeypatch,
        input_path=str(write(tmp_path / "in.jsonl", requests)),
        output_path=str(out),
        limits={"max_requests": 10, "safety_margin": 1},
        poll_interval=0.3,
        deferrable=deferrable,
    )

    outcome = run_dag(OUTCOME_DAG, "2026-11-10")

    assert outcome.state == "success", (outcome.ti_states(), raised)
    assert raised == []
    assert_paid(openai_conn, 5)  # each shard billed once, whatever the queue refused
    assert openai_conn.free_creates(), "the queue never refused a shard: the test proves nothing"
    assert_each_custom_id_once(out, [r["custom_id"] for r in requests], failed=set())
    refused = [api_client(openai_conn).batches.retrieve(b) for b in openai_conn.free_creates()]
    assert {b.errors.data[0].code for b in refused} == {"token_limit_exceeded"}
    result = outcome.xcoms[("run_batch", "return_value")]
    assert len(result["batch_ids"]) == 5 and set(result["batch_ids"]) == set(openai_conn.paid_creates())


def test_a_configured_limit_cuts_shards_that_fit_and_holds_back_what_cannot_fit(
    run_dag, openai_conn, tmp_path, monkeypatch, raised
):
    requests, out = one_shard_three_times_the_limit(openai_conn, tmp_path, monkeypatch, configured=True)

    outcome = run_dag(OUTCOME_DAG, "2026-11-11")

    assert outcome.state == "success", (outcome.ti_states(), raised)
    paid = assert_paid(openai_conn, len(openai_conn.paid_creates()))
    assert len(paid) >= 3  # split to fit
    assert openai_conn.free_creates() == []  # held back, never refused: the limit was known
    assert_each_custom_id_once(out, [r["custom_id"] for r in requests], failed=set())


def test_a_shard_larger_than_the_limit_is_learned_and_split_after_one_free_failure(
    run_dag, openai_conn, tmp_path, monkeypatch, raised
):
    requests, out = one_shard_three_times_the_limit(openai_conn, tmp_path, monkeypatch, configured=False)

    outcome = run_dag(OUTCOME_DAG, "2026-11-12")

    assert outcome.state == "success", (outcome.ti_states(), raised)
    assert len(openai_conn.free_creates()) == 1  # the whole input once, refused for free; then cut to fit
    assert len(openai_conn.paid_creates()) >= 3
    assert_each_custom_id_once(out, [r["custom_id"] for r in requests], failed=set())


def test_a_single_request_over_the_limit_fails_before_upload(
    run_dag, openai_conn, tmp_path, monkeypatch, raised
):
    requests = [request("small", 40), request("huge", 4000)]
    monkeypatch.setenv("AIRFLOW__OPENAI_BATCH__ENQUEUED_TOKEN_LIMITS", json.dumps({MODEL: 500}))
    configure_outcome_dag(
        monkeypatch, input_path=str(write(tmp_path / "in.jsonl", requests)), output_path=str(tmp_path / "out")
    )

    outcome = run_dag(OUTCOME_DAG, "2026-11-13")

    assert outcome.state == "failed"
    error = only_error(raised, exc.OpenAIBatchInputError)
    assert "line 2" in str(error) and "500 tokens" in str(error) and "body" in str(error)
    assert openai_conn.calls("POST", "/v1/files") == [] and openai_conn.paid_creates() == []


def billed_custom_ids(emulator: Any) -> list[str]:
    """The custom_id of every request in every billed batch's input, as the emulator holds them."""
    client = api_client(emulator)
    ids = []
    for batch_id in emulator.paid_creates():
        content = client.files.content(client.batches.retrieve(batch_id).input_file_id).text
        ids += [json.loads(line)["custom_id"] for line in content.splitlines() if line.strip()]
    return ids


@pytest.mark.parametrize("deferrable", [True, False], ids=["one_triggerer", "in_place"])
def test_a_backfill_of_eight_dates_four_times_over_the_limit_completes_every_date_on_its_first_try(
    openai_conn, tmp_path, deferrable
):
    dates = [f"2026-10-{day:02d}" for day in range(1, 9)]
    ids = {d: [f"{d}-{j}" for j in range(10)] for d in dates}
    for date in dates:
        write(tmp_path / f"{date}.jsonl", [request(cid) for cid in ids[date]])
    per_date = max(tokens([request(cid) for cid in ids[d]]) for d in dates)
    limit = 2 * per_date + 20  # two dates' batches fit, a third does not
    assert per_date < limit and 8 * per_date >= 3.9 * limit  # each under it, together about 4x over
    openai_conn.configure(enqueued_token_limits={MODEL: limit}, rate=10)

    def operator(date: str) -> OpenAIBatchOperator:
        return OpenAIBatchOperator(
            task_id="classify",
            input_path=str(tmp_path / f"{date}.jsonl"),
            output_path=str(tmp_path / "out" / date),
            poll_interval=0.3,
            deferrable=deferrable,
        )

    runs = run_backfill(operator, dates, retries=2, timeout=180)

    assert {d: (r.errors, r.retries_used) for d, r in runs.items()} == {d: ([], 0) for d in dates}
    assert len(openai_conn.free_creates()) >= 2, "the queue never refused a date: the test proves nothing"
    paid = assert_paid(openai_conn, len(dates))  # one billed batch per date; refused creates are free
    billed = billed_custom_ids(openai_conn)
    assert sorted(billed) == sorted(cid for d in dates for cid in ids[d])  # no request billed twice
    for date in dates:
        assert_each_custom_id_once(tmp_path / "out" / date, ids[date], failed=set())
        assert set(runs[date].result["batch_ids"]) <= set(paid)


def outside_batch(emulator: Any, requests: list[dict]) -> str:
    """Someone else's batch of ``requests`` on the same model (it holds the queue while it runs)."""
    client = api_client(emulator)
    upload = client.files.create(
        file=("outside.jsonl", "".join(json.dumps(r) + "\n" for r in requests).encode()), purpose="batch"
    )
    return client.batches.create(input_file_id=upload.id, endpoint=CHAT, completion_window="24h").id


def test_a_follow_up_round_refused_by_a_full_queue_waits_for_room_instead_of_failing(
    run_dag, openai_conn, tmp_path, monkeypatch, raised
):
    # Round 0 runs with two requests failing (500, retryable) and no queue limit. Once it exists, the
    # organisation's queue gets a limit and someone else's batch fills it so that the follow-up round of the
    # two requests does not fit: refused (free), it must wait until that batch leaves, then run.
    requests = [request(f"f{i}") for i in range(10)]
    retried = [r for r in requests if r["custom_id"] in ("f1", "f3")]
    others = [request(f"other-{i}") for i in range(24)]
    limit = tokens(others) + tokens(retried) - 1
    # Round 0 runs 5 s, the outside batch 12 s from soon after: it still holds the queue when the follow-up
    # round is created, on a loaded machine too.
    openai_conn.configure(rate=2, fail_custom_id_regex=r"^f(1|3)$", fail_status=500)
    out = tmp_path / "out"
    configure_outcome_dag(
        monkeypatch,
        input_path=str(write(tmp_path / "in.jsonl", requests)),
        output_path=str(out),
        resubmit_failed=1,
        poll_interval=0.3,
    )
    outside: list[str] = []

    def fill_the_queue_while_round_0_runs():
        wait_for(lambda: batch_ids(openai_conn), timeout=180)
        openai_conn.configure(fail_custom_id_regex=None, enqueued_token_limits={MODEL: limit}, rate=2)
        outside.append(outside_batch(openai_conn, others))  # about 12 s, longer than the rest of round 0
        openai_conn.configure(rate=20)

    thread = in_background(fill_the_queue_while_round_0_runs)
    outcome = run_dag(OUTCOME_DAG, "2026-11-14")
    join_checked(thread)

    assert outcome.state == "success", (outcome.ti_states(), raised)
    assert raised == []
    refused = openai_conn.free_creates()
    assert len(refused) >= 1, "the follow-up round was never refused: the test proves nothing"
    client = api_client(openai_conn)
    assert {client.batches.retrieve(b).errors.data[0].code for b in refused} == {"token_limit_exceeded"}
    result = outcome.xcoms[("run_batch", "batch_result")]
    round0, round1 = result["rounds"]
    assert len(round0) == 1 and len(round1) == 1
    assert set(openai_conn.paid_creates()) == {*round0, *round1, *outside}  # each billed once
    # The follow-up was created again from the upload the refused batch had, after the outside batch left.
    follow_up = client.batches.retrieve(round1[0])
    assert {client.batches.retrieve(b).input_file_id for b in refused} == {follow_up.input_file_id}
    assert follow_up.created_at >= client.batches.retrieve(outside[0]).completed_at
    assert_each_custom_id_once(out, [r["custom_id"] for r in requests], failed=set())


def test_a_limit_learned_in_one_try_cuts_the_shards_of_the_next_try_before_any_create(
    run_dag, openai_conn, tmp_path, monkeypatch, raised
):
    # Try 1 learns the limit from the free refusal of its one shard (three times the limit), cuts the input
    # under it, and then fails on a refused create (HTTP 400). The retry must cut under the learned limit at
    # once: the uncut input is never created again.
    requests, out = one_shard_three_times_the_limit(openai_conn, tmp_path, monkeypatch, configured=False)

    def fail_the_next_create_once_the_limit_is_learned():
        wait_for(openai_conn.free_creates, timeout=180)
        openai_conn.add_fault(method="POST", path="/v1/batches", status=400, times=1)

    thread = in_background(fail_the_next_create_once_the_limit_is_learned)
    outcome = run_dag(OUTCOME_DAG, "2026-11-15", retries=1, retry_delay=1)
    join_checked(thread)

    assert outcome.state == "success", (outcome.ti_states(), raised)
    assert len(raised) == 1 and "400" in str(raised[0])  # try 1 failed; try 2 succeeded
    client = api_client(openai_conn)

    def lines(batch_id: str) -> int:
        return len(client.files.content(client.batches.retrieve(batch_id).input_file_id).text.splitlines())

    assert [lines(b) for b in openai_conn.free_creates()] == [len(requests)]  # only try 1 created it uncut
    paid = openai_conn.paid_creates()
    assert len(paid) >= 3 and all(lines(b) < len(requests) for b in paid)
    assert_each_custom_id_once(out, [r["custom_id"] for r in requests], failed=set())
