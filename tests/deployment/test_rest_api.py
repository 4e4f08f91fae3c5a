"""What a person does through the REST API to tasks on the deployment.

- Clearing a finished task: the new try finds the landed results (or lands them again from the same batches)
  and pays nothing.
- Marking a deferred task failed: Airflow deletes its trigger and the triggerer cancels it, which runs the
  trigger's ``on_kill``: that task's three batches are cancelled, and only those: another date's task, deferred
  beside it on the same triggerers, finishes and lands with nothing of its own cancelled.
"""

from __future__ import annotations

import pytest

from tests.deployment.cluster import Cluster
from tests.deployment.conftest import DAG_ID
from tests.deployment.runs import (
    SHARDS,
    TASK_ID,
    Watch,
    assert_landed_once,
    assert_paid_once_per_shard,
    batches_by_date,
    cancels,
    custom_ids,
    paid_by_date,
    trigger,
    write_inputs,
)

pytestmark = pytest.mark.deployment

RUN_TIMEOUT = 300


def test_clearing_a_finished_task_pays_nothing(cluster: Cluster, moto_s3, openai_emulator_server):
    emulator = openai_emulator_server
    date = "2026-06-01"
    emulator.configure(validating_seconds=2, rate=50)
    write_inputs(moto_s3, [date])
    run_id = trigger(cluster, date)
    watch = Watch(cluster, [date])
    assert cluster.wait_until("the run to finish", watch.finished, RUN_TIMEOUT) == {date: "success"}
    assert_paid_once_per_shard(emulator, [date])
    posts_before = len(emulator.calls("POST", "/v1/batches"))

    cluster.api(
        "POST",
        f"/dags/{DAG_ID}/clearTaskInstances",
        json={"dag_run_id": run_id, "task_ids": [TASK_ID], "dry_run": False, "only_failed": False},
    )
    cleared = Watch(cluster, [date])
    cluster.wait_until("the cleared task to run again", lambda: cleared.poll()[date][1] == 2, RUN_TIMEOUT)
    assert cluster.wait_until("the cleared run to finish", cleared.finished, RUN_TIMEOUT) == {date: "success"}
    assert cleared.poll()[date][:2] == ("success", 2), cleared.states
    assert_paid_once_per_shard(emulator, [date])
    assert len(emulator.calls("POST", "/v1/batches")) == posts_before, "the cleared try posted a create"
    landed = assert_landed_once(moto_s3, date)
    print(f"\nclear: paid creates {paid_by_date(emulator, [date])}; {landed} custom_ids landed once")


def test_marking_a_deferred_task_failed_cancels_only_its_own_batches(
    cluster: Cluster, moto_s3, openai_emulator_server
):
    emulator = openai_emulator_server
    marked, other = "2026-06-02", "2026-06-03"
    # Long enough that the batches still run when the cancel comes: on a loaded machine the trigger's on_kill
    # waited 45 s for Airflow to answer its task-state look-up (past Airflow's 30 s on_kill timeout, which it
    # logs; the work runs on, shielded), and 45 s batches had completed by then.
    emulator.configure(validating_seconds=120, rate=50)
    write_inputs(moto_s3, [marked, other])
    run_ids = {date: trigger(cluster, date) for date in (marked, other)}
    watch = Watch(cluster, [marked, other])
    cluster.wait_until("both tasks deferred", watch.deferred_and_held, RUN_TIMEOUT)
    cancelled_before = set(cancels(emulator))

    cluster.api(
        "PATCH",
        f"/dags/{DAG_ID}/dagRuns/{run_ids[marked]}/taskInstances/{TASK_ID}",
        json={"new_state": "failed"},
    )
    by_date = batches_by_date(emulator)
    mine = {b["id"] for b in by_date[marked]}
    assert len(mine) == SHARDS, by_date[marked]

    def marked_batches_cancelled():
        return mine <= set(cancels(emulator))

    cluster.wait_until("the marked task's batches cancelled", marked_batches_cancelled, 110)
    final = cluster.wait_until("both runs to finish", watch.finished, RUN_TIMEOUT)
    assert final == {marked: "failed", other: "success"}, f"{final}\n{watch.states}"
    assert watch.poll()[marked][:2] == ("failed", 1), watch.states
    new_cancels = [c for c in cancels(emulator) if c not in cancelled_before]
    assert sorted(new_cancels) == sorted(mine), (
        f"Expected exactly one cancel for each of {sorted(mine)} but received {new_cancels}"
    )
    statuses = {b["id"]: b["status"] for b in batches_by_date(emulator)[marked]}
    assert set(statuses.values()) <= {"cancelling", "cancelled"}, statuses
    assert paid_by_date(emulator, [marked]) == {marked: SHARDS}
    assert_paid_once_per_shard(emulator, [other])
    landed = assert_landed_once(moto_s3, other)
    print(
        f"\nmark failed: {marked}'s {SHARDS} batches cancelled once each ({statuses}); {other} paid"
        f" {paid_by_date(emulator, [other])} and landed {landed} custom_ids once; {len(custom_ids(marked))} of"
        f" {marked} not landed"
    )
