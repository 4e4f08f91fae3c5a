"""The example DAG under real Airflow processes: scheduler (LocalExecutor), triggerer, dag-processor and API server
started as separate subprocesses on a fresh AIRFLOW_HOME, against the OpenAI emulator and local file storage.

Proves what the in-process tests (``dag.test()``, which runs triggers inline) cannot: the operator really defers,
its trigger is serialized into the metadata DB and run by a separate triggerer process, and the task resumes on a
worker afterwards. The API key is shown to be in the environment given to every process, then searched for in
the serialized trigger rows (decrypted where Airflow encrypted them), the whole metadata DB file, the task and
trigger log files and every component's captured output.

The components get their own environment built from scratch: the pytest process's AIRFLOW_* settings (set by
``tests/conftest.py`` for the in-process tests) are dropped, never inherited.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.integration.conftest import TEST_API_KEY
from tests.system.support import (
    REPO,
    Airflow,
    new_airflow,
    task_instance,
    trigger_run,
    wait_until,
    wait_until_parsed,
)

pytestmark = pytest.mark.system

DAG_ID = "openai_batch_daily"
TASK_ID = "run_batch"
DATE = "2026-11-01"
LOGICAL_DATE = f"{DATE}T00:00:00+00:00"
TRIGGER_CLASSPATH = "airflow_provider_openai_batch.triggers.openai_batch.OpenAIBatchTrigger"
COMPONENTS = ("scheduler", "triggerer", "dag-processor", "api-server")
NEEDLES = (TEST_API_KEY, TEST_API_KEY[8:30])  # the key, and a distinctive piece of it

RUN_TIMEOUT = 180  # the triggered run finished
VALIDATING_SECONDS = 12  # how long the emulator keeps the batch in `validating`: see the test
STALE_EVENT_RACE = "finished with state success, but the task instance's state attribute is running"


@pytest.fixture
def extra_dags() -> tuple[Path, ...]:
    """DAG files copied into the components' dags folder next to the example; a test parametrizes it."""
    return ()


@pytest.fixture
def airflow_components(tmp_path: Path, openai_emulator, extra_dags: tuple[Path, ...]) -> Iterator[Airflow]:
    example = REPO / "example_dags" / "openai_batch_daily.py"
    af, port = new_airflow(tmp_path, openai_emulator.base_url, (example, *extra_dags))
    try:
        af.start_all(port)
        yield af
    finally:
        af.stop()


def _write_partition(storage: Path, n: int = 5) -> list[str]:
    ids = [f"{DATE}-{i}" for i in range(n)]
    (storage / "requests").mkdir()
    (storage / "requests" / f"{DATE}.jsonl").write_text(
        "".join(
            json.dumps(
                {
                    "custom_id": cid,
                    "method": "POST",
                    "url": "/v1/chat/completions",
                    "body": {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": f"q {cid}"}]},
                }
            )
            + "\n"
            for cid in ids
        )
    )
    return ids


def _assert_no_key(where: str, text: str) -> None:
    for needle in NEEDLES:
        assert needle not in text, f"the API key leaked into {where}"


def test_example_dag_defers_through_a_real_triggerer(airflow_components: Airflow, openai_emulator):
    af = airflow_components
    started = time.monotonic()
    expected_ids = _write_partition(af.storage)
    # The batch stays in `validating` for a while, so the deferred state and the trigger row live long enough to
    # be seen by polling the DB (the row is deleted once the task resumes), and so the trigger does not fire before
    # the scheduler has drained the executor's "success" event for the worker that exited on defer(): Airflow
    # 3.3.2 fails a resumed attempt that is already running when that stale event arrives (apache/airflow#72716,
    # #71580; open fixes #72767, #71579). Seen here with a 3 s batch on a loaded 2-core machine.
    openai_emulator.configure(validating_seconds=VALIDATING_SECONDS)

    wait_until_parsed(af, DAG_ID)
    parsed_after = time.monotonic() - started
    run_id = trigger_run(af, DAG_ID, LOGICAL_DATE)
    triggered_after = time.monotonic() - started

    ti_states_seen: list[str | None] = []
    triggers_seen: dict[int, tuple[str, str]] = {}  # id -> (classpath, kwargs column as stored)
    triggerer_ids: dict[int, set[int]] = {}  # trigger id -> the triggerer job ids seen running it
    trigger_ids_on_ti: set[int] = set()

    def run_finished():
        for trig_id, classpath, kwargs, job_id in af.query(
            "SELECT id, classpath, kwargs, triggerer_id FROM trigger"
        ):
            triggers_seen[trig_id] = (classpath, kwargs)
            if job_id is not None:
                triggerer_ids.setdefault(trig_id, set()).add(job_id)
        ti = af.query(
            "SELECT state, trigger_id FROM task_instance WHERE dag_id = ? AND run_id = ? AND task_id = ?",
            DAG_ID,
            run_id,
            TASK_ID,
        )
        if ti:
            state, trigger_id = ti[0]
            if not ti_states_seen or ti_states_seen[-1] != state:
                ti_states_seen.append(state)
            if trigger_id is not None:
                trigger_ids_on_ti.add(trigger_id)
        if ti_states_seen and ti_states_seen[-1] in ("up_for_retry", "failed"):
            return f"run_batch {ti_states_seen[-1]}"  # fail now, not after a 5-minute retry delay
        state = af.query("SELECT state FROM dag_run WHERE dag_id = ? AND run_id = ?", DAG_ID, run_id)[0][0]
        return state if state in ("success", "failed") else None

    final = wait_until(af, f"run {run_id} to finish", run_finished, RUN_TIMEOUT, interval=0.2)
    run_seconds = time.monotonic() - started
    ti_states = dict(
        af.query("SELECT task_id, state FROM task_instance WHERE dag_id = ? AND run_id = ?", DAG_ID, run_id)
    )
    if final != "success":
        scheduler_out = (af.out_dir / "scheduler.log").read_text(errors="replace")
        race = STALE_EVENT_RACE in scheduler_out and "deferred" in ti_states_seen
        hint = " (the Airflow stale-executor-event race, apache/airflow#72716)" if race else ""
        pytest.fail(
            f"run {run_id} ended {final}{hint}: {ti_states}, run_batch went {ti_states_seen}\n{af.diagnostics()}"
        )
    assert ti_states == {"run_batch": "success", "summarise": "success"}, ti_states

    # Real deferral: the task instance was seen deferred, pointing at a trigger row of our class; the row was
    # claimed by the triggerer process's job, which wrote the trigger's log; the task resumed on a worker.
    assert "deferred" in ti_states_seen, f"run_batch never seen deferred; states seen: {ti_states_seen}"
    ours = {tid: row for tid, row in triggers_seen.items() if row[0] == TRIGGER_CLASSPATH}
    assert len(ours) == 1, f"expected one {TRIGGER_CLASSPATH} row in the trigger table: {triggers_seen}"
    (trigger_id,) = ours
    assert trigger_ids_on_ti == {trigger_id}, (trigger_ids_on_ti, trigger_id)
    assert ti_states_seen[-1] == "success" and ti_states_seen.index("deferred") < len(ti_states_seen) - 1
    assert len(triggerer_ids.get(trigger_id, ())) == 1, (
        f"trigger claimed by {triggerer_ids} (polling missed it?)"
    )
    (job_id,) = triggerer_ids[trigger_id]
    jobs = af.query("SELECT job_type FROM job WHERE id = ?", job_id)
    assert jobs == [("TriggererJob",)], f"trigger {trigger_id} was claimed by job {job_id}: {jobs}"
    tries = af.query(
        "SELECT try_number FROM task_instance WHERE dag_id = ? AND run_id = ? AND task_id = ?",
        DAG_ID,
        run_id,
        TASK_ID,
    )
    assert tries == [(1,)], f"run_batch should succeed on its first try (a deferral is not a retry): {tries}"
    task_logs = {p: p.read_text(errors="replace") for p in (af.home / "logs").rglob("*") if p.is_file()}
    run_batch_logs = "\n".join(t for p, t in task_logs.items() if f"task_id={TASK_ID}" in str(p))
    assert "Pausing task as DEFERRED" in run_batch_logs, f"no deferral in run_batch's log\n{af.diagnostics()}"
    trigger_logs = "\n".join(
        t for p, t in task_logs.items() if f"task_id={TASK_ID}" in str(p) and ".trigger." in p.name
    )
    for expected in (f"(ID {trigger_id}) starting", "Watching 1 batch(es)", "Trigger fired event"):
        assert expected in trigger_logs, (
            f"{expected!r} not in the triggerer's log for run_batch\n{af.diagnostics()}"
        )

    # Results landed, one line per request, from exactly one paid submission.
    out = af.storage / "results" / DATE / "output.jsonl"
    assert out.exists(), f"{out} missing; storage holds {sorted(map(str, af.storage.rglob('*')))}"
    lines = [json.loads(line) for line in out.read_text().splitlines() if line.strip()]
    assert sorted(line["custom_id"] for line in lines) == sorted(expected_ids)
    submissions = openai_emulator.calls("POST", "/v1/batches")
    assert len(submissions) == 1, submissions

    # The outlet's asset event carries the result summary, from which a downstream DAG reads the results.
    events = af.query(
        "SELECT e.extra FROM asset_event e JOIN asset a ON a.id = e.asset_id"
        " WHERE a.name = 'openai_batch_daily_results' AND e.source_run_id = ?",
        run_id,
    )
    assert len(events) == 1, events
    extra = json.loads(events[0][0])
    assert extra["batch_ids"] == [submissions[0]["id"]] and extra["status"] == "completed", extra
    from airflow_provider_openai_batch import read_results

    assert sorted(r["custom_id"] for r in read_results(extra)) == sorted(expected_ids)

    # The key never reached the serialized trigger, the DB, the logs or any process output. Each search is real:
    # the key is in the environment every process got, and each haystack holds what it should.
    assert TEST_API_KEY in af.env["AIRFLOW_CONN_OPENAI_DEFAULT"]
    from cryptography.fernet import Fernet

    fernet = Fernet(af.fernet_key.encode())
    for trig_id, (_, stored) in ours.items():
        _assert_no_key(f"trigger {trig_id}'s stored kwargs", stored)
        # As Airflow's Trigger._decrypt_kwargs reads it. A deferral through the Execution API (Airflow 3.3,
        # task-sdk 1.3) stores the kwargs as plain JSON even with a Fernet key set: the row is only safe because
        # the trigger's serialize() carries the connection id, never the key.
        plaintext = stored if stored.startswith("{") else fernet.decrypt(stored.encode()).decode()
        assert "openai_default" in plaintext and "batch_" in plaintext, plaintext
        _assert_no_key(f"trigger {trig_id}'s decrypted kwargs", plaintext)

    db_bytes = b"".join(p.read_bytes() for p in af.home.glob("airflow.db*"))
    assert DAG_ID.encode() in db_bytes
    for needle in NEEDLES:
        assert needle.encode() not in db_bytes, "the API key leaked into the metadata DB file"

    assert any(f"task_id={TASK_ID}" in str(p) for p in task_logs), sorted(map(str, task_logs))
    assert "Created batch batch_" in run_batch_logs and "Landed 5 output line(s)" in run_batch_logs
    for path, text in task_logs.items():
        _assert_no_key(f"log file {path}", text)

    af.stop()  # flush and close everything before reading the components' output
    for name in (*COMPONENTS, "cli"):
        text = (af.out_dir / f"{name}.log").read_text(errors="replace")
        assert text.strip(), f"no output captured from {name}"
        _assert_no_key(f"the output of airflow {name}", text)

    print(
        f"\ncomponents up and DAG parsed {parsed_after:.1f}s, run triggered {triggered_after:.1f}s, run finished"
        f" {run_seconds:.1f}s after the components started; run_batch states {ti_states_seen}"
    )


BLOCKING_DAG = Path(__file__).parent / "dags" / "openai_batch_blocking.py"
BLOCKING_DAG_ID = "openai_batch_blocking"
KILL_TIMEOUT = 60  # mark-failed to the batch's cancel call seen by the emulator


@pytest.mark.parametrize("extra_dags", [(BLOCKING_DAG,)])
def test_marking_a_running_task_failed_cancels_its_batch(airflow_components: Airflow, openai_emulator):
    """Mark failed through the REST API while the batch is in progress, in both modes, on one set of components.

    Deferrable (the example DAG): the API sets the task instance FAILED; the triggerer's loop then clears the
    trigger_id of task instances no longer DEFERRED and deletes the orphaned trigger row (Trigger.clean_unused),
    finds the trigger gone from its assignment and cancels its asyncio task with the "user action" message,
    which makes it await OpenAIBatchTrigger.on_kill(). Non-deferrable (a copy of the task with deferrable=False):
    the worker's next heartbeat to the Execution API gets 409, the task-SDK supervisor SIGTERMs the task process,
    whose handler calls OpenAIBatchOperator.on_kill(). Either way: one POST /v1/batches/{id}/cancel per batch.
    """
    af = airflow_components
    started = time.monotonic()
    _write_partition(af.storage)
    # In progress for ~100 s (5 requests at 0.05/s): long past the bounded waits below, so only a cancel ends it.
    openai_emulator.configure(validating_seconds=1, rate=0.05)

    wait_until_parsed(af, DAG_ID, BLOCKING_DAG_ID)
    run_ids = {dag_id: trigger_run(af, dag_id, LOGICAL_DATE) for dag_id in (DAG_ID, BLOCKING_DAG_ID)}
    api_url = af.api_url
    emulator = httpx.Client(
        base_url=openai_emulator.base_url, headers={"Authorization": f"Bearer {TEST_API_KEY}"}, timeout=30
    )

    def batches() -> dict[str, dict]:
        return {b["id"]: b for b in emulator.get("/batches", params={"limit": 100}).json()["data"]}

    def trigger_running():
        # Deferred, its trigger row claimed by the triggerer, the trigger polling (the trigger's log says so).
        ti = task_instance(af, DAG_ID, run_ids[DAG_ID], TASK_ID)
        if not ti or ti[0] != "deferred" or ti[1] is None:
            return None
        row = af.query("SELECT kwargs, triggerer_id FROM trigger WHERE id = ?", ti[1])
        if not row or row[0][1] is None:
            return None
        logs = "".join(
            p.read_text(errors="replace")
            for p in (af.home / "logs").rglob("*.trigger.*")
            if f"dag_id={DAG_ID}" in str(p)
        )
        return (ti[1], row[0][0]) if "Watching 1 batch(es)" in logs else None

    def blocking_polling():
        ti = task_instance(af, BLOCKING_DAG_ID, run_ids[BLOCKING_DAG_ID], TASK_ID)
        if not ti or ti[0] != "running":
            return None
        polls = [c for c in openai_emulator.calls("GET", "/v1/batches/batch_") if "/cancel" not in c["path"]]
        creates = [c for c in openai_emulator.calls("POST", "/v1/batches") if c["path"] == "/v1/batches"]
        return len(creates) == 2 and polls

    trigger_id, trigger_kwargs = wait_until(
        af, "run_batch deferred, its trigger running", trigger_running, 90
    )
    wait_until(af, "the blocking run_batch running and polling", blocking_polling, 60)
    all_batches = batches()
    assert len(all_batches) == 2, all_batches
    if not trigger_kwargs.startswith("{"):
        from cryptography.fernet import Fernet

        trigger_kwargs = Fernet(af.fernet_key.encode()).decrypt(trigger_kwargs.encode()).decode()
    (deferred_batch,) = (b for b in all_batches if b in trigger_kwargs)
    (blocking_batch,) = set(all_batches) - {deferred_batch}
    batch_of = {DAG_ID: deferred_batch, BLOCKING_DAG_ID: blocking_batch}
    assert {b["status"] for b in all_batches.values()} <= {"validating", "in_progress"}, all_batches
    assert not openai_emulator.calls("POST", "/v1/batches/batch_"), "cancelled before mark-failed"

    marked_at = {}
    for dag_id, run_id in run_ids.items():
        response = httpx.patch(
            f"{api_url}/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{TASK_ID}",
            json={"new_state": "failed"},
            timeout=60,
        )
        assert response.status_code == 200, f"mark failed: {response.status_code} {response.text}"
        assert [ti["state"] for ti in response.json()["task_instances"]] == ["failed"], response.text
        marked_at[dag_id] = time.monotonic()

    cancel_seconds = {}
    for dag_id, batch_id in batch_of.items():
        path = f"/v1/batches/{batch_id}/cancel"
        wait_until(
            af, f"{path} ({dag_id})", lambda path=path: openai_emulator.calls("POST", path), KILL_TIMEOUT, 0.2
        )
        cancel_seconds[dag_id] = time.monotonic() - marked_at[dag_id]
        cancels = openai_emulator.calls("POST", path)
        assert [c["status"] for c in cancels] == [200], cancels

    def cancelled():
        statuses = {b: v["status"] for b, v in batches().items()}
        return statuses if set(statuses.values()) <= {"cancelling", "cancelled"} else None

    statuses = wait_until(af, "both batches cancelling or cancelled", cancelled, 30)

    # Airflow 3.3's SIGTERM handler only calls on_kill(): the task process goes on running execute() until the
    # supervisor's SIGKILL 5 s later. Wait for that, so the components' teardown (the scheduler forwards its
    # SIGTERM to running tasks) cannot call on_kill() a second time, and so the count below covers the whole kill.
    def blocking_task_killed():
        return any(
            "Task killed!" in p.read_text(errors="replace")
            for p in (af.home / "logs").rglob("*.log")
            if f"dag_id={BLOCKING_DAG_ID}" in str(p)
        )

    wait_until(af, "the supervisor to kill the blocking task", blocking_task_killed, 30)
    landed_after_kill = (
        sorted(
            str(p.relative_to(af.storage))
            for p in (af.storage / "results-blocking").rglob("*")
            if p.is_file()
        )
        if (af.storage / "results-blocking").exists()
        else []
    )
    # Never paid twice: one create per task, nothing recreated after the kill, one cancel per batch.
    posts = [c["path"] for c in openai_emulator.calls("POST", "/v1/batches")]
    assert sorted(posts) == sorted(
        ["/v1/batches", "/v1/batches", *(f"/v1/batches/{b}/cancel" for b in batch_of.values())]
    ), posts

    # Both stay failed (no retry: the example's retries=2 do not apply to a user's mark-failed), the trigger row
    # is gone, and the logs show which hook cancelled.
    for dag_id, run_id in run_ids.items():
        ti = task_instance(af, dag_id, run_id, TASK_ID)
        assert ti is not None and ti[0] == "failed" and ti[2] == 1, (dag_id, ti)
    assert not af.query("SELECT id FROM trigger WHERE id = ?", trigger_id)
    logs = {p: p.read_text(errors="replace") for p in (af.home / "logs").rglob("*") if p.is_file()}
    trigger_log = "".join(
        t for p, t in logs.items() if f"dag_id={DAG_ID}" in str(p) and ".trigger." in p.name
    )
    triggerer_out = (af.out_dir / "triggerer.log").read_text(errors="replace") + trigger_log
    assert "Trigger cancelled by user action, invoking on_kill" in triggerer_out, af.diagnostics()
    assert f"Cancelled batch {deferred_batch} on kill" in triggerer_out, af.diagnostics()
    blocking_log = "".join(t for p, t in logs.items() if f"dag_id={BLOCKING_DAG_ID}" in str(p))
    assert f"Cancelled batch {blocking_batch}" in blocking_log, af.diagnostics()
    for path, text in logs.items():
        _assert_no_key(f"log file {path}", text)
    emulator.close()

    print(
        f"\nmark-failed to cancel: deferrable {cancel_seconds[DAG_ID]:.1f}s, non-deferrable"
        f" {cancel_seconds[BLOCKING_DAG_ID]:.1f}s; batches {statuses}; non-deferrable task wrote after on_kill:"
        f" {landed_after_kill}; test {time.monotonic() - started:.1f}s"
    )
