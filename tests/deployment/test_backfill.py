"""A backfill of twelve dates on the deployment: every task defers, the twelve tasks run on both Celery workers
and their triggers on both triggerers, and each date pays for its three shards once and lands every custom_id
once on S3. Also proves, from ``/proc``, that every process runs in folders of its own.
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
    worker_attempts,
    write_inputs,
)

pytestmark = pytest.mark.deployment

DATES = [f"2026-01-{day:02d}" for day in range(1, 13)]
DEFER_TIMEOUT = 300
RUN_TIMEOUT = 300


def test_every_process_has_its_own_home_and_tmpdir(cluster: Cluster):
    dirs = cluster.assert_private_dirs()
    assert set(dirs) >= {"scheduler", "dag-processor", "api-server", *WORKERS, *TRIGGERERS}, dirs


def test_a_backfill_of_twelve_dates_spreads_over_both_workers_and_both_triggerers(
    cluster: Cluster, moto_s3, openai_emulator_server
):
    emulator = openai_emulator_server
    # Batches stay validating long enough for all twelve tasks to start and defer on a loaded machine.
    emulator.configure(validating_seconds=75, rate=50)
    write_inputs(moto_s3, DATES)
    started = time.monotonic()
    backfill(cluster, DATES[0], DATES[-1])
    watch = Watch(cluster, DATES)
    held = cluster.wait_until("all twelve tasks deferred", watch.deferred_and_held, DEFER_TIMEOUT)
    deferred_after = time.monotonic() - started
    by_triggerer = {
        name: sorted(d for d, job in held.items() if cluster.triggerer_jobs[job] == name)
        for name in TRIGGERERS
    }
    assert all(by_triggerer.values()), f"Expected triggers on both triggerers but received {by_triggerer}"
    assert all(len(d) <= TRIGGERER_CAPACITY for d in by_triggerer.values()), by_triggerer
    cluster.assert_private_dirs()  # also the task processes running now

    final = cluster.wait_until("the backfill to finish", watch.finished, RUN_TIMEOUT)
    assert final == {d: "success" for d in DATES}, f"{final}\n{watch.states}\n{cluster.diagnostics()}"
    tries = {d: tries for d, (_, tries, _) in watch.poll().items()}
    assert tries == {d: 1 for d in DATES}, f"Expected every task on its first try but received {tries}"
    paid = assert_paid_once_per_shard(emulator, DATES)
    landed = {d: assert_landed_once(moto_s3, d) for d in DATES}
    # Each try ran on one worker (its log is in that worker's own AIRFLOW_HOME), and both workers took some.
    ran_on = {d: worker_attempts(cluster, d) for d in DATES}
    assert all(set(a) == {1} for a in ran_on.values()), ran_on
    workers_used = {f.rsplit("-", 1)[0] for a in ran_on.values() for folders in a.values() for f in folders}
    assert workers_used == set(WORKERS), f"Expected tasks on both workers but received {ran_on}"
    print(
        f"\nbackfill: all {len(DATES)} deferred after {deferred_after:.0f}s, finished after"
        f" {time.monotonic() - started:.0f}s; triggers by triggerer {by_triggerer}; paid creates by date {paid};"
        f" custom_ids landed once {landed}; tries by worker {ran_on}"
    )
