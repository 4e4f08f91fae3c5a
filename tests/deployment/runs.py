"""What the deployment scenarios do and check: dated inputs on S3, runs made through the REST API, what the
metadata DB and the processes' own logs say about where each task ran, and the two promises (every shard paid
once, from the emulator's journal; every custom_id landed once, on S3).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from airflow_provider_openai_batch.emulator.testing import EmulatorClient
from tests.deployment.cluster import Cluster
from tests.deployment.conftest import DAG_ID
from tests.support.assertions import read_s3_jsonl
from tests.support.journal import api_client

TASK_ID = "run_batch"
REQUESTS = 6  # per date: three shards of two (the DAG's Limits)
SHARDS = 3
PREFIX = "deploy"
ACTIVE_BATCH = {"validating", "in_progress", "finalizing"}


def custom_ids(date: str) -> list[str]:
    return [f"{date}-{i}" for i in range(REQUESTS)]


def write_inputs(moto_s3: dict[str, Any], dates: Iterable[str]) -> dict[str, list[str]]:
    """``requests/<date>.jsonl`` on S3 for each date; the custom_ids by date."""
    ids = {}
    for date in dates:
        ids[date] = custom_ids(date)
        body = "".join(
            json.dumps(
                {
                    "custom_id": cid,
                    "method": "POST",
                    "url": "/v1/chat/completions",
                    "body": {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": f"q {cid}"}]},
                }
            )
            + "\n"
            for cid in ids[date]
        )
        moto_s3["client"].put_object(
            Bucket=moto_s3["bucket"], Key=f"{PREFIX}/requests/{date}.jsonl", Body=body
        )
    return ids


def date_of(run_id: str) -> str:
    match = re.search(r"__(\d{4}-\d{2}-\d{2})T", run_id)
    assert match, f"Expected a run id with a logical date but received {run_id!r}"
    return match[1]


def trigger(cluster: Cluster, date: str) -> str:
    """A manual run for ``date`` (an explicit logical date, so ``{{ ds }}`` is that date); its run id, named
    for the date as a backfill's are (Airflow would name it for the time it was made)."""
    answer = cluster.api(
        "POST",
        f"/dags/{DAG_ID}/dagRuns",
        json={"logical_date": f"{date}T00:00:00Z", "dag_run_id": f"manual__{date}T00:00:00+00:00"},
    )
    return str(answer["dag_run_id"])


def backfill(cluster: Cluster, first: str, last: str) -> int:
    """A backfill of every date from ``first`` to ``last`` (inclusive), all runs at once; its id."""
    answer = cluster.api(
        "POST",
        "/backfills",
        json={
            "dag_id": DAG_ID,
            "from_date": f"{first}T00:00:00Z",
            "to_date": f"{last}T00:00:00Z",
            "max_active_runs": 16,
            "reprocess_behavior": "none",
        },
    )
    return int(answer["id"])


@dataclass
class Watch:
    """Polls the metadata DB for the task instances of some dates and keeps what one snapshot could miss: each
    state they went through, and every triggerer job seen holding their trigger."""

    cluster: Cluster
    dates: list[str]
    states: dict[str, list[str | None]] = field(default_factory=dict)
    holders: dict[str, set[int]] = field(default_factory=dict)

    def poll(self) -> dict[str, tuple[str | None, int, int | None]]:
        """(state, try_number, triggerer job id or None) by date, now."""
        rows = self.cluster.query(
            "SELECT ti.run_id, ti.state, ti.try_number, t.triggerer_id FROM task_instance ti"
            " LEFT JOIN trigger t ON t.id = ti.trigger_id WHERE ti.dag_id = %s AND ti.task_id = %s",
            DAG_ID,
            TASK_ID,
        )
        now = {}
        for run_id, state, tries, job in rows:
            date = date_of(run_id)
            if date not in self.dates:
                continue
            seen = self.states.setdefault(date, [])
            if not seen or seen[-1] != state:
                seen.append(state)
            if job is not None:
                self.holders.setdefault(date, set()).add(job)
            now[date] = (state, tries, job)
        return now

    def deferred_and_held(self) -> dict[str, int] | None:
        """The triggerer job holding each date's trigger, once every date is deferred with a claimed trigger."""
        now = self.poll()
        held = {d: job for d, (state, _, job) in now.items() if state == "deferred" and job is not None}
        return held if len(held) == len(self.dates) else None

    def gone_wrong(self) -> list[str]:
        return [
            d for d, seen in self.states.items() if seen[-1] in ("failed", "up_for_retry", "upstream_failed")
        ]

    def finished(self) -> dict[str, str] | None:
        """The run state by date once every run of these dates has finished."""
        self.poll()
        rows = self.cluster.query("SELECT run_id, state FROM dag_run WHERE dag_id = %s", DAG_ID)
        states = {date_of(run_id): state for run_id, state in rows if date_of(run_id) in self.dates}
        done = len(states) == len(self.dates) and all(s in ("success", "failed") for s in states.values())
        return states if done else None


def task_logs(cluster: Cluster, date: str, pattern: str) -> dict[str, list[Path]]:
    """The log files of ``date``'s task found in each process folder (by folder name, e.g. ``worker-a-1``),
    matching the glob ``pattern`` under ``task_id=run_batch/`` (``attempt=*.log``, ``*.trigger.*.log``)."""
    found: dict[str, list[Path]] = {}
    for process in cluster.history:
        logs = process.airflow_home / "logs"
        for path in (
            logs.glob(f"dag_id={DAG_ID}/run_id=*/task_id={TASK_ID}/{pattern}") if logs.exists() else []
        ):
            if date_of(path.parent.parent.name.removeprefix("run_id=")) == date:
                found.setdefault(process.root.name, []).append(path)
    return found


def worker_attempts(cluster: Cluster, date: str) -> dict[int, set[str]]:
    """The worker folders that wrote each try's task log: where the try really ran (its start, and its resume
    after the deferral, which may be on the other worker)."""
    attempts: dict[int, set[str]] = {}
    for folder, paths in task_logs(cluster, date, "attempt=*.log").items():
        for path in paths:
            if match := re.fullmatch(r"attempt=(\d+)\.log", path.name):  # not a trigger's log
                attempts.setdefault(int(match[1]), set()).add(folder)
    return attempts


def triggerer_logs(cluster: Cluster, date: str) -> dict[str, str]:
    """The trigger log texts of ``date``'s task, by triggerer folder name."""
    return {
        folder: "\n".join(p.read_text(errors="replace") for p in paths)
        for folder, paths in task_logs(cluster, date, "*.trigger.*.log").items()
    }


def batches_by_date(emulator: EmulatorClient) -> dict[str, list[dict[str, Any]]]:
    """Every batch the emulator holds, by the ``partition`` metadata the DAG gives it (oldest first)."""
    client = api_client(emulator)
    found: dict[str, list[dict[str, Any]]] = {}
    for batch in reversed(list(client.batches.list(limit=100))):
        found.setdefault((batch.metadata or {}).get("partition", ""), []).append(batch.model_dump())
    return found


def paid_by_date(emulator: EmulatorClient, dates: Iterable[str]) -> dict[str, int]:
    """Paid creates (``POST /v1/batches`` answered 200, from the journal) by date."""
    paid = set(emulator.paid_creates())
    by_date = batches_by_date(emulator)
    return {date: sum(b["id"] in paid for b in by_date.get(date, [])) for date in dates}


def cancels(emulator: EmulatorClient) -> list[str]:
    """The batch ids of every cancel call received."""
    return [
        c["path"].split("/")[3]
        for c in emulator.calls("POST", "/v1/batches/")
        if c["path"].endswith("/cancel")
    ]


def assert_landed_once(moto_s3: dict[str, Any], date: str) -> int:
    """Every custom_id of ``date`` exactly once in the output and error files on S3 its manifest lists (one
    object per shard's file), which are all the folder holds; the number of ids landed."""
    client, bucket = moto_s3["client"], moto_s3["bucket"]
    folder = f"{PREFIX}/results/{date}"
    keys = {
        o["Key"].rsplit("/", 1)[1]
        for o in client.list_objects_v2(Bucket=bucket, Prefix=f"{folder}/").get("Contents", [])
    }
    assert "_manifest.json" in keys, f"Expected {folder}/_manifest.json but received {sorted(keys)}"
    manifest = json.loads(client.get_object(Bucket=bucket, Key=f"{folder}/_manifest.json")["Body"].read())
    listed = [path.rsplit("/", 1)[1] for path in manifest["output_paths"] + manifest["error_paths"]]
    assert sorted(listed) == sorted(keys - {"_manifest.json"}), (
        f"{folder}: manifest lists {listed}, holds {keys}"
    )
    landed = [
        line["custom_id"] for name in listed for line in read_s3_jsonl(client, bucket, f"{folder}/{name}")
    ]
    assert sorted(landed) == sorted(custom_ids(date)), (
        f"Expected each of {custom_ids(date)} landed once in {folder} but received {sorted(landed)}"
    )
    return len(landed)


def assert_paid_once_per_shard(emulator: EmulatorClient, dates: Iterable[str]) -> dict[str, int]:
    """Exactly one paid create per shard of each date, no batch of theirs cancelled; paid creates by date."""
    dates = list(dates)
    paid = paid_by_date(emulator, dates)
    assert paid == {d: SHARDS for d in dates}, f"Expected {SHARDS} paid creates per date but received {paid}"
    by_date = batches_by_date(emulator)
    mine = {b["id"] for d in dates for b in by_date.get(d, [])}
    cancelled = sorted(mine & set(cancels(emulator)))
    assert not cancelled, f"Expected no batch of {dates} cancelled but received cancels of {cancelled}"
    return paid
