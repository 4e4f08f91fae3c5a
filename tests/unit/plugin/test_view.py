"""What the pages show for a task, from its records and the API's answers (pure)."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from airflow_provider_openai_batch.plugin.records import BatchTask
from airflow_provider_openai_batch.plugin.view import group_runs, matches_state, task_view

PRICES = {
    "as_of": "2026-01-01",
    "source": "test",
    "batch_discount": 0.5,
    "models": {"m": {"input": 1.0, "output": 2.0}},
}


def _api(batch_id, status="in_progress", completed=3, failed=1, total=10, shard="0/2", **extra):
    return {
        "id": batch_id,
        "status": status,
        "created_at": 1764720000,
        "expires_at": 1764806400,
        "request_counts": {"total": total, "completed": completed, "failed": failed},
        "metadata": {"airflow_shard": shard, "airflow_task": "k", "note": "<x>"},
        "model": "m",
        **extra,
    }


def test_a_deferred_task_shows_each_batch_from_the_api_with_round_progress_and_times():
    task = BatchTask(
        "d",
        "r",
        "t",
        -1,
        state="deferred",
        batch_ids=["b0", "b1", "b2"],
        conn_id="c",
        dashboard_url="https://platform.openai.com/batches/b0",
    )
    api = {
        "b0": _api("b0"),
        "b1": _api(
            "b1", completed=10, failed=0, shard="1/2", usage={"input_tokens": 1_000_000, "output_tokens": 0}
        ),
        "b2": _api("b2", completed=0, failed=0, total=1, shard="r1.0/1"),
    }
    view = task_view(task, api, PRICES)
    assert [(b.batch_id, b.round_no, b.label, b.percent) for b in view.batches] == [
        ("b0", 0, "0/2", 40),
        ("b1", 0, "1/2", 100),
        ("b2", 1, "r1.0/1", 0),
    ]
    # Totals count the input's shards (round 0): 14 of 20 requests done, 1 failed.
    assert (view.done, view.failed, view.total, view.percent) == (14, 1, 20, 70)
    assert (
        view.batches[0].created == "2025-12-03 00:00:00 UTC"
        and view.batches[0].expected_by == "2025-12-04 00:00:00 UTC"
    )
    assert view.batches[0].metadata == {"note": "<x>"}  # the provider's own tags are not repeated
    assert view.batches[1].dashboard_url == "https://platform.openai.com/batches/b1"
    assert view.cost_so_far == pytest.approx(0.5) and view.final_cost is None
    assert (
        view.queue_wait is None and matches_state(view, "in_progress") and not matches_state(view, "success")
    )


def test_a_landed_task_shows_the_result_counts_cost_and_files_without_the_api():
    result = {
        "batch_id": "b0",
        "batch_ids": ["b0"],
        "rounds": [["b0"]],
        "shards": [
            {
                "batch_id": "b0",
                "status": "completed",
                "request_counts": {"total": 5, "completed": 4, "failed": 1},
            }
        ],
        "request_counts": {"total": 5, "completed": 4, "failed": 1},
        "cost": {"total_usd": 0.0123, "note": "an estimate"},
        "output_path": None,
        "error_path": "s3://b/out/errors.jsonl",
        "output_paths": ["s3://b/out/output-00000.jsonl", "s3://b/out/output-00001.jsonl"],
        "error_paths": ["s3://b/out/errors.jsonl"],
        "manifest_path": "s3://b/out/_manifest.json",
    }
    task = BatchTask(
        "d",
        "r",
        "t",
        -1,
        state="success",
        result=result,
        logical_date=datetime(2026, 11, 1, tzinfo=timezone.utc),
    )
    view = task_view(task, {}, PRICES)
    assert [(b.status, b.percent) for b in view.batches] == [("completed", 100)]
    assert (view.done, view.total, view.final_cost, view.cost_note) == (5, 5, 0.0123, "an estimate")
    assert view.landed == [
        ("output_path", "s3://b/out/output-00000.jsonl"),
        ("output_path", "s3://b/out/output-00001.jsonl"),
        ("error_path", "s3://b/out/errors.jsonl"),
        ("manifest_path", "s3://b/out/_manifest.json"),
    ]
    [run] = group_runs([view])
    assert (run.logical_date, run.total, run.cost) == ("2026-11-01 00:00:00 UTC", 5, 0.0123)


def test_waiting_for_queue_is_shown_while_deferred_only():
    wait = {"since": 1764720000, "reason": "2 shard(s) wait for room"}
    deferred = task_view(
        BatchTask("d", "r", "t", -1, state="deferred", batch_ids=["b0"], queue_wait=wait), {}, None
    )
    assert deferred.queue_wait == "waiting for queue since 2025-12-03 00:00:00 UTC: 2 shard(s) wait for room"
    assert matches_state(deferred, "waiting_for_queue")
    done = task_view(
        BatchTask("d", "r", "t", -1, state="success", batch_ids=["b0"], queue_wait=wait), {}, None
    )
    assert done.queue_wait is None and not matches_state(done, "waiting_for_queue")
