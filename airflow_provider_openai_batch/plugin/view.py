"""What the batch pages show, worked out from Airflow's records and the API's snapshot: pure, no I/O.

Each task becomes a :class:`TaskView` with one :class:`BatchView` per batch of each round: the status and
request counts the API reported last (the BatchResult's when the task landed, or the API no longer lists the
batch), a percentage, the times, the cost so far (from the usage the API reports) and at the end (the
BatchResult's estimate), the landed files and the dashboard link. Runs are grouped by DAG and logical date
with their totals.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from airflow_provider_openai_batch.cost.prices import cost_of_usage
from airflow_provider_openai_batch.lifecycle.tags import CORE_TAGS, READABLE_TAGS, TAG_SHARD, parse_label
from airflow_provider_openai_batch.plugin.records import BatchTask
from airflow_provider_openai_batch.progress import done_of, percent
from airflow_provider_openai_batch.results import sum_counts
from airflow_provider_openai_batch.statuses import TERMINAL

_OWN_TAGS = set(CORE_TAGS) | set(READABLE_TAGS)
_WINDOW_SECONDS = 24 * 3600


@dataclass
class BatchView:
    batch_id: str
    round_no: int
    label: str
    status: str
    total: int
    completed: int
    failed: int
    percent: int
    created: str | None
    expected_by: str | None
    ended: str | None
    cost_so_far: float | None
    metadata: dict[str, str]
    dashboard_url: str | None
    live: bool


@dataclass
class TaskView:
    dag_id: str
    run_id: str
    task_id: str
    map_index: int
    logical_date: str
    state: str
    batches: list[BatchView]
    total: int
    done: int
    failed: int
    percent: int
    cost_so_far: float | None
    final_cost: float | None
    cost_note: str | None
    landed: list[tuple[str, str]]
    queue_wait: str | None

    @property
    def waiting_for_queue(self) -> bool:
        return self.queue_wait is not None


@dataclass
class RunView:
    dag_id: str
    run_id: str
    logical_date: str
    tasks: list[TaskView] = field(default_factory=list)

    @property
    def total(self) -> int:
        return sum(t.total for t in self.tasks)

    @property
    def done(self) -> int:
        return sum(t.done for t in self.tasks)

    @property
    def failed(self) -> int:
        return sum(t.failed for t in self.tasks)

    @property
    def percent(self) -> int:
        return percent(self.done, self.total)

    @property
    def cost(self) -> float | None:
        costs = [t.final_cost if t.final_cost is not None else t.cost_so_far for t in self.tasks]
        known = [c for c in costs if c is not None]
        return round(sum(known), 6) if known else None


def _when(value: Any) -> str | None:
    """A unix time or datetime as UTC ``YYYY-MM-DD HH:MM:SS``."""
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        moment = value if value.tzinfo else value.replace(tzinfo=timezone.utc)
    else:
        moment = datetime.fromtimestamp(float(value), tz=timezone.utc)
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def _round_of(batch_id: str, api: Mapping[str, Any], rounds: Sequence[Sequence[str]]) -> tuple[int, str]:
    parsed = parse_label((api.get("metadata") or {}).get(TAG_SHARD))
    if parsed is not None:
        return parsed.round, str((api.get("metadata") or {}).get(TAG_SHARD))
    for number, ids in enumerate(rounds):
        if batch_id in ids:
            return number, f"{list(ids).index(batch_id)}/{len(ids)}" if number == 0 else f"r{number}"
    return 0, ""


def _dashboard(first_url: str | None, first_id: str | None, batch_id: str) -> str | None:
    if not first_url or not first_id:
        return None
    return first_url.replace(first_id, batch_id) if first_id in first_url else first_url


def batch_view(
    batch_id: str,
    api: Mapping[str, Any] | None,
    shard: Mapping[str, Any] | None,
    task: BatchTask,
    prices: Mapping[str, Any] | None,
) -> BatchView:
    """One batch: the API's answer when there is one, else the BatchResult's summary of it."""
    data: Mapping[str, Any] = api or shard or {}
    counts = data.get("request_counts") or {}
    done, failed, total = done_of(counts)
    status = str(data.get("status") or ("unknown" if task.state != "deferred" else "waiting for the API"))
    rounds = (task.result or {}).get("rounds") or [task.batch_ids]
    round_no, label = _round_of(batch_id, api or {}, rounds)
    created = data.get("created_at")
    expected = data.get("expires_at") or (
        created + _WINDOW_SECONDS if isinstance(created, int | float) else None
    )
    ended = next(
        (data[k] for k in ("completed_at", "failed_at", "expired_at", "cancelled_at") if data.get(k)), None
    )
    cost = None
    if api and api.get("usage") and prices is not None:
        cost = cost_of_usage(api.get("model"), api["usage"], prices).get("total_usd")
    first_id = task.batch_ids[0] if task.batch_ids else (task.result or {}).get("batch_id")
    return BatchView(
        batch_id=batch_id,
        round_no=round_no,
        label=label,
        status=status,
        total=total,
        completed=int(counts.get("completed") or 0),
        failed=failed,
        percent=percent(done, total),
        created=_when(created),
        expected_by=_when(expected),
        ended=_when(ended),
        cost_so_far=cost,
        metadata={str(k): str(v) for k, v in (data.get("metadata") or {}).items() if k not in _OWN_TAGS},
        dashboard_url=_dashboard(task.dashboard_url, first_id, batch_id),
        live=status not in TERMINAL,
    )


def task_view(
    task: BatchTask, api_batches: Mapping[str, Mapping[str, Any]], prices: Mapping[str, Any] | None
) -> TaskView:
    """A task with its batches, totals, costs, landed files and queue wait."""
    result = task.result or {}
    shards = {s["batch_id"]: s for s in result.get("shards") or [] if isinstance(s, Mapping)}
    batches = [batch_view(b, api_batches.get(b), shards.get(b), task, prices) for b in task.all_batch_ids()]
    batches.sort(key=lambda v: (v.round_no, v.label, v.batch_id))
    if result.get("request_counts"):
        done, failed, total = done_of(result["request_counts"])
    else:
        first_round = [b for b in batches if b.round_no == 0]
        counts = sum_counts(
            {"request_counts": {"total": b.total, "completed": b.completed, "failed": b.failed}}
            for b in first_round
        )
        done, failed, total = done_of(counts)
    cost = result.get("cost") or {}
    so_far = [b.cost_so_far for b in batches if b.cost_so_far is not None]
    wait = task.queue_wait
    return TaskView(
        dag_id=task.dag_id,
        run_id=task.run_id,
        task_id=task.task_id,
        map_index=task.map_index,
        logical_date=_when(task.logical_date) or "",
        state=task.state or "unknown",
        batches=batches,
        total=total,
        done=done,
        failed=failed,
        percent=percent(done, total),
        cost_so_far=round(sum(so_far), 6) if so_far else None,
        final_cost=cost.get("total_usd") if task.result else None,
        cost_note=cost.get("note") or cost.get("reason"),
        landed=[
            *(("output_path", str(path)) for path in result.get("output_paths") or ()),
            *(("error_path", str(path)) for path in result.get("error_paths") or ()),
            *((("manifest_path", str(result["manifest_path"])),) if result.get("manifest_path") else ()),
        ],
        queue_wait=(
            f"waiting for queue since {_when(wait.get('since'))}: {wait.get('reason') or ''}".rstrip(": ")
            if wait and task.state == "deferred"
            else None
        ),
    )


def group_runs(tasks: Sequence[TaskView]) -> list[RunView]:
    """Tasks grouped by DAG and DAG run, in the order given (newest logical date first)."""
    runs: dict[tuple[str, str], RunView] = {}
    for task in tasks:
        run = runs.setdefault(
            (task.dag_id, task.run_id), RunView(task.dag_id, task.run_id, task.logical_date)
        )
        run.tasks.append(task)
    return list(runs.values())


def matches_state(task: TaskView, state: str | None) -> bool:
    """The navigation page's state filter: the task's state, a batch's status, or ``waiting_for_queue``."""
    if not state:
        return True
    if state == "waiting_for_queue":
        return task.waiting_for_queue
    return task.state == state or any(b.status == state for b in task.batches)
