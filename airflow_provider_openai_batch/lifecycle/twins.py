"""The twin rule: for one partition key, shard label and input fingerprint, exactly one batch counts.

One create of ours can leave several batches with the same tags: a gateway re-sends ``POST /v1/batches`` when the
backend's answer is lost (LiteLLM's client does, up to twice), and two DAG runs of a date may create in the same
moment. Every side picks the same batch without talking to the others: the oldest one that was not rejected, by
``created_at`` and then id. A twin still validating has run nothing and is cancelled at once, unbilled; a twin that
already ran was billed, and is reported as paid twice, never hidden. Each run cancels only the twins it made (a
gateway's repeats of its own create); another run's twins are settled by that run. Pure: the ledger acts on it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from airflow_provider_openai_batch.lifecycle.tags import TAG_RUN, TAG_SHARD
from airflow_provider_openai_batch.statuses import REJECTED, STOPPED, TERMINAL, BatchStatus

#: A batch in one of these has run requests (and so was billed for them), or is running them now.
RAN = frozenset({BatchStatus.IN_PROGRESS.value, BatchStatus.FINALIZING.value, BatchStatus.COMPLETED.value})

Batch = Mapping[str, Any]


def age(batch: Batch) -> tuple[int, str]:
    """The order every side agrees on: created_at (whole seconds), then id."""
    return int(batch.get("created_at") or 0), str(batch["id"])


def counting(batches: Sequence[Batch]) -> Batch | None:
    """The batch that counts: the oldest not rejected and not stopped; when every twin was stopped, the oldest."""
    candidates = [b for b in batches if b["status"] not in REJECTED]
    live_or_done = [b for b in candidates if b["status"] not in STOPPED]
    return min(live_or_done or candidates, key=age, default=None)


def has_run(batch: Batch) -> bool:
    """Whether the batch ran requests (it was billed for them): running, finished, or stopped after some ran."""
    completed = int((batch.get("request_counts") or {}).get("completed") or 0)
    return batch["status"] in RAN or completed > 0


def made_by(batch: Batch, run_id: str, answered: str | None = None) -> str:
    """Who made a batch, in words: the create this try was answered with, a repeat of this run's create (a
    gateway's retry), or another DAG run."""
    run = (batch.get("metadata") or {}).get(TAG_RUN)
    if batch["id"] == answered:
        return "this try's create"
    return "a repeated create (gateway retry) of this run" if run == run_id else f"DAG run {run!r}"


@dataclass(frozen=True)
class Settlement:
    """What becomes of a label's twins: ``keep`` counts, ``cancel`` are the live twins this run made, and
    ``paid_twice`` describes every twin that already ran."""

    keep: Batch
    cancel: tuple[str, ...]
    paid_twice: tuple[dict[str, Any], ...]


def settle(batches: Sequence[Batch], run_id: str) -> Settlement | None:
    """Apply the rule to the batches of one label and input (None when every one was rejected)."""
    keep = counting(batches)
    if keep is None:
        return None
    others = sorted((b for b in batches if b["id"] != keep["id"] and b["status"] not in REJECTED), key=age)
    cancel = tuple(
        b["id"]
        for b in others
        if b["status"] not in TERMINAL | STOPPED and (b.get("metadata") or {}).get(TAG_RUN) == run_id
    )
    return Settlement(keep, cancel, tuple(describe(b, keep, run_id) for b in others if has_run(b)))


def describe(twin: Batch, keep: Batch, run_id: str) -> dict[str, Any]:
    """A twin that ran, as the BatchResult's ``paid_twice`` lists it (JSON-safe)."""
    meta = twin.get("metadata") or {}
    return {
        "label": meta.get(TAG_SHARD),
        "batch_id": twin["id"],
        "status": twin["status"],
        "completed": int((twin.get("request_counts") or {}).get("completed") or 0),
        "run_id": meta.get(TAG_RUN),
        "made_by": made_by(twin, run_id),
        "counted_batch_id": keep["id"],
    }
