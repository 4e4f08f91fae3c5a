"""A triggerer dies mid-wait: its triggers move to the other triggerer, and no batch is paid twice or lost.

Two ``airflow triggerer`` processes beside a scheduler (LocalExecutor), dag-processor and API server on a
fresh AIRFLOW_HOME, against the OpenAI emulator and local file storage (:mod:`tests.system.support`). One
DAG run of twenty deferrable batch tasks (``dags/openai_batch_twenty.py``) defers twenty triggers: the first
triggerer claims as many as its capacity allows, the second the rest. Once every trigger and every batch is
running, the first triggerer is SIGKILLed with its whole process group (no ``on_kill``, no clean shutdown, as
when a node dies). Airflow hands a triggerer's triggers to another only after its heartbeat is older than
``[triggerer] triggerer_health_check_threshold``, set low here so the test stays short. Each task must then
finish on its first try from the survivor's event, with one paid ``POST /v1/batches`` per task, no cancel,
and every ``custom_id`` landed exactly once in its task's ``output.jsonl`` ∪ ``errors.jsonl`` under a
``_manifest.json``. The second test freezes the first triggerer instead (SIGSTOP) and lets it recover after
the hand-over: Airflow 3.3 then cancels the moved triggers as if their tasks were killed (apache/airflow#73454),
and the trigger's ``on_kill`` must see that the task instance is still deferred and cancel nothing.
"""

from __future__ import annotations

import json
import re
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import httpx
import pytest

from airflow_provider_openai_batch.emulator.testing import EmulatorClient
from tests.integration.conftest import TEST_API_KEY
from tests.system.support import (
    STARTUP_TIMEOUT,
    Airflow,
    new_airflow,
    signal_group,
    trigger_run,
    wait_until,
    wait_until_parsed,
)

pytestmark = pytest.mark.system

DAG_FILE = Path(__file__).parent / "dags" / "openai_batch_twenty.py"
DAG_ID = "openai_batch_twenty"
TASKS = 20
REQUESTS_PER_TASK = 3
LOGICAL_DATE = "2026-11-01T00:00:00+00:00"
TRIGGERERS = ("triggerer-a", "triggerer-b")
CAPACITY = 12  # per triggerer: 12 of the 20 triggers on the first, 8 on the second
HEALTH_CHECK_THRESHOLD = 10  # seconds without a heartbeat before a triggerer's triggers are handed over
# Each batch stays in `validating` for this long, then takes REQUESTS_PER_TASK / RATE seconds: long enough
# that every batch is still running when the last task has deferred and the kill comes (twenty task starts on
# a loaded 2-core machine), short enough for the whole test to fit in about three minutes.
VALIDATING_SECONDS = 30.0
RATE = 0.1
DEFER_TIMEOUT = 120  # the run triggered to every trigger claimed and running
RUN_TIMEOUT = 150  # the kill to every task finished
ENV = {
    "AIRFLOW__TRIGGERER__CAPACITY": str(CAPACITY),
    "AIRFLOW__TRIGGERER__TRIGGERER_HEALTH_CHECK_THRESHOLD": str(HEALTH_CHECK_THRESHOLD),
    # A live triggerer heartbeats every second, so a busy machine does not make it look dead at 10 s.
    "AIRFLOW__TRIGGERER__JOB_HEARTBEAT_SEC": "1",
    "AIRFLOW__CORE__PARALLELISM": "6",
}
TASK_IDS = [f"part_{i:02d}" for i in range(TASKS)]
ACTIVE_BATCH = {"validating", "in_progress"}


@pytest.fixture
def two_triggerers(tmp_path: Path, openai_emulator) -> Iterator[Airflow]:
    af, port = new_airflow(tmp_path, openai_emulator.base_url, (DAG_FILE,), ENV)
    try:
        af.start_all(port, triggerers=())  # the test starts them, the second once the first is full
        yield af
    finally:
        af.stop()


def _write_partitions(storage: Path) -> dict[str, list[str]]:
    """One JSONL input per task; the custom_ids of each, by task id."""
    (storage / "requests").mkdir()
    ids: dict[str, list[str]] = {}
    for i, task_id in enumerate(TASK_IDS):
        ids[task_id] = [f"part-{i:02d}-{j}" for j in range(REQUESTS_PER_TASK)]
        lines = (
            {
                "custom_id": cid,
                "method": "POST",
                "url": "/v1/chat/completions",
                "body": {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": f"q {cid}"}]},
            }
            for cid in ids[task_id]
        )
        (storage / "requests" / f"part-{i:02d}.jsonl").write_text(
            "".join(json.dumps(x) + "\n" for x in lines)
        )
    return ids


def _landed_ids(folder: Path) -> list[str]:
    """Every custom_id in ``folder``'s output.jsonl and errors.jsonl, repeats included."""
    found = []
    for name in ("output.jsonl", "errors.jsonl"):
        path = folder / name
        if path.exists():
            found += [json.loads(line)["custom_id"] for line in path.read_text().splitlines() if line.strip()]
    return found


def _trigger_logs(af: Airflow) -> dict[str, dict[int, str]]:
    """Trigger log texts by task id, then by the triggerer job named in ``….trigger.<job>.log``."""
    logs: dict[str, dict[int, str]] = {}
    for path in (af.home / "logs").rglob("*.trigger.*.log") if (af.home / "logs").exists() else []:
        task = re.search(r"task_id=([^/]+)", str(path))
        job = re.search(r"\.trigger\.(\d+)\.log$", path.name)
        if task and job:
            logs.setdefault(task[1], {})[int(job[1])] = path.read_text(errors="replace")
    return logs


def _start_triggerer(af: Airflow, name: str) -> int:
    """Start a triggerer as the component ``name``; the id of the TriggererJob it runs."""
    known = {job for (job,) in af.query("SELECT id FROM job WHERE job_type = 'TriggererJob'")}
    af.start(name, "triggerer", "--skip-serve-logs")

    def new_job():
        rows = af.query("SELECT id FROM job WHERE job_type = 'TriggererJob' AND state = 'running'")
        return [job for (job,) in rows if job not in known]

    (job,) = wait_until(af, f"{name}'s TriggererJob row", new_job, STARTUP_TIMEOUT)
    return job


class Observer:
    """Polls the metadata DB and keeps what a single snapshot could miss: every triggerer seen holding each
    task's trigger (with when it was first seen there), and every state each task instance went through."""

    def __init__(self, af: Airflow, run_id: str) -> None:
        self.af = af
        self.run_id = run_id
        # task id -> triggerer job id -> when first seen holding its trigger (Unix time)
        self.holders: dict[str, dict[int, float]] = {}
        self.states: dict[str, list[str | None]] = {}

    def poll(self) -> dict[str, tuple]:
        """(state, try_number, triggerer job id or None) of each task instance now."""
        rows = self.af.query(
            "SELECT ti.task_id, ti.state, ti.try_number, t.triggerer_id FROM task_instance ti"
            " LEFT JOIN trigger t ON t.id = ti.trigger_id WHERE ti.dag_id = ? AND ti.run_id = ?",
            DAG_ID,
            self.run_id,
        )
        now = time.time()  # the clock Airflow's heartbeats are written with
        for task_id, state, _, job in rows:
            seen = self.states.setdefault(task_id, [])
            if not seen or seen[-1] != state:
                seen.append(state)
            if job is not None:
                self.holders.setdefault(task_id, {}).setdefault(job, now)
        return {task_id: (state, tries, job) for task_id, state, tries, job in rows}

    def gone_wrong(self) -> list[str]:
        return [
            t for t, seen in self.states.items() if seen[-1] in ("failed", "up_for_retry", "upstream_failed")
        ]


def _unix(timestamp: str) -> float:
    """A timestamp as Airflow writes it to sqlite (UTC, with or without an offset), in Unix seconds."""
    parsed = datetime.fromisoformat(timestamp)
    return (parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)).timestamp()


@dataclass
class Spread:
    """Twenty tasks deferred, 12 triggers running on the first triggerer and 8 on the second."""

    af: Airflow
    emulator: EmulatorClient
    run_id: str
    obs: Observer
    expected: dict[str, list[str]]  # custom_ids by task id
    first_job: int
    second_job: int
    load: dict[int, list[str]]  # task ids by the job running their triggers
    batches: Callable[[], dict[str, dict]]  # the emulator's batches by id
    started: float  # time.monotonic() when the set-up began
    timings: dict[str, float]  # seconds after ``started``


def _defer_twenty_over_two(af: Airflow, openai_emulator: EmulatorClient) -> Spread:
    """Start the first triggerer, run the DAG, start the second once the first is full; wait until every task
    is deferred and its trigger running (it has logged its first line on its triggerer)."""
    started = time.monotonic()
    expected = _write_partitions(af.storage)
    openai_emulator.configure(validating_seconds=VALIDATING_SECONDS, rate=RATE)

    def batches() -> dict[str, dict]:
        response = httpx.get(
            f"{openai_emulator.base_url}/batches",
            params={"limit": 100},
            headers={"Authorization": f"Bearer {TEST_API_KEY}"},
            timeout=30,
        )
        return {b["id"]: b for b in response.json()["data"]}

    first, second = TRIGGERERS
    first_job = _start_triggerer(af, first)
    wait_until_parsed(af, DAG_ID)
    timings = {"parsed": time.monotonic() - started}
    run_id = trigger_run(af, DAG_ID, LOGICAL_DATE)
    obs = Observer(af, run_id)

    def claimed_and_watching(count: int) -> dict[str, int] | None:
        tis = obs.poll()
        if wrong := obs.gone_wrong():
            pytest.fail(f"{wrong} went {[obs.states[t] for t in wrong]} before any fault\n{af.diagnostics()}")
        held = {t: job for t, (state, _, job) in tis.items() if state == "deferred" and job is not None}
        if len(held) < count:
            return None
        logs = _trigger_logs(af)
        return (
            held
            if all("Watching 1 batch(es)" in logs.get(t, {}).get(j, "") for t, j in held.items())
            else None
        )

    # The second triggerer starts once the first is full. With sqlite, Airflow's claim (a SELECT, then an
    # UPDATE, no row locks) lets two triggerers that claim at the same instant both start a trigger; the loser
    # then cancels its copy "by user action", which calls on_kill and cancels the batch (seen here: a task
    # failed with its batch cancelled before any fault). Postgres and MySQL claim with FOR UPDATE SKIP LOCKED,
    # and a full triggerer claims nothing, so from here on only one triggerer claims at a time.
    wait_until(af, f"{first} full", lambda: claimed_and_watching(CAPACITY), DEFER_TIMEOUT)
    timings["first full"] = time.monotonic() - started
    second_job = _start_triggerer(af, second)
    held_by = wait_until(af, "all triggers running", lambda: claimed_and_watching(TASKS), DEFER_TIMEOUT)
    timings["all deferred"] = time.monotonic() - started
    load = {job: sorted(t for t, j in held_by.items() if j == job) for job in (first_job, second_job)}
    assert [len(load[first_job]), len(load[second_job])] == [CAPACITY, TASKS - CAPACITY], (
        f"Expected {CAPACITY} triggers on {first} (job {first_job}) and the rest on {second}"
        f" (job {second_job}) but received {load}"
    )
    now = batches()
    timings["oldest batch age"] = time.time() - min(v["created_at"] for v in now.values())
    assert len(now) == TASKS and {v["status"] for v in now.values()} <= ACTIVE_BATCH, (
        f"Expected {TASKS} batches still running but received {now}: a slower emulator (VALIDATING_SECONDS,"
        f" RATE) is needed on this machine"
    )
    return Spread(
        af, openai_emulator, run_id, obs, expected, first_job, second_job, load, batches, started, timings
    )


def _wait_for_the_run(spread: Spread, paid_before: list[str]) -> None:
    """Wait for the run; then every task succeeded on its first try, with one batch each (``paid_before``,
    none cancelled) and each custom_id landed once in its output ∪ errors under a manifest."""
    af, obs = spread.af, spread.obs

    def run_finished():
        obs.poll()
        if wrong := obs.gone_wrong():  # fail now, not after the other tasks
            return f"{wrong} went {[obs.states[t] for t in wrong]}"
        state = af.query("SELECT state FROM dag_run WHERE dag_id = ? AND run_id = ?", DAG_ID, spread.run_id)
        return state[0][0] if state[0][0] in ("success", "failed") else None

    final = wait_until(af, f"run {spread.run_id} to finish", run_finished, RUN_TIMEOUT, interval=0.2)
    spread.timings["run finished"] = time.monotonic() - spread.started
    cancels = [c["path"] for c in spread.emulator.calls("POST", "/v1/batches/batch_")]
    assert final == "success", f"run ended {final}; cancel calls {cancels}\n{af.diagnostics()}"
    # First try: a trigger that moved did not fail its task into a retry.
    tis = obs.poll()
    assert {t: (s, tries) for t, (s, tries, _) in tis.items()} == {t: ("success", 1) for t in TASK_IDS}, (
        obs.states
    )
    paid = spread.emulator.paid_creates()
    assert len(paid) == TASKS and len(set(paid)) == TASKS and paid == paid_before, (paid, paid_before)
    assert not cancels, f"batches cancelled: {cancels}"
    after = {b: v["status"] for b, v in spread.batches().items()}
    assert set(after) == set(paid) and set(after.values()) == {"completed"}, after
    for i, task_id in enumerate(TASK_IDS):
        folder = af.storage / "results" / f"part-{i:02d}"
        assert (folder / "_manifest.json").exists(), f"{folder}/_manifest.json missing"
        landed = _landed_ids(folder)
        assert sorted(landed) == sorted(spread.expected[task_id]), (
            f"Expected each of {spread.expected[task_id]} landed once in {folder}"
            f" but received {sorted(landed)}"
        )


def test_a_killed_triggerers_triggers_finish_on_the_survivor(two_triggerers: Airflow, openai_emulator):
    af = two_triggerers
    spread = _defer_twenty_over_two(af, openai_emulator)
    victim_name, _ = TRIGGERERS
    victim, survivor = spread.first_job, spread.second_job
    paid_before_kill = openai_emulator.paid_creates()

    af.kill(victim_name)
    killed_at = time.time()
    (last_heartbeat,) = af.query("SELECT latest_heartbeat FROM job WHERE id = ?", victim)[0]
    expired_at = _unix(last_heartbeat) + HEALTH_CHECK_THRESHOLD
    _wait_for_the_run(spread, paid_before_kill)

    # The survivor fired every task's event (the victim none: it died before any batch finished), no trigger
    # was cancelled, and each moved trigger was claimed by the survivor only once the victim's heartbeat had
    # expired.
    logs = _trigger_logs(af)
    for task_id in TASK_IDS:
        assert "Trigger fired event" in logs.get(task_id, {}).get(survivor, ""), (
            f"Expected the survivor (job {survivor}) to fire {task_id}'s event; its trigger logs by job:"
            f" {sorted(logs.get(task_id, {}))}\n{af.diagnostics()}"
        )
        assert "Trigger fired event" not in logs.get(task_id, {}).get(victim, ""), task_id
    cancelled = [
        t for t, by_job in logs.items() for text in by_job.values() if "cancelled by user action" in text
    ]
    assert not cancelled, f"Airflow cancelled the triggers of {cancelled} (on_kill ran)\n{af.diagnostics()}"
    moved = spread.load[victim]
    adopted = {t: spread.obs.holders[t].get(survivor) for t in moved}
    early = {t: at for t, at in adopted.items() if at is not None and at < expired_at}
    assert not early, (
        f"Expected {victim_name}'s triggers to move only once its last heartbeat ({last_heartbeat}) was"
        f" {HEALTH_CHECK_THRESHOLD}s old but received {early} (Unix times; expiry at {expired_at:.1f})"
    )
    seen = sorted(round(at - killed_at, 1) for at in adopted.values() if at is not None)
    t = spread.timings
    print(
        f"\nparsed {t['parsed']:.1f}s, first triggerer full {t['first full']:.1f}s, all 20 deferred"
        f" {t['all deferred']:.1f}s (oldest batch {t['oldest batch age']:.0f}s old), run finished"
        f" {t['run finished']:.1f}s after start-up; killed {victim_name} (job {victim}, {len(moved)}"
        " triggers);"
        f" adopted by job {survivor} {seen} s after the kill ({len(seen)} of {len(moved)} seen in the DB)"
    )


def test_a_triggerer_frozen_past_its_heartbeat_cancels_nothing_when_it_recovers(
    two_triggerers: Airflow, openai_emulator
):
    """A triggerer that was only slow (a long GC pause, a stopped container, a partition) loses its triggers
    to the other, then comes back: every task must still finish once, its batch never cancelled."""
    af = two_triggerers
    spread = _defer_twenty_over_two(af, openai_emulator)
    frozen_name, _ = TRIGGERERS
    paid_before = openai_emulator.paid_creates()

    signal_group(af.procs[frozen_name], signal.SIGSTOP)
    try:

        def moved():
            return (
                sum(job == spread.second_job for _, _, job in spread.obs.poll().values()) > TASKS - CAPACITY
            )

        wait_until(af, "the second triggerer to take over some triggers", moved, 60, interval=0.2)
    finally:
        signal_group(af.procs[frozen_name], signal.SIGCONT)
    _wait_for_the_run(spread, paid_before)
