"""The one progress line per change per batch, for those who read the log: counts, percentage, rate and ETA.

``Batch batch_abc in_progress: 12,000/50,000 requests, 24%, 150 failed, ~2,100/min, ETA 18 min``. The rate
is measured from the first time this waiter saw the batch (the list answers carry no per-request times), so
the first line of a wait has none. Pure: the trigger and the in-place wait keep a :class:`RateMeter` each and
call :func:`progress_line`; the batch page uses the same :func:`percent`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


def done_of(counts: Mapping[str, Any]) -> tuple[int, int, int]:
    """``(done, failed, total)`` of ``request_counts``: done counts completed and failed requests."""
    completed = int(counts.get("completed") or 0)
    failed = int(counts.get("failed") or 0)
    return completed + failed, failed, int(counts.get("total") or 0)


def percent(done: int, total: int) -> int:
    """Whole percent done, never 100 before every request is done (a bar at 100% must mean finished)."""
    if total <= 0:
        return 0
    value = done * 100 // total
    return 99 if value == 100 and done < total else min(value, 100)


@dataclass
class RateMeter:
    """Requests per minute of each batch since it was first seen, from ``(time, done)`` samples."""

    first: dict[str, tuple[float, int]] = field(default_factory=dict)

    def observe(self, batch_id: str, counts: Mapping[str, Any], now: float) -> float | None:
        """Record a sample; the rate since the first one, or None before there is any progress to measure."""
        done = done_of(counts)[0]
        start = self.first.setdefault(batch_id, (now, done))
        elapsed, moved = now - start[0], done - start[1]
        if elapsed <= 0 or moved <= 0:
            return None
        return moved * 60.0 / elapsed


def _eta(minutes: float) -> str:
    if minutes < 1:
        return "ETA <1 min"
    if minutes < 120:
        return f"ETA {round(minutes)} min"
    return f"ETA {minutes / 60:.1f} h"


def progress_line(batch_id: str, status: Any, counts: Mapping[str, Any], rate_per_min: float | None) -> str:
    """One log line for a batch whose status or counts changed.

    :param batch_id: the batch.
    :param status: its status as the API reported it (None before the first answer).
    :param counts: its ``request_counts`` (``total``, ``completed``, ``failed``).
    :param rate_per_min: requests done per minute (:meth:`RateMeter.observe`), None when not measured yet.
    """
    done, failed, total = done_of(counts)
    head = f"Batch {batch_id} {status}"
    if total <= 0:
        return f"{head}: no request counts yet"
    parts = [f"{done:,}/{total:,} requests", f"{percent(done, total)}%"]
    if failed:
        parts.append(f"{failed:,} failed")
    if rate_per_min and done < total:
        parts.append(f"~{round(rate_per_min):,}/min")
        parts.append(_eta((total - done) / rate_per_min))
    return f"{head}: {', '.join(parts)}"
