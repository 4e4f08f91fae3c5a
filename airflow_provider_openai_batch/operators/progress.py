"""What a running try shows of itself, apart from deciding anything: the XComs the extra link and the batch
pages read (batch ids, connection, page URL, the queue wait), the gauges, and the log lines saying which batches
are reused and what waits for room. The operator's run loop calls it at each step; nothing here changes what is
paid for or landed, so a failure to show is logged, never a failed try.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from airflow_provider_openai_batch import metrics
from airflow_provider_openai_batch.lifecycle.ledger import Ledger
from airflow_provider_openai_batch.lifecycle.queue import describe
from airflow_provider_openai_batch.lifecycle.record import SubmissionRecord
from airflow_provider_openai_batch.lifecycle.state import RunState
from airflow_provider_openai_batch.lifecycle.tags import TAG_RUN
from airflow_provider_openai_batch.links.openai_batch import (
    BATCH_CONN_XCOM_KEY,
    BATCH_IDS_XCOM_KEY,
    BATCH_URL_XCOM_KEY,
    QUEUE_WAIT_XCOM_KEY,
)
from airflow_provider_openai_batch.statuses import TERMINAL

log = logging.getLogger(__name__)


@dataclass
class Progress:
    """What one try has shown so far, so that each XCom is pushed again only when it changes.

    :param conn_id: the connection the batch pages read the batches through.
    :param page_url: the batch page of a batch id (the hook's ``dashboard_url``).
    """

    conn_id: str
    page_url: Callable[[str], str]
    published: list[str] = field(default_factory=list)  # the batch ids last pushed to XCom
    queue_shown: bool = False  # whether a queue wait the batch pages show was pushed
    finished_before: set[str] = field(
        default_factory=set
    )  # batches already terminal when this try found them
    batch_page_url: str | None = None  # the page of the batch the task works on (the extra link)

    def reused(self, ledger: Ledger, record: SubmissionRecord) -> None:
        """Say which batches this try reuses (nothing new is paid for them) and remember the finished ones."""
        for batch_id in record.batches.values():
            batch = ledger.seen.get(batch_id) or {}
            status = batch.get("status")
            origin = (
                f"created by DAG run {(batch.get('metadata') or {}).get(TAG_RUN)!r}"
                if batch_id in record.adopted
                else "created by an earlier try"
            )
            if status in TERMINAL:
                self.finished_before.add(batch_id)
                log.info("Re-landing batch %s (%s, %s): nothing new paid", batch_id, origin, status)
            else:
                log.info("Re-attaching to batch %s (%s, %s): nothing new paid", batch_id, origin, status)

    def relanded(self, batch_ids: list[str]) -> bool:
        """True when every batch had finished before this try began: it paid and waited for nothing."""
        return set(batch_ids) <= self.finished_before

    def publish(self, context: Mapping[str, Any], state: RunState) -> None:
        """Push the batch ids and the link's page whenever the batches the task knows change: before waiting,
        and also on a re-land after a clear (Airflow cleared the XComs, nothing else pushes them again)."""
        ids = [b for rnd in state.rounds for b in rnd]
        if not ids or ids == self.published:
            return
        self.published = ids
        context["ti"].xcom_push(key=BATCH_IDS_XCOM_KEY, value=ids)
        context["ti"].xcom_push(key=BATCH_CONN_XCOM_KEY, value=self.conn_id)
        if not state.current:  # every shard of this round waits for queue room: no batch to show yet
            return
        try:
            self.batch_page_url = self.page_url(state.current[0])
        except Exception as err:  # a link is never worth failing a paid batch's try for
            log.warning("No extra link for batch %s: %s", state.current[0], type(err).__name__)
            return
        context["ti"].xcom_push(key=BATCH_URL_XCOM_KEY, value=self.batch_page_url)

    def waiting(self, context: Mapping[str, Any], state: RunState, room: bool) -> None:
        """The gauges, and the queue wait the batch pages show (pushed while waiting for room, cleared after)."""
        tags = metrics.tags_of(context)
        waiting = len(state.queue.waiting) if room else 0
        metrics.in_flight(len(state.current), tags)
        metrics.waiting_for_queue(waiting, tags)
        if room:
            line = state.queue.said or f"{waiting} shard(s) wait for room in the {state.model} batch queue"
            context["ti"].xcom_push(
                key=QUEUE_WAIT_XCOM_KEY, value={"since": state.queue.since or time.time(), "reason": line}
            )
            self.queue_shown = True
        elif self.queue_shown:
            context["ti"].xcom_push(key=QUEUE_WAIT_XCOM_KEY, value=None)
            self.queue_shown = False


def say_waiting(state: RunState) -> None:
    """Log what waits for room, once per change."""
    line = describe(state.model, state.queue, state.queue.waiting)
    if line != state.queue.said:
        state.queue.said = line
        log.info("%s", line)


@contextlib.contextmanager
def counting_creates(context: Mapping[str, Any], state: RunState) -> Iterator[None]:
    """Count the batches this task instance creates in the block (``openai_batch.batches_created``)."""
    before = len(state.record.own_batch_ids())
    try:
        yield
    finally:
        metrics.batches_created(len(state.record.own_batch_ids()) - before, metrics.tags_of(context))
