"""A triggerer dies (SIGKILL of its process group) while twelve batch tasks are deferred over both triggerers:
once its heartbeat is ``[triggerer] triggerer_health_check_threshold`` old, the other triggerer takes its
triggers over (as its capacity frees up), every task finishes on its first try from the survivor's event, no
batch is cancelled, each date pays for its three shards once and lands every custom_id once.

On PostgreSQL the claim of a trigger is a ``SELECT ... FOR UPDATE SKIP LOCKED``: unlike the sqlite system test
(tests/system/test_two_triggerers.py), both triggerers run from the start and claim at the same time.
"""

from __future__ import annotations

import time

import pytest

from tests.deployment.cluster import TRIGGERERS, Cluster
from tests.deployment.runs import (
    Watch,
    assert_landed_once,
    assert_paid_once_per_shard,
    backfill,
    batches_by_date,
    triggerer_logs,
    write_inputs,
)

pytestmark = pytest.mark.deployment

DATES = [f"2026-03-{day:02d}" for day in range(1, 13)]
DEFER_TIMEOUT = 300
RUN_TIMEOUT = 300


def test_a_killed_triggerers_triggers_finish_on_the_other(cluster: Cluster, moto_s3, openai_emulator_server):
    emulator = openai_emulator_server
    emulator.configure(validating_seconds=75, rate=50)
    write_inputs(moto_s3, DATES)
    started = time.monotonic()
    backfill(cluster, DATES[0], DATES[-1])
    watch = Watch(cluster, DATES)
    held = cluster.wait_until("all twelve tasks deferred", watch.deferred_and_held, DEFER_TIMEOUT)
    load = {
        name: sorted(d for d, job in held.items() if cluster.triggerer_jobs[job] == name)
        for name in TRIGGERERS
    }
    victim = max(TRIGGERERS, key=lambda name: len(load[name]))
    (survivor,) = set(TRIGGERERS) - {victim}
    by_date = batches_by_date(emulator)
    running = {b["status"] for d in DATES for b in by_date.get(d, [])}
    assert running <= {"validating", "in_progress"}, (
        f"Expected every batch still running but received {running}"
    )
    victim_folder = cluster.processes[victim].root.name
    survivor_folder = cluster.processes[survivor].root.name
    cluster.kill(victim)
    killed_after = time.monotonic() - started

    final = cluster.wait_until("every run to finish", watch.finished, RUN_TIMEOUT)
    assert final == {d: "success" for d in DATES}, f"{final}\n{watch.states}\n{cluster.diagnostics()}"
    tries = {d: tries for d, (_, tries, _) in watch.poll().items()}
    assert tries == {d: 1 for d in DATES}, f"Expected every task on its first try but received {tries}"
    paid = assert_paid_once_per_shard(emulator, DATES)
    landed = {d: assert_landed_once(moto_s3, d) for d in DATES}
    for date in load[victim]:
        logs = triggerer_logs(cluster, date)
        assert "Trigger fired event" in logs.get(survivor_folder, ""), (
            f"Expected {survivor} to fire {date}'s event after {victim} died; trigger logs in {sorted(logs)}"
        )
        assert "Trigger fired event" not in logs.get(victim_folder, ""), date
    cancelled_by_airflow = [
        d for d in DATES for text in triggerer_logs(cluster, d).values() if "cancelled by user action" in text
    ]
    assert not cancelled_by_airflow, f"Airflow cancelled the triggers of {cancelled_by_airflow}"
    print(
        f"\ntriggerer kill: triggers by triggerer {load}; killed {victim} {killed_after:.0f}s after the backfill;"
        f" all finished after {time.monotonic() - started:.0f}s; paid creates by date {paid}; custom_ids landed"
        f" once {landed}"
    )
    cluster.start_triggerer(victim)  # back to two triggerers, in a fresh folder
