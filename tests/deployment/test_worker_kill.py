"""Celery workers die (SIGKILL of the whole process group, as when a node goes) in the middle of a task, and
the retry runs on the other worker, which has none of the first worker's spool or temporary files.

- After the task uploaded its shards, while the answer to its first ``batches.create`` is held by the emulator:
  the batch exists and is paid, but nobody heard of it. The scheduler fails the try once its heartbeat is
  ``[scheduler] task_instance_heartbeat_timeout`` old. The retry must find the batch the lost answer made (by the
  tags recorded in the intent) and pay only for the shards not yet created.
- While the task lands its results: one output download is held, and S3 holds the open multipart uploads of
  the shards' ``output-0000N.jsonl`` objects. Nothing that looks finished may be there (no output object, no
  manifest), and the retry lands everything from the same batches.

Either way: three paid creates for the date, every custom_id landed once.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.deployment.cluster import STARTUP_TIMEOUT, WORKERS, Cluster
from tests.deployment.conftest import DAG_ID
from tests.deployment.runs import (
    PREFIX,
    SHARDS,
    TASK_ID,
    Watch,
    assert_landed_once,
    assert_paid_once_per_shard,
    trigger,
    worker_attempts,
    write_inputs,
)

pytestmark = pytest.mark.deployment

DATE = "2026-02-01"
HOLD = 90  # seconds the first create's answer is held: longer than the kill and the heartbeat timeout
RUN_TIMEOUT = 300


def test_a_worker_killed_before_the_create_answer_is_retried_on_the_other_worker(
    cluster: Cluster, moto_s3, openai_emulator_server
):
    emulator = openai_emulator_server
    emulator.configure(validating_seconds=3, rate=50)
    write_inputs(moto_s3, [DATE])
    emulator.add_fault(method="POST", path="/v1/batches", kind="hold", delay=HOLD, times=1)
    already_held = len([c for c in emulator.calls("POST", "/v1/batches") if c.get("fault") == "hold"])
    started = time.monotonic()
    trigger(cluster, DATE)
    watch = Watch(cluster, [DATE])

    def created_and_held():
        watch.poll()
        held = [c for c in emulator.calls("POST", "/v1/batches") if c.get("fault") == "hold"][already_held:]
        return held if held and held[0]["status"] == 200 else None

    (held,) = cluster.wait_until("the first create made, its answer held", created_and_held, STARTUP_TIMEOUT)
    (victim_folder,) = worker_attempts(cluster, DATE)[1]
    victim = victim_folder.rsplit("-", 1)[0]
    (survivor,) = set(WORKERS) - {victim}
    cluster.kill(victim)
    killed_after = time.monotonic() - started
    assert watch.poll()[DATE][:2] == ("running", 1), watch.states

    final = cluster.wait_until("the run to finish on the other worker", watch.finished, RUN_TIMEOUT)
    assert final == {DATE: "success"}, f"{final}\n{watch.states}\n{cluster.diagnostics()}"
    assert watch.poll()[DATE][:2] == ("success", 2), watch.states
    ran_on = worker_attempts(cluster, DATE)
    assert {try_: {f.rsplit("-", 1)[0] for f in folders} for try_, folders in ran_on.items()} == {
        1: {victim},
        2: {survivor},
    }, ran_on
    paid = assert_paid_once_per_shard(emulator, [DATE])
    assert held["id"] in emulator.paid_creates()  # the batch whose answer nobody heard is one of the three
    landed = assert_landed_once(moto_s3, DATE)
    print(
        f"\nworker kill: {victim} killed {killed_after:.0f}s after the trigger with the create of {held['id']}"
        f" held; the retry ran on {survivor}; paid creates {paid} ({SHARDS} shards); {landed} custom_ids landed"
        f" once; states {watch.states[DATE]}"
    )
    # The deployment goes on with two workers: the replacement starts in a fresh folder, as a new node would.
    cluster.start_worker(victim)
    cluster.wait_until("the replacement worker to join", cluster.workers_online, STARTUP_TIMEOUT, interval=2)


LANDING_DATE = "2026-02-02"
HOLD_DOWNLOAD = (
    120  # seconds the first output download is held: longer than the kill and the heartbeat timeout
)


def test_a_worker_killed_while_it_lands_leaves_nothing_finished_and_the_retry_lands_everything(
    cluster: Cluster, moto_s3, openai_emulator_server
):
    emulator = openai_emulator_server
    emulator.configure(validating_seconds=3, rate=50)
    s3, bucket = moto_s3["client"], moto_s3["bucket"]
    folder = f"{PREFIX}/results/{LANDING_DATE}/"
    write_inputs(moto_s3, [LANDING_DATE])
    emulator.add_fault(method="GET", path="/v1/files/*/content", kind="latency", delay=HOLD_DOWNLOAD, times=1)
    already_held = len([c for c in emulator.calls("GET", "/v1/files/") if c.get("fault") == "latency"])
    trigger(cluster, LANDING_DATE)
    watch = Watch(cluster, [LANDING_DATE])

    def landing():
        watch.poll()
        held = [c for c in emulator.calls("GET", "/v1/files/") if c.get("fault") == "latency"][already_held:]
        uploads = s3.list_multipart_uploads(Bucket=bucket, Prefix=folder).get("Uploads", [])
        return uploads if held and uploads else None

    uploads = cluster.wait_until("a download held while the task lands", landing, RUN_TIMEOUT)
    ((pid,),) = cluster.query(
        "SELECT pid FROM task_instance WHERE dag_id = %s AND task_id = %s AND run_id LIKE %s",
        DAG_ID,
        TASK_ID,
        f"%{LANDING_DATE}%",
    )
    victim = cluster.worker_running(pid)
    assert victim is not None, f"no worker runs the landing task (pid {pid})\n{cluster.diagnostics()}"
    (survivor,) = set(WORKERS) - {victim}
    cluster.kill(victim)
    # The task process went with its worker, as on a dead node: left running, it would finish the upload later.
    cluster.wait_until("the killed task process to be gone", lambda: not _alive(pid), 10)

    # One object per shard's output file, each its own multipart upload, open, never completed.
    assert {u["Key"] for u in uploads} <= {f"{folder}output-{s:05d}.jsonl" for s in range(SHARDS)}, uploads
    assert s3.list_objects_v2(Bucket=bucket, Prefix=folder).get("KeyCount", 0) == 0  # no output, no manifest
    assert watch.poll()[LANDING_DATE][:2] == ("running", 1), watch.states

    final = cluster.wait_until("the run to finish on the other worker", watch.finished, RUN_TIMEOUT)
    assert final == {LANDING_DATE: "success"}, f"{final}\n{watch.states}\n{cluster.diagnostics()}"
    assert watch.poll()[LANDING_DATE][:2] == ("success", 2), watch.states
    assert survivor in {f.rsplit("-", 1)[0] for f in worker_attempts(cluster, LANDING_DATE)[2]}
    paid = assert_paid_once_per_shard(emulator, [LANDING_DATE])  # landing again paid nothing more
    landed = assert_landed_once(moto_s3, LANDING_DATE)
    left = [u["UploadId"] for u in s3.list_multipart_uploads(Bucket=bucket, Prefix=folder).get("Uploads", [])]
    print(
        f"\nworker kill while landing: {victim} (task pid {pid}) killed with a download held and the upload"
        f"s {[u['UploadId'] for u in uploads]} open; the retry ran on {survivor}; paid creates {paid} ({SHARDS} shards);"
        f" {landed} custom_ids landed once; incomplete uploads left for the bucket's lifecycle rule {left};"
        f" states {watch.states[LANDING_DATE]}"
    )
    cluster.start_worker(victim)
    cluster.wait_until("the replacement worker to join", cluster.workers_online, STARTUP_TIMEOUT, interval=2)


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie waiting to be reaped does not)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False
