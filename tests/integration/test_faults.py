"""Fault injection: the real operator, hook and trigger against the emulator over HTTP (and moto_server S3),
with faults armed on the emulator (429 + Retry-After, 5xx, dropped connections, slow answers) and crashes
injected into the worker at the worst moments (between create and defer, between create and the record write,
midway through landing a file).

Every test checks the three promises: no batch is created twice (counted from the emulator's journal), every
``custom_id`` lands exactly once in output ∪ errors, and when the provider gives up it says why and what a
retry does. docs/reliability.md lists the faults and the test proving each.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest

from airflow_provider_openai_batch import files, storage_s3
from airflow_provider_openai_batch.exceptions import OpenAIBatchError
from airflow_provider_openai_batch.hooks.openai_batch import OpenAIBatchHook
from airflow_provider_openai_batch.lifecycle import record as record_module
from airflow_provider_openai_batch.operators.openai_batch import OpenAIBatchOperator
from airflow_provider_openai_batch.statuses import EventStatus
from airflow_provider_openai_batch.triggers.openai_batch import OpenAIBatchTrigger
from tests.support.assertions import assert_each_custom_id_once, assert_paid, read_s3_jsonl
from tests.support.builders import ENDPOINT, jsonl, request, write_input, write_requests
from tests.support.environment import connected_emulator, dag_env, openai_connection, short_client_backoff
from tests.support.journal import batch_posts, faulted, waits_after_faults
from tests.support.transports import LoseFirstCreateAnswer

pytestmark = pytest.mark.integration

DAG_ID = "reliability_batch"
DATE = "2026-11-01"
# Long enough to tell a wait from an immediate retry, short enough not to slow the suite (the emulator sends
# fractions as they are: ``Retry-After: 0.2``).
RETRY_AFTER = 0.2


# ----------------------------------------------------------------------------------------------- helpers
@pytest.fixture
def emulator(openai_emulator, monkeypatch):
    """The reset emulator, with `openai_default` on it (the client's default 2 retries, 10 s timeout).

    openai's retry backoff is shortened: these tests count what is retried, not how long each wait is.
    """
    short_client_backoff(monkeypatch)
    yield from connected_emulator(openai_emulator, monkeypatch, timeout=10)


def use_dag(monkeypatch, input_path: str, output_base: str, **env: Any) -> None:
    """The reliability DAG's input, results folder and operator arguments (tests/dags/reliability_dags.py)."""
    dag_env(monkeypatch, "RELIABILITY", input=input_path, output=output_base, **env)


@pytest.fixture
def local_job(tmp_path, monkeypatch):
    """Six requests on local storage; returns (ids, results folder of DATE)."""
    ids = write_requests(tmp_path / "input.jsonl", 6)
    use_dag(monkeypatch, str(tmp_path / "input.jsonl"), str(tmp_path / "out"))
    return ids, tmp_path / "out" / DATE


def emulator_batches(emulator) -> list[Any]:
    """Every batch the emulator holds (read last: the list call goes in the journal)."""
    return list(OpenAIBatchHook().iter_batches(max_pages=5))


def assert_one_batch(emulator) -> None:
    assert_paid(emulator, 1)
    assert len(emulator_batches(emulator)) == 1


# ----------------------------------------------------------------------------- transient HTTP faults
@pytest.mark.parametrize(
    ("method", "path"),
    [("POST", "/v1/files"), ("POST", "/v1/batches"), ("GET", "/v1/batches/*")],
    ids=["upload", "create", "poll"],
)
def test_429_with_retry_after_is_waited_out(run_dag, emulator, local_job, method, path):
    ids, folder = local_job
    emulator.add_fault(method=method, path=path, status=429, retry_after=RETRY_AFTER, times=2)

    outcome = run_dag(DAG_ID, DATE)

    assert outcome.state == "success", outcome.ti_states()
    hits = faulted(emulator, method, path.rstrip("*"))
    assert [c["status"] for c in hits] == [429, 429]
    waits = waits_after_faults(emulator, method, path.rstrip("*"))
    assert len(waits) == 2 and min(waits) >= RETRY_AFTER, waits  # Retry-After honoured twice, not hammered
    assert_one_batch(emulator)
    assert_each_custom_id_once(folder, ids, failed=set())


@pytest.mark.parametrize("status", [500, 503])
@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/v1/files"),
        ("POST", "/v1/batches"),
        ("GET", "/v1/batches/*"),
        ("GET", "/v1/files/*/content"),
    ],
    ids=["upload", "create", "poll", "download"],
)
def test_server_errors_are_retried(run_dag, emulator, local_job, method, path, status):
    ids, folder = local_job
    emulator.add_fault(method=method, path=path, status=status, times=1)

    outcome = run_dag(DAG_ID, DATE)

    assert outcome.state == "success", outcome.ti_states()
    assert [c["status"] for c in faulted(emulator, method, path.split("*")[0])] == [status]
    assert_one_batch(emulator)
    assert_each_custom_id_once(folder, ids, failed=set())


@pytest.mark.parametrize("path", ["/v1/files", "/v1/batches"], ids=["upload", "create"])
def test_dropped_connection_during_upload_or_create_is_retried(run_dag, emulator, local_job, path):
    ids, folder = local_job
    emulator.add_fault(method="POST", path=path, kind="drop", times=1)

    outcome = run_dag(DAG_ID, DATE)

    assert outcome.state == "success", outcome.ti_states()
    posts = [c for c in emulator.calls("POST", path) if c["path"] == path]
    assert [c["status"] for c in posts] == [None, 200]  # dropped, then the retry
    if path == "/v1/batches":
        # A create that got no answer may have made the batch: it was looked for before posting again.
        between = [c for c in emulator.journal() if posts[0]["time"] < c["time"] < posts[1]["time"]]
        assert [(c["method"], c["path"]) for c in between] == [("GET", "/v1/batches")]
    assert_one_batch(emulator)
    assert_each_custom_id_once(folder, ids, failed=set())


# ---------------------------------------------------------------------------------- dropped downloads
@pytest.mark.parametrize("kind", ["drop", "drop_mid_body"])
def test_dropped_download_is_retried_from_scratch(run_dag, emulator, tmp_path, monkeypatch, moto_s3, kind):
    """Results land on S3 whole although the output download broke (before any byte, or midway)."""
    s3, bucket = moto_s3["client"], moto_s3["bucket"]
    ids = write_requests(tmp_path / "input.jsonl", 40, prefix=f"dl-{kind}")
    base = f"s3://{moto_s3['conn_id']}@{bucket}/reliability-{kind}"
    use_dag(monkeypatch, str(tmp_path / "input.jsonl"), base)
    emulator.add_fault(method="GET", path="/v1/files/*/content", kind=kind, times=1)

    outcome = run_dag(DAG_ID, DATE)

    assert outcome.state == "success", outcome.ti_states()
    downloads = emulator.calls("GET", "/v1/files/")
    assert [c.get("fault") for c in downloads] == [kind, None]
    result = outcome.xcoms[("run_batch", "return_value")]
    assert result["output_lines"] == 40
    lines = read_s3_jsonl(s3, bucket, f"reliability-{kind}/{DATE}/output.jsonl")
    assert sorted(line["custom_id"] for line in lines) == sorted(ids)  # whole, not truncated or doubled
    assert_one_batch(emulator)


def test_download_that_keeps_dropping_gives_up_naming_the_file(emulator, tmp_path):
    hook = OpenAIBatchHook()
    (tmp_path / "in.jsonl").write_bytes(jsonl(*(request(f"x-{i}") for i in range(20))))
    with open(tmp_path / "in.jsonl", "rb") as fh:
        uploaded = hook.upload_file(file=fh, filename="in.jsonl")
    emulator.add_fault(
        method="GET", path="/v1/files/*/content", kind="drop_mid_body", after_bytes=100, times=None
    )

    with pytest.raises(OpenAIBatchError) as info:
        hook.download_file(uploaded.id, local_path=str(tmp_path / "copy.jsonl"), max_attempts=3)

    assert uploaded.id in str(info.value) and "3 attempts" in str(info.value)
    assert len(emulator.calls("GET", f"/v1/files/{uploaded.id}/content")) == 3
    emulator.clear_faults()
    assert hook.download_file(uploaded.id, local_path=str(tmp_path / "copy.jsonl")) == (
        (tmp_path / "in.jsonl").stat().st_size,
        20,
    )


# -------------------------------------------------------------------------------------- slow answers
def test_slow_answers_within_the_client_timeout(run_dag, emulator, local_job):
    ids, folder = local_job
    for method, path in [("POST", "/v1/files"), ("POST", "/v1/batches"), ("GET", "/v1/batches/*")]:
        emulator.add_fault(method=method, path=path, kind="latency", delay=1.0, times=2)
    # Two uploads or creates would be a bug; the poll and execute_complete each read the batch once.

    outcome = run_dag(DAG_ID, DATE)

    assert outcome.state == "success", outcome.ti_states()
    slow = [(c["method"], c["path"].split("/")[2]) for c in emulator.journal() if c.get("fault") == "latency"]
    assert sorted(slow) == [("GET", "batches"), ("GET", "batches"), ("POST", "batches"), ("POST", "files")]
    assert_one_batch(emulator)
    assert_each_custom_id_once(folder, ids, failed=set())


def test_create_whose_answer_is_lost_is_not_paid_twice(run_dag, emulator, local_job, monkeypatch):
    """The server created the batch but the client never heard: the openai client retries the POST by
    itself, which would create (and bill) a second batch unless the provider looks for the first one."""
    ids, folder = local_job
    transport = LoseFirstCreateAnswer().install(monkeypatch)

    outcome = run_dag(DAG_ID, DATE)

    assert outcome.state == "success", outcome.ti_states()
    assert len(transport.lost) == 1  # the fault did fire
    batches = emulator_batches(emulator)
    assert [b["id"] for b in batches] == transport.lost, "a second batch was created for the same input"
    assert outcome.xcoms[("run_batch", "return_value")]["batch_id"] == transport.lost[0]
    assert_each_custom_id_once(folder, ids, failed=set())


# ----------------------------------------------------------------------------------- triggerer restart
def _slow_batch(emulator, tmp_path, n: int = 30) -> str:
    """A batch that stays in progress for a few seconds (the emulator answers 10 requests a second)."""
    emulator.configure(rate=10)
    hook = OpenAIBatchHook()
    write_input(tmp_path / "slow.jsonl", [f"slow-{i}" for i in range(n)])
    with open(tmp_path / "slow.jsonl", "rb") as fh:
        uploaded = hook.upload_file(file=fh, filename="slow.jsonl")
    return hook.create_batch(input_file_id=uploaded.id, endpoint=ENDPOINT)["id"]


async def _run_for(trigger: OpenAIBatchTrigger, seconds: float | None) -> list[Any]:
    """Run the trigger as the triggerer does; cancel it after ``seconds`` (a triggerer going away)."""
    events: list[Any] = []

    async def consume() -> None:
        async for event in trigger.run():
            events.append(event)

    task = asyncio.create_task(consume())
    done, _ = await asyncio.wait({task}, timeout=seconds)
    if not done:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    return events


def test_triggerer_restart_mid_poll_resumes_without_cancelling(emulator, tmp_path):
    batch_id = _slow_batch(emulator, tmp_path)
    deadline = time.time() + 120
    trigger = OpenAIBatchTrigger(
        batch_ids=[batch_id], poll_interval=0.2, deadline=deadline, first_poll_jitter=0
    )

    assert asyncio.run(_run_for(trigger, 1.0)) == []  # killed mid-poll: no event
    assert OpenAIBatchHook().get_batch(batch_id)["status"] in ("validating", "in_progress")  # still running
    assert len(emulator.calls("GET", f"/v1/batches/{batch_id}")) >= 2

    classpath, kwargs = trigger.serialize()
    json.dumps(kwargs)  # what the triggerer table stores
    assert classpath == "airflow_provider_openai_batch.triggers.openai_batch.OpenAIBatchTrigger"
    reborn = OpenAIBatchTrigger(**kwargs)
    assert reborn.deadline == deadline  # an absolute deadline: the restart does not reset the budget

    events = asyncio.run(_run_for(reborn, 60))

    assert len(events) == 1
    assert events[0].payload["status"] == EventStatus.TERMINAL.value
    assert events[0].payload["batches"] == {batch_id: "completed"}
    assert emulator.calls("POST", f"/v1/batches/{batch_id}/cancel") == []
    assert OpenAIBatchHook().get_batch(batch_id)["request_counts"]["completed"] == 30


def test_triggerer_restart_does_not_extend_the_timeout(emulator, tmp_path):
    batch_id = _slow_batch(emulator, tmp_path, n=100)
    trigger = OpenAIBatchTrigger(
        batch_ids=[batch_id], poll_interval=0.2, deadline=time.time() + 2.0, first_poll_jitter=0
    )
    assert asyncio.run(_run_for(trigger, 1.2)) == []

    reborn = OpenAIBatchTrigger(**trigger.serialize()[1])
    started = time.monotonic()
    events = asyncio.run(_run_for(reborn, 30))

    assert time.monotonic() - started < 1.5  # what was left of the 2 s, not 2 s anew
    assert [e.payload["status"] for e in events] == [EventStatus.TIMEOUT.value]
    assert batch_id in events[0].payload["message"]
    # A timeout is the operator's to act on (cancel or keep): the trigger cancels nothing.
    assert emulator.calls("POST", f"/v1/batches/{batch_id}/cancel") == []


# --------------------------------------------------------------------------------------- worker crashes
@pytest.mark.parametrize("rerun", ["retry", "clear-keeps-state-store", "run-recreated-state-lost"])
def test_crash_between_create_and_defer(run_dag, emulator, local_job, monkeypatch, rerun):
    ids, folder = local_job
    original = OpenAIBatchOperator.defer
    crashes: list[int] = []

    def crash_once(self, *args, **kwargs):
        if not crashes:
            crashes.append(len(emulator.paid_creates()))
            raise RuntimeError("worker lost between batches.create and defer")
        return original(self, *args, **kwargs)

    monkeypatch.setattr(OpenAIBatchOperator, "defer", crash_once)

    if rerun == "retry":
        outcome = run_dag(DAG_ID, DATE, retries=1)
    else:
        assert run_dag(DAG_ID, DATE).state == "failed"
        outcome = run_dag(DAG_ID, DATE, clear=rerun == "clear-keeps-state-store")

    assert crashes == [1]  # it crashed with the batch already created
    assert outcome.state == "success", outcome.ti_states()
    assert_one_batch(emulator)
    assert_each_custom_id_once(folder, ids, failed=set())


@pytest.mark.parametrize("rerun", ["retry", "clear"])
def test_crash_between_create_and_record_write(run_dag, emulator, local_job, monkeypatch, rerun):
    """The batch exists but the state store only says "creating": found again by its metadata tags."""
    ids, folder = local_job
    original = record_module.RecordStore.save
    crashes: list[dict] = []

    def save(self, record):
        if record.batches and not crashes:  # the write that records the new batch id
            crashes.append(dict(record.batches))
            raise RuntimeError("worker lost before recording the batch id")
        return original(self, record)

    monkeypatch.setattr(record_module.RecordStore, "save", save)

    if rerun == "retry":
        outcome = run_dag(DAG_ID, DATE, retries=1)
    else:
        assert run_dag(DAG_ID, DATE).state == "failed"
        outcome = run_dag(DAG_ID, DATE, clear=True)

    assert len(crashes) == 1 and len(emulator.paid_creates()) == 1
    assert outcome.state == "success", outcome.ti_states()
    assert outcome.xcoms[("run_batch", "return_value")]["batch_id"] == crashes[0]["0/1"]
    assert_one_batch(emulator)
    assert_each_custom_id_once(folder, ids, failed=set())


def test_storage_failure_midway_leaves_nothing_that_looks_complete(
    run_dag, emulator, tmp_path, monkeypatch, moto_s3
):
    s3, bucket = moto_s3["client"], moto_s3["bucket"]
    ids = write_requests(tmp_path / "input.jsonl", 20, prefix="st")
    use_dag(
        monkeypatch, str(tmp_path / "input.jsonl"), f"s3://{moto_s3['conn_id']}@{bucket}/reliability-storage"
    )
    prefix = f"reliability-storage/{DATE}/"
    written: list[int] = []
    write = storage_s3.Upload.write

    class BreaksMidway:
        """Storage goes away after the first 300 bytes of the upload went through."""

        def __init__(self, stream):
            self.stream = stream

        def read(self, size=-1):
            if written:
                raise OSError("connection to storage lost midway")
            written.append(len(data := self.stream.read(300)))
            return data

    monkeypatch.setattr(
        storage_s3.Upload, "write", lambda self, stream, size: write(self, BreaksMidway(stream), size)
    )

    first = run_dag(DAG_ID, DATE)

    assert first.state == "failed"
    assert written == [300]
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", [])]
    assert keys == [], keys  # no output.jsonl, no _manifest.json, no partial file left behind
    assert s3.list_multipart_uploads(Bucket=bucket, Prefix=prefix).get("Uploads", []) == []  # aborted

    monkeypatch.setattr(storage_s3.Upload, "write", write)
    second = run_dag(DAG_ID, DATE, clear=True)

    assert second.state == "success", second.ti_states()
    assert_one_batch(emulator)
    landed = read_s3_jsonl(s3, bucket, f"{prefix}output.jsonl")
    assert sorted(line["custom_id"] for line in landed) == sorted(ids)
    manifest = json.loads(s3.get_object(Bucket=bucket, Key=f"{prefix}_manifest.json")["Body"].read())
    assert manifest["output_lines"] == 20


# ------------------------------------------------------------------------------------- giving up clearly
def test_polling_that_keeps_failing_gives_up_and_a_retry_reattaches(
    run_dag, emulator, local_job, monkeypatch, capfd, caplog
):
    ids, folder = local_job
    openai_connection(monkeypatch, emulator.base_url, timeout=10, max_retries=0)
    emulator.add_fault(method="GET", path="/v1/batches/*", status=500, times=None)

    first = run_dag(DAG_ID, DATE)

    assert first.state == "failed"
    (batch,) = emulator_batches(emulator)
    out, err = capfd.readouterr()
    text = out + err + caplog.text
    assert "OpenAIBatchPollError" in text
    assert f"Gave up polling batch(es) ['{batch['id']}']" in text
    assert "a retry of this task re-attaches to them" in text
    assert (
        emulator.calls("POST", f"/v1/batches/{batch['id']}/cancel") == []
    )  # giving up polling cancels nothing

    emulator.clear_faults()
    second = run_dag(DAG_ID, DATE, clear=True)

    assert second.state == "success", second.ti_states()
    assert second.xcoms[("run_batch", "return_value")]["batch_id"] == batch["id"]
    assert_one_batch(emulator)
    assert_each_custom_id_once(folder, ids, failed=set())


def test_create_that_keeps_failing_gives_up_without_a_batch(run_dag, emulator, local_job, monkeypatch):
    ids, folder = local_job
    emulator.add_fault(method="POST", path="/v1/batches", status=500, times=None)

    first = run_dag(DAG_ID, DATE)

    assert first.state == "failed"
    assert [c["status"] for c in batch_posts(emulator)] == [500, 500, 500]  # max_retries=2 → 3 attempts
    assert emulator_batches(emulator) == []
    assert not (folder / files.MANIFEST).exists()

    emulator.clear_faults()
    assert run_dag(DAG_ID, DATE, clear=True).state == "success"
    assert_one_batch(emulator)
    assert_each_custom_id_once(folder, ids, failed=set())


@pytest.mark.parametrize("max_failed_ratio", [1.0, 0.0])
def test_failed_requests_land_once_each(run_dag, emulator, tmp_path, monkeypatch, max_failed_ratio):
    ids = write_requests(tmp_path / "input.jsonl", 8, prefix="mix", fail={2: 500, 5: 429})
    failing = {"mix-2", "mix-5"}
    use_dag(
        monkeypatch, str(tmp_path / "input.jsonl"), str(tmp_path / "out"), max_failed_ratio=max_failed_ratio
    )

    outcome = run_dag(DAG_ID, DATE)

    assert outcome.state == ("success" if max_failed_ratio else "failed")
    result = outcome.xcoms[("run_batch", "return_value" if max_failed_ratio else "batch_result")]
    assert result["request_counts"] == {"total": 8, "completed": 6, "failed": 2}
    assert_one_batch(emulator)
    assert_each_custom_id_once(tmp_path / "out" / DATE, ids, failed=failing)
