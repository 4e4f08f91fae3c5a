"""Shards are uploaded at once (``[openai_batch] upload_concurrency``), through Airflow against the emulator over
HTTP: the uploads overlap on the wire, and one upload the service refuses fails the try with nothing paid for,
after which the retry uploads only the refused shard and pays for each shard once.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from airflow_provider_openai_batch.emulator.settings import DEFAULT_MAX_FILE_BYTES
from tests.support.assertions import assert_each_custom_id_once, assert_paid
from tests.support.builders import request
from tests.support.environment import has_task_state_store
from tests.support.operator_runs import OUTCOME_DAG, configure_outcome_dag, raised_fixture  # noqa: F401

pytestmark = pytest.mark.integration

DATE = "2026-11-20"
HOLD = 2.0  # seconds the emulator holds the first upload's answer


def write_three_shards(path: Path, *, long_middle: bool = False) -> list[str]:
    """25 requests, 10 a shard under ``max_requests=11``: shards of 10, 10 and 5. With ``long_middle``, the
    middle shard's requests carry 2 KB of text each, so that shard alone is over 10 KB."""
    ids = [f"req-{i}" for i in range(25)]
    long = {f"req-{i}" for i in range(10, 20)} if long_middle else set()
    rows = [request(cid, content="x" * 2048 if cid in long else None) for cid in ids]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return ids


def uploads(emulator) -> list[dict]:
    return [c for c in emulator.calls("POST", "/v1/files") if c["path"] == "/v1/files"]


def test_shards_are_uploaded_at_once(run_dag, openai_conn, tmp_path, monkeypatch):
    source, out = tmp_path / "in.jsonl", tmp_path / "out"
    ids = write_three_shards(source)
    configure_outcome_dag(
        monkeypatch, input_path=str(source), output_path=str(out), limits={"max_requests": 11}
    )
    # The first upload takes effect at once but is answered HOLD seconds later: one upload at a time, the
    # next one would reach the emulator only after that.
    openai_conn.add_fault(method="POST", path="/v1/files", kind="hold", delay=HOLD, times=1)

    outcome = run_dag(OUTCOME_DAG, DATE)

    assert outcome.state == "success", outcome.ti_states()
    arrivals = sorted(c["time"] for c in uploads(openai_conn))
    assert len(arrivals) == 3 and arrivals[-1] - arrivals[0] < HOLD / 2, arrivals
    assert_paid(openai_conn, 3)
    assert_each_custom_id_once(out, ids)


def test_sequential_uploads_with_a_concurrency_of_one(run_dag, openai_conn, tmp_path, monkeypatch):
    """The setting is what makes them overlap: at 1, the held upload delays the next one."""
    source, out = tmp_path / "in.jsonl", tmp_path / "out"
    write_three_shards(source)
    configure_outcome_dag(
        monkeypatch, input_path=str(source), output_path=str(out), limits={"max_requests": 11}
    )
    monkeypatch.setenv("AIRFLOW__OPENAI_BATCH__UPLOAD_CONCURRENCY", "1")
    openai_conn.add_fault(method="POST", path="/v1/files", kind="hold", delay=HOLD, times=1)

    assert run_dag(OUTCOME_DAG, DATE).state == "success"
    arrivals = sorted(c["time"] for c in uploads(openai_conn))
    assert len(arrivals) == 3 and arrivals[1] - arrivals[0] >= HOLD * 0.9, arrivals


@pytest.mark.skipif(
    not has_task_state_store(),
    reason="no task state store before Airflow 3.3: no upload is recorded to reuse",
)
def test_a_refused_upload_pays_nothing_and_the_retry_uploads_only_that_shard(
    run_dag, openai_conn, tmp_path, monkeypatch
):
    source, out = tmp_path / "in.jsonl", tmp_path / "out"
    ids = write_three_shards(source, long_middle=True)
    configure_outcome_dag(
        monkeypatch, input_path=str(source), output_path=str(out), limits={"max_requests": 11}
    )
    # Only the middle shard is over 10 KB: the emulator refuses it (413, not retried), the others pass. Every
    # answer is held a second, so all three uploads are on the wire before the refusal comes back (a refusal
    # stops uploads not yet started, and without the hold the third one sometimes had not started).
    openai_conn.configure(max_file_bytes=10_000)
    openai_conn.add_fault(method="POST", path="/v1/files", kind="hold", delay=1.0, times=3)

    assert run_dag(OUTCOME_DAG, DATE).state == "failed"
    first = uploads(openai_conn)
    assert sorted(c["status"] for c in first) == [200, 200, 413], first
    assert_paid(openai_conn, 0)

    openai_conn.configure(max_file_bytes=DEFAULT_MAX_FILE_BYTES)
    outcome = run_dag(OUTCOME_DAG, DATE, clear=True)

    assert outcome.state == "success", outcome.ti_states()
    retried = uploads(openai_conn)[len(first) :]
    assert [c["status"] for c in retried] == [200], retried  # the two recorded uploads are reused
    batches = assert_paid(openai_conn, 3)
    assert sorted(outcome.xcoms[("run_batch", "return_value")]["batch_ids"]) == sorted(batches)
    assert_each_custom_id_once(out, ids)


def test_a_bad_landing_setting_fails_the_task_before_anything_is_uploaded(
    run_dag, openai_conn, tmp_path, monkeypatch, raised
):
    """Landing settings are read when the task starts: a wrong one must not wait until the batches are paid."""
    source, out = tmp_path / "in.jsonl", tmp_path / "out"
    write_three_shards(source)
    configure_outcome_dag(monkeypatch, input_path=str(source), output_path=str(out))
    monkeypatch.setenv("AIRFLOW__OPENAI_BATCH__LANDING_PART_SIZE_MB", "1")

    assert run_dag(OUTCOME_DAG, DATE).state == "failed"
    assert len(raised) == 1 and "landing_part_size_mb to be at least 5" in str(raised[0])
    assert uploads(openai_conn) == []
    assert_paid(openai_conn, 0)
