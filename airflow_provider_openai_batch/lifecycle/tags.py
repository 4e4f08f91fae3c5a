"""The tags every batch carries, so it can be found again: who made it, for which input, and its place.

``airflow_task`` is the partition key (dag, task, map index, logical date), ``airflow_input`` the input fingerprint,
``airflow_shard`` the batch's label (``"i/n"`` for shard i of n, ``"rR.i/n"`` for follow-up round R) and
``airflow_run_id`` the DAG run. Readable ``airflow_dag_id`` / ``airflow_task_id`` tags are added while the API's 16
pairs leave room after the user's own metadata, so a batch can be traced from OpenAI's dashboard.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

TAG_KEY, TAG_INPUT, TAG_SHARD, TAG_RUN = "airflow_task", "airflow_input", "airflow_shard", "airflow_run_id"
TAG_DAG, TAG_TASK = "airflow_dag_id", "airflow_task_id"
CORE_TAGS = (TAG_KEY, TAG_INPUT, TAG_SHARD, TAG_RUN)
READABLE_TAGS = (TAG_DAG, TAG_TASK)
MAX_METADATA_PAIRS, MAX_KEY_CHARS, MAX_VALUE_CHARS = 16, 64, 512
MAX_USER_METADATA = MAX_METADATA_PAIRS - len(CORE_TAGS)


def label(
    round_no: int, index: int, total: int, *, include_cancelled: bool = False, invalid_output: bool = False
) -> str:
    """A batch's place: ``"i/n"`` for shard i of the input, ``"rR.i/n"`` for follow-up round R (``"rRc.i/n"``
    when it also resent what a cancel stopped, ``"rRv.i/n"`` when it resent invalid structured answers)."""
    if round_no == 0:
        return f"{index}/{total}"
    kind = ("c" if include_cancelled else "") + ("v" if invalid_output else "")
    return f"r{round_no}{kind}.{index}/{total}"


@dataclass(frozen=True)
class Label:
    round: int
    index: int
    total: int
    include_cancelled: bool = False
    invalid_output: bool = False


def parse_label(text: Any) -> Label | None:
    try:
        head, _, total = str(text).partition("/")
        if head.startswith("r"):
            round_part, _, index = head[1:].partition(".")
            number = round_part.rstrip("cv")
            kind = round_part[len(number) :]
            return Label(int(number), int(index), int(total), "c" in kind, "v" in kind)
        return Label(0, int(head), int(total))
    except ValueError:
        return None


# -------------------------------------------------------------------------------------------- identity
@dataclass(frozen=True)
class TaskIdentity:
    """Who submits: the keys of the partition and of the DAG run, and readable tags for the dashboard."""

    dag_id: str
    task_id: str
    run_id: str
    map_index: int = -1
    logical_date: str | None = None

    @classmethod
    def from_context(cls, context: Any) -> TaskIdentity:
        ti = context["ti"]
        map_index = getattr(ti, "map_index", -1)
        date = context.get("logical_date")
        return cls(
            dag_id=ti.dag_id,
            task_id=ti.task_id,
            run_id=ti.run_id,
            map_index=-1 if map_index is None else int(map_index),
            logical_date=date.isoformat() if date is not None else None,
        )

    @property
    def partition_key(self) -> str:
        """Same DAG, task, map index and logical date (or run, for runs without one): same key."""
        scope = self.logical_date if self.logical_date is not None else f"run:{self.run_id}"
        return _digest([self.dag_id, self.task_id, self.map_index, scope])

    @property
    def readable_task(self) -> str:
        return self.task_id if self.map_index < 0 else f"{self.task_id}[{self.map_index}]"


def _digest(parts: list[Any]) -> str:
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:32]


def check_user_metadata(metadata: dict[str, Any] | None) -> dict[str, str]:
    """The user's metadata as strings, within what the tags leave of the API's limits."""
    metadata = {str(k): str(v) for k, v in (metadata or {}).items()}
    if len(metadata) > MAX_USER_METADATA:
        raise ValueError(
            f"Expected at most {MAX_USER_METADATA} `metadata` pairs (the operator adds {len(CORE_TAGS)}) "
            f"but received {len(metadata)}"
        )
    for key, value in metadata.items():
        if key in CORE_TAGS or key in READABLE_TAGS:
            raise ValueError(f"Expected `metadata` keys other than the operator's own but received {key!r}")
        if len(key) > MAX_KEY_CHARS or len(value) > MAX_VALUE_CHARS:
            raise ValueError(
                f"Expected `metadata` keys of at most {MAX_KEY_CHARS} and values of at most {MAX_VALUE_CHARS} "
                f"characters but key {key!r} has {len(key)} and its value {len(value)}"
            )
    return metadata


def build_metadata(
    identity: TaskIdentity, fingerprint: str, lbl: str, user: dict[str, str]
) -> dict[str, str]:
    """Tags that find the batch again, readable ones while the 16 pairs allow, then the user's own."""
    tags = {
        TAG_KEY: identity.partition_key,
        TAG_INPUT: fingerprint,
        TAG_SHARD: lbl,
        TAG_RUN: identity.run_id[:MAX_VALUE_CHARS],
    }
    readable = {TAG_DAG: identity.dag_id, TAG_TASK: identity.readable_task}
    room = MAX_METADATA_PAIRS - len(tags) - len(user)
    for key, value in list(readable.items())[: max(room, 0)]:
        tags[key] = value[:MAX_VALUE_CHARS]
    return {**user, **tags}
