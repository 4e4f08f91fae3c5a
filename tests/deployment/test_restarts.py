"""The scheduler and the metadata DB go away while batch tasks are deferred.

- The scheduler is restarted (SIGTERM, a new one a few seconds later, as in an upgrade): the deferred tasks
  wait on the triggerers meanwhile, and the new scheduler resumes them as their events arrive.
- PostgreSQL is restarted (a fast shutdown, five seconds down) while the tasks are deferred, then again while one
  task lands its results (the emulator holds its first result download, so the landing is under way during the
  outage). Airflow's scheduler, dag-processor and triggerers exit when they lose the metadata DB (seen here, each
  with ``OperationalError: connection refused``): they count on a process supervisor to start them again, and
  so does this test, which restarts whatever exited (as systemd or Kubernetes would) and reports it. This is
  Airflow's design, not the provider's bug (apache/airflow#16988, #38252: components exit when the DB goes). The API
  server and the Celery workers ride the outage out; a task's calls to the Execution API are retried.

Each date must finish on its first try, pay for its three shards once and land every custom_id once.
"""

from __future__ import annotations

import time

import pytest

from tests.deployment.cluster import Cluster
from tests.deployment.runs import (
    Watch,
    assert_landed_once,
    assert_paid_once_per_shard,
    trigger,
    write_inputs,
)

pytestmark = pytest.mark.deployment

DEFER_TIMEOUT = 300
RUN_TIMEOUT = 300
OUTAGE = 5  # seconds PostgreSQL stays down


def _defer(cluster: Cluster, moto_s3, emulator, dates: list[str], validating: float) -> Watch:
    emulator.configure(validating_seconds=validating, rate=50)
    write_inputs(moto_s3, dates)
    for date in dates:
        trigger(cluster, date)
    watch = Watch(cluster, dates)
    cluster.wait_until(f"{dates} deferred", watch.deferred_and_held, DEFER_TIMEOUT)
    return watch


def _finish(cluster: Cluster, moto_s3, emulator, watch: Watch) -> tuple[dict[str, int], dict[str, int]]:
    final = cluster.wait_until("the runs to finish", watch.finished, RUN_TIMEOUT)
    assert final == {d: "success" for d in watch.dates}, f"{final}\n{watch.states}\n{cluster.diagnostics()}"
    tries = {d: tries for d, (_, tries, _) in watch.poll().items()}
    assert tries == {d: 1 for d in watch.dates}, f"Expected every task on its first try but received {tries}"
    paid = assert_paid_once_per_shard(emulator, watch.dates)
    return paid, {d: assert_landed_once(moto_s3, d) for d in watch.dates}


def test_a_scheduler_restart_while_tasks_are_deferred(cluster: Cluster, moto_s3, openai_emulator_server):
    watch = _defer(cluster, moto_s3, openai_emulator_server, ["2026-04-01", "2026-04-02", "2026-04-03"], 40)
    cluster.terminate("scheduler")
    time.sleep(5)
    cluster.start_scheduler()
    paid, landed = _finish(cluster, moto_s3, openai_emulator_server, watch)
    print(f"\nscheduler restart: paid creates by date {paid}; custom_ids landed once {landed}")


def test_postgres_restarted_while_tasks_are_deferred_and_while_one_lands(
    cluster: Cluster, moto_s3, openai_emulator_server
):
    emulator = openai_emulator_server
    watch = _defer(cluster, moto_s3, emulator, ["2026-05-01", "2026-05-02", "2026-05-03"], 40)
    cluster.postgres.stop()
    time.sleep(OUTAGE)
    cluster.postgres.start()
    restarted = cluster.restart_exited()
    # The first result download of any of them is held 20 s: PostgreSQL goes down again while it lands.
    emulator.add_fault(method="GET", path="/v1/files/*/content", kind="latency", delay=20, times=1)
    seen = len([c for c in emulator.calls("GET", "/v1/files/") if c.get("fault") == "latency"])

    def landing():
        watch.poll()
        return [c for c in emulator.calls("GET", "/v1/files/") if c.get("fault") == "latency"][seen:]

    restarted += _supervised(cluster, "a task landing its results", landing)
    cluster.postgres.stop()
    time.sleep(OUTAGE)
    cluster.postgres.start()
    restarted += _supervised(cluster, "the runs to finish", watch.finished)
    paid, landed = _finish(cluster, moto_s3, emulator, watch)
    restarted += cluster.restart_exited()
    print(
        f"\npostgres restarts: processes that exited and were restarted {restarted}; paid creates by date"
        f" {paid}; custom_ids landed once {landed}"
    )


def _supervised(cluster: Cluster, what: str, predicate) -> list[str]:
    """Wait for ``predicate`` while restarting whatever exits; the names restarted."""
    restarted: list[str] = []
    deadline = time.monotonic() + RUN_TIMEOUT
    while not predicate():
        restarted += cluster.restart_exited()
        assert time.monotonic() < deadline, f"timed out waiting for {what}\n{cluster.diagnostics()}"
        time.sleep(0.5)
    return restarted
