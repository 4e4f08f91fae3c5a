"""The provider's metrics, sent through Airflow's ``Stats`` (StatsD, Datadog or OpenTelemetry, as ``[metrics]`` says).

Names are ``openai_batch.*`` (under Airflow's ``statsd_prefix``), tagged with ``dag_id`` and ``task_id``; a
backend without tags (plain StatsD without ``statsd_influxdb_enabled``) gets the bare names, so its gauges
hold the last task's value. docs/observability.md lists them. Metrics never fail a task: a backend error is
logged and dropped.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any

from airflow_provider_openai_batch.version_compat import Stats

log = logging.getLogger(__name__)

PREFIX = "openai_batch"
#: Terminal statuses counted as ``openai_batch.batches_<status>`` when a task lands its batches.
COUNTED_STATUSES = ("completed", "failed", "expired", "cancelled")


def tags_of(context: Mapping[str, Any]) -> dict[str, str]:
    """``dag_id`` and ``task_id`` of a task's context."""
    ti = context.get("ti") or context.get("task_instance")
    return {"dag_id": str(getattr(ti, "dag_id", "")), "task_id": str(getattr(ti, "task_id", ""))}


def _send(kind: str, name: str, value: float, tags: Mapping[str, str]) -> None:
    try:
        if kind == "incr":
            Stats.incr(f"{PREFIX}.{name}", int(value), tags=dict(tags))
        elif kind == "gauge":
            Stats.gauge(f"{PREFIX}.{name}", value, tags=dict(tags))
        else:
            Stats.timing(f"{PREFIX}.{name}", value, tags=dict(tags))
    except Exception as err:  # a metrics backend is never worth a failed batch task
        log.warning("Could not send metric %s.%s: %s", PREFIX, name, type(err).__name__)


def batches_created(count: int, tags: Mapping[str, str]) -> None:
    if count > 0:
        _send("incr", "batches_created", count, tags)


def in_flight(count: int, tags: Mapping[str, str]) -> None:
    """Gauge: the task's batches not yet terminal (0 once it lands)."""
    _send("gauge", "batches_in_flight", count, tags)


def waiting_for_queue(count: int, tags: Mapping[str, str]) -> None:
    """Gauge: the task's batches waiting for room in the organisation's queue (issue 15's wait step)."""
    _send("gauge", "batches_waiting_for_queue", count, tags)


def landed(
    batches: Iterable[Mapping[str, Any]],
    result: Mapping[str, Any],
    *,
    seconds: float,
    landed_bytes: int | None,
    tags: Mapping[str, str],
) -> None:
    """What a landing finished: terminal batches by status, requests, estimated cost, bytes and time."""
    by_status: dict[str, int] = {}
    for batch in batches:
        status = str(batch.get("status"))
        if status in COUNTED_STATUSES:
            by_status[status] = by_status.get(status, 0) + 1
    for status, count in sorted(by_status.items()):
        _send("incr", f"batches_{status}", count, tags)
    counts = result.get("request_counts") or {}
    for key in ("completed", "failed"):
        if counts.get(key):
            _send("incr", f"requests_{key}", int(counts[key]), tags)
    usd = (result.get("cost") or {}).get("total_usd")
    if usd is not None:
        _send("gauge", "estimated_cost_usd", float(usd), tags)
    if landed_bytes is not None:
        _send("incr", "landing_bytes", landed_bytes, tags)
    _send("timing", "landing_duration", seconds * 1000.0, tags)  # StatsD timers are in milliseconds
    in_flight(0, tags)
