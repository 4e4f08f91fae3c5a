"""The organisation's batch queue, as one try sees it: which shards wait for room, the model's limit, and why.

OpenAI caps, per organisation and model, the prompt tokens of batches validating, in progress or finalizing.
A batch over the cap is accepted, then fails with ``token_limit_exceeded`` alone: nothing ran and nothing is
billed. For this provider that means "wait for room, then create the same shard again from its upload", never
a failed try. :class:`QueueState` is what the planner needs to decide that (pure data, carried in the run
state through the trigger's context); :func:`is_queue_full` and :func:`limit_in` read a batch.

Where the limit comes from: ``[openai_batch] enqueued_token_limits`` (configured), else the message of the
first ``token_limit_exceeded`` failure (learned). A learned limit lives in this state, which travels with the
try; the operator cuts the input again under it in the same try, so it reaches the next create of the task. A
later try reads it from the record, or (no record: Airflow before 3.3) from the refused batch the ledger's search
finds (:func:`learned_limits`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from airflow_provider_openai_batch.lifecycle.tags import parse_label
from airflow_provider_openai_batch.statuses import QUEUED, BatchStatus, ErrorCode

#: Most list pages one look for queue room reads (100 batches a page at most).
ROOM_MAX_PAGES = 10
#: Whole looks in a row a queue holder may be missing from before it is taken to have left.
UNSEEN_LOOKS = 3
_LIMIT = re.compile(r"Limit:\s*([\d,]+)\s*enqueued tokens", re.IGNORECASE)
_MODEL = re.compile(r"limit reached for (\S+) in organization", re.IGNORECASE)
CONFIG_OPTION = "enqueued_token_limits"


def errors_of(batch: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    data = (batch.get("errors") or {}).get("data") if isinstance(batch.get("errors"), Mapping) else None
    return [e for e in data or [] if isinstance(e, Mapping)]


def is_queue_full(batch: Mapping[str, Any]) -> bool:
    """A batch that failed only because its model's queue was full: free, and worth creating again later."""
    errors = errors_of(batch)
    return (
        batch.get("status") == BatchStatus.FAILED.value
        and bool(errors)
        and all(e.get("code") == ErrorCode.TOKEN_LIMIT_EXCEEDED.value for e in errors)
    )


def limit_in(batch: Mapping[str, Any]) -> int | None:
    """The limit a ``token_limit_exceeded`` message names ("Limit: 2,000,000 enqueued tokens"), if any."""
    for error in errors_of(batch):
        found = _LIMIT.search(str(error.get("message") or ""))
        if found:
            return int(found.group(1).replace(",", ""))
    return None


def learned_limits(batches: Sequence[Mapping[str, Any]]) -> dict[str, int]:
    """Model to the limit the newest ``token_limit_exceeded`` refusal among ``batches`` (newest first) names.

    The model is the one the message names, else the batch's, else ``"*"`` (any model).
    """
    learned: dict[str, int] = {}
    for batch in batches:
        limit = limit_in(batch) if is_queue_full(batch) else None
        if limit is None:
            continue
        named = next(
            (m.group(1) for e in errors_of(batch) if (m := _MODEL.search(str(e.get("message"))))), None
        )
        learned.setdefault(named or str(batch.get("model") or "*"), limit)
    return learned


def configured_limits(raw: str | None) -> dict[str, int]:
    """``[openai_batch] enqueued_token_limits``: a JSON object of model to tokens (empty: none configured)."""
    if not raw or not raw.strip():
        return {}
    try:
        value = json.loads(raw)
    except ValueError:
        value = None
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and type(v) is int and v > 0 for k, v in value.items()
    ):
        raise ValueError(
            f"Expected [openai_batch] {CONFIG_OPTION} to be a JSON object of model to a positive number of "
            f'tokens, such as {{"gpt-4o-mini": 2000000}}, but received {raw!r}'
        )
    return value


@dataclass
class QueueState:
    """One try's view of its model's batch queue.

    :param limit: the model's enqueued-token limit, when known.
    :param learned: True when ``limit`` was read from a failure rather than configured.
    :param tokens: shard label to its prompt tokens (counted when a limit was known at spooling).
    :param waiting: the labels of shards waiting for room (of round 0 or a follow-up round), in round and shard
        order: their batch failed with a full queue, or they were held back because they could not fit.
    :param since: when the first of them started waiting (unix time); None when nothing waits.
    :param free_failures: batches that failed only for a full queue, so far in this try (free, never paid).
    :param last_create: when a shard that had waited was last created (one failed create per poll interval).
    :param said: the last "queue full" line logged, so the log says it once per change.
    """

    limit: int | None = None
    learned: bool = False
    tokens: dict[str, int] = field(default_factory=dict)
    waiting: list[str] = field(default_factory=list)
    since: float | None = None
    free_failures: int = 0
    last_create: float = 0.0
    said: str = ""

    def wait(self, labels: list[str], now: float) -> None:
        """These shards wait for room from ``now`` (the wait started at the first of them)."""
        self.waiting = sorted(set(self.waiting) | set(labels), key=_shard_order)
        if self.since is None:
            self.since = now

    def admitted(self, labels: list[str]) -> None:
        """These shards are about to be created; the wait ends when none is left."""
        self.waiting = [lbl for lbl in self.waiting if lbl not in labels]
        if not self.waiting:
            self.since = None

    def deadline(self, queue_timeout: float | None, task_deadline: float | None) -> float | None:
        """When waiting for room must end: the task's deadline, or ``queue_timeout`` after the first wait."""
        ends = [task_deadline]
        if self.since is not None and queue_timeout is not None:
            ends.append(self.since + queue_timeout)
        known = [t for t in ends if t is not None]
        return min(known) if known else None

    def unknown_sizes(self) -> list[str]:
        return [lbl for lbl in self.waiting if lbl not in self.tokens]

    def too_large(self) -> list[str]:
        limit = self.limit
        return [lbl for lbl in self.waiting if limit is not None and self.tokens.get(lbl, 0) > limit]

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Any) -> QueueState:
        if not isinstance(data, dict):
            return cls()
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})


def _shard_order(lbl: str) -> tuple[int, int, str]:
    parsed = parse_label(lbl)
    return (parsed.round, parsed.index, lbl) if parsed is not None else (0, 0, lbl)


def describe(model: str | None, queue: QueueState, labels: list[str]) -> str:
    """The task log's line for what waits: "gpt-4o-mini queue full: limit 2,000,000 tokens; shard 3/5 of
    380,000 tokens waits" (a follow-up round's shard: "round 1 shard 1/2")."""
    limit = f"limit {queue.limit:,} tokens" if queue.limit is not None else "limit not known yet"
    parts = []
    for lbl in labels:
        parsed = parse_label(lbl)
        place = "shard ?" if parsed is None else f"shard {parsed.index + 1}/{parsed.total}"
        if parsed is not None and parsed.round:
            place = f"round {parsed.round} {place}"
        size = f" of {queue.tokens[lbl]:,} tokens" if lbl in queue.tokens else ""
        parts.append(place + size)
    verb = "waits" if len(parts) == 1 else "wait"
    return f"{model or 'the model'} queue full: {limit}; {', '.join(parts)} {verb}"


# -- noticing room ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RoomRequest:
    """One waiting shard, as the status board (or the in-place wait) admits it.

    :param model: the model whose queue it waits for.
    :param tokens: its prompt tokens (0 when not counted).
    :param limit: the model's limit, when known.
    :param order: admission order: earliest logical date first, then shard order.
    :param not_before: unix time before which it is not admitted (one failed create per poll interval at most).
    """

    model: str | None
    tokens: int = 0
    limit: int | None = None
    order: tuple[str, int] = ("", 0)
    not_before: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "order": list(self.order)}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> RoomRequest:
        order = data.get("order") or ("", 0)
        return cls(
            model=data.get("model"),
            tokens=int(data.get("tokens") or 0),
            limit=data.get("limit"),
            order=(str(order[0]), int(order[1])),
            not_before=float(data.get("not_before") or 0.0),
        )


@dataclass
class RoomWatch:
    """Who holds each model's queue, as list pages show it, and who just left it (pure).

    A batch seen validating, in progress or finalizing holds room; one seen running (in progress or
    finalizing) and later in any other status left, freeing its ``usage.input_tokens`` (None when the API does
    not say). A batch that never ran (refused by a full queue, or rejected while validating) frees nothing.
    A batch whose model is not shown counts for every model, both ways.
    """

    live: dict[str, str | None] = field(default_factory=dict)
    ran: set[str] = field(default_factory=set)
    looked: bool = False  # whether a whole look (all the pages it needed) was taken before
    unseen: dict[str, int] = field(default_factory=dict)  # holder -> whole looks in a row it did not show in

    def wants_more(self, page: Sequence[Mapping[str, Any]], seen: set[str], pages: int) -> bool:
        """Whether a look should read the next (older) list page after ``pages`` of them: a batch known to
        hold a queue has not shown yet (its departure would be missed), or, on the first look, the page still
        held a queued batch (older ones may too). At most :data:`ROOM_MAX_PAGES` pages a look."""
        if pages >= ROOM_MAX_PAGES:
            return False
        if any(batch_id not in seen for batch_id in self.live):
            return True
        return not self.looked and any(item.get("status") in QUEUED for item in page)

    def observe(self, items: Sequence[Mapping[str, Any]]) -> dict[str | None, list[int | None]]:
        """Take one look's list pages (newest first); model to the tokens each departed batch freed.

        A holder that shows in none of :data:`UNSEEN_LOOKS` whole looks in a row (pushed past the pages a
        look reads by a busy organisation) is taken to have left, freeing a size not known: else it would
        hold its model's queue in this watch for ever. If it had not, the shard let in is refused for free
        and waits again.
        """
        departed: dict[str | None, list[int | None]] = {}
        self.looked = True
        shown = {item.get("id") for item in items}
        for holder, model in list(self.live.items()):
            if holder in shown:
                self.unseen.pop(holder, None)
                continue
            self.unseen[holder] = self.unseen.get(holder, 0) + 1
            if self.unseen[holder] >= UNSEEN_LOOKS:
                del self.live[holder], self.unseen[holder]
                if holder in self.ran:
                    self.ran.discard(holder)
                    departed.setdefault(model, []).append(None)
        for item in items:
            batch_id, status = item.get("id"), item.get("status")
            if not isinstance(batch_id, str):
                continue
            if status in QUEUED:
                self.live[batch_id] = item.get("model") or self.live.get(batch_id)
                if status != BatchStatus.VALIDATING.value:
                    self.ran.add(batch_id)
            elif batch_id in self.live:
                model = item.get("model") or self.live.get(batch_id)
                del self.live[batch_id]
                if batch_id in self.ran:
                    self.ran.discard(batch_id)
                    freed = (item.get("usage") or {}).get("input_tokens")
                    departed.setdefault(model, []).append(int(freed) if freed else None)
        return departed

    def holds(self, model: str | None) -> int:
        """Batches seen holding ``model``'s queue (those of unknown model included)."""
        return sum(1 for m in self.live.values() if m is None or m == model)


@dataclass
class Admission:
    """Admits waiting shards of one model in order, up to the room that departures are known to free."""

    credit: float = 0.0
    #: Seconds a shard let in is counted as holding room before its batch can show on the list.
    grace: float = 10.0
    pending: list[tuple[float, int]] = field(default_factory=list)  # (until, tokens) of shards let in

    def admit(
        self,
        waiting: list[RoomRequest],
        freed: list[int | None],
        holders: int,
        now: float,
    ) -> list[RoomRequest]:
        """The requests to wake now, in order: all that fit when nobody holds the queue (but the shards just
        let in), else those that fit in what left it (each departure lets at least the first waiter in)."""
        self.pending = [(until, tokens) for until, tokens in self.pending if until > now]
        queue = sorted((r for r in waiting if r.not_before <= now), key=lambda r: r.order)
        if not queue:
            return []
        limit = queue[0].limit
        if holders == 0:
            room = float(limit) if limit is not None else float("inf")
            self.credit = room - sum(tokens for _, tokens in self.pending)
        for tokens in freed:
            # A batch's usage counts the tokens the model saw, which may differ from our count of what it
            # held: a departure lets at least the first waiter in.
            self.credit += max(tokens or 0, queue[0].tokens, 1)
        if limit is not None:
            self.credit = min(self.credit, float(limit))
        admitted = []
        for request in queue:
            need = max(request.tokens, 1)  # a shard of unknown size waits for a departure like any other
            if need > self.credit:
                break  # order is kept: nobody overtakes the head of the line
            self.credit -= need
            self.pending.append((now + self.grace, need))
            admitted.append(request)
        return admitted
