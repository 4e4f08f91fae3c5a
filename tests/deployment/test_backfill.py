"""A backfill of twelve dates on the deployment, then a triggerer killed under it.

Every task defers; the twelve tasks run on both Celery workers and their triggers on both triggerers (capacity 8
each, so twelve cannot fit on one). While all twelve are deferred and every batch is still running, the triggerer
holding more triggers is SIGKILLed with its process group, as when its node dies: once its heartbeat is
``[triggerer] triggerer_health_check_threshold`` old, the other takes its triggers over (as its capacity frees).
Every task must finish on its first try from the survivor's event, no batch cancelled, each date paying for its
three shards once and landing every custom_id once on S3.

One backfill serves both scenarios, the spread and the kill, to keep ``make test-deploy`` within its budget:
twelve task starts and resumes are most of its time on a 2-core machine. On PostgreSQL a trigger is claimed with
``SELECT ... FOR UPDATE SKIP LOCKED``: unlike the sqlite system test (tests/system/test_two_triggerers.py), both
triggerers run from the start and claim at the same time.

Also proves, from ``/proc``, that every process runs in folders of its own.
"""

from __future__ import annotations

import time

import pytest

from tests.deployment.cluster import TRIGGERER_CAPACITY, TRIGGERERS, WORKERS, Cluster
from tests.deployment.runs import (
    Watch,
    assert_landed_once,
    assert_paid_once_per_shard,
    backfill,
    batches_by_date,
    triggerer_logs,
    worker_attempts,
    write_inputs,
)

pytestmark = pytest.mark.deployment

DATES = [f"2026-01-{day:02d}" for day in range(1, 13)]
# Each batch stays validating this long: twelve task starts on a loaded 2-core machine took 150 s here.
VALIDATING_SECONDS = 180
DEFER_TIMEOUT = 300
RUN_TIMEOUT = 400


def test_every_process_has_its_own_home_and_tmpdir(cluster: Cluster):
    dirs = cluster.assert_private_dirs()
    assert set(dirs) >= {"scheduler", "dag-processor", "api-server", *WORKERS, *TRIGGERERS}, dirs


def test_a_backfill_of_twelve_dates_over_both_workers_and_triggerers_survives_a_triggerer_kill(
    cluster: Cluster, moto_s3, openai_emulator_server
):
    emulator = openai_emulator_server
    emulator.configure(validating_seconds=VALIDATING_SECONDS, rate=50)
    write_inputs(moto_s3, DATES)
    started = time.monotonic()
    backfill(cluster, DATES[0], DATES[-1])
    watch = Watch(cluster, DATES)
    held = cluster.wait_until("all twelve tasks deferred", watch.deferred_and_held, DEFER_TIMEOUT)
    deferred_after = time.monotonic() - started
    load = {
        name: sorted(d for d, job in held.items() if cluster.triggerer_jobs[job] == name)
        for name in TRIGGERERS
    }
    assert all(load.values()), f"Expected triggers on both triggerers but received {load}"
    assert all(len(dates) <= TRIGGERER_CAPACITY for dates in load.values()), load
    by_date = batches_by_date(emulator)
    running = {b["status"] for d in DATES for b in by_date.get(d, [])}
    assert running <= {"validating", "in_progress"}, (
        f"Expected every batch still running but received {running}"
    )
    cluster.assert_private_dirs()  # also the task processes running now

    victim = max(TRIGGERERS, key=lambda name: len(load[name]))
    (survivor,) = set(TRIGGERERS) - {victim}
    victim_folder, survivor_folder = (cluster.processes[n].root.name for n in (victim, survivor))
    cluster.kill(victim)
    killed_after = time.monotonic() - started

    final = cluster.wait_until("every run to finish", watch.finished, RUN_TIMEOUT)
    assert final == {d: "success" for d in DATES}, f"{final}\n{watch.states}\n{cluster.diagnostics()}"
    tries = {d: tries for d, (_, tries, _) in watch.poll().items()}
    assert tries == {d: 1 for d in DATES}, f"Expected every task on its first try but received {tries}"
    paid = assert_paid_once_per_shard(emulator, DATES)
    landed = {d: assert_landed_once(moto_s3, d) for d in DATES}
    # Each try ran on the workers whose own AIRFLOW_HOME holds its log; both workers took some.
    ran_on = {d: worker_attempts(cluster, d) for d in DATES}
    assert all(set(a) == {1} for a in ran_on.values()), ran_on
    workers_used = {f.rsplit("-", 1)[0] for a in ran_on.values() for folders in a.values() for f in folders}
    assert workers_used == set(WORKERS), f"Expected tasks on both workers but received {ran_on}"
    # The survivor fired the moved triggers' events; Airflow cancelled no trigger.
    for date in load[victim]:
        logs = triggerer_logs(cluster, date)
        assert "Trigger fired event" in logs.get(survivor_folder, ""), (
            f"Expected {survivor} to fire {date}'s event after {victim} died; trigger logs in {sorted(logs)}"
        )
        assert "Trigger fired event" not in logs.get(victim_folder, ""), date
    cancelled = [
        d for d in DATES for text in triggerer_logs(cluster, d).values() if "cancelled by user action" in text
    ]
    assert not cancelled, f"Airflow cancelled the triggers of {cancelled}"
    print(
        f"\nbackfill: all {len(DATES)} deferred after {deferred_after:.0f}s; triggers by triggerer {load};"
        f" killed {victim} after {killed_after:.0f}s; all finished after {time.monotonic() - started:.0f}s;"
        f" paid creates by date {paid}; custom_ids landed once {landed}; workers by date and try {ran_on}"
    )
    cluster.start_triggerer(victim)  # back to two triggerers, in a fresh folder
