"""Many dated task instances in flight at once, as Airflow's workers and one triggerer run them.

``dag.test()`` runs one DAG run at a time, and one deferred task at a time within it, so it never shows
several dates waiting for the same batch queue together. :func:`run_backfill` does: each date's task runs
on its own thread (a worker), every deferral hands its trigger, serialized and rebuilt as Airflow does, to
one shared event loop (the triggerer, where the triggers share one status board), and the event comes back
to ``execute_complete`` through JSON. A failed try is retried like Airflow's ``retries``, with the task
state store kept across tries, so "0 retries used" is a measurement, not an assumption.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from typing import Any

import pendulum
from airflow.sdk import BaseOperator

try:
    from airflow.sdk.exceptions import TaskDeferred
except ImportError:  # Airflow 3.1
    from airflow.exceptions import TaskDeferred  # type: ignore[no-redef]

DAG_ID = "backfill"


@dataclass
class DateRun:
    """What one date's task instance did: its tries, what each failed try raised, its XComs."""

    date: str
    tries: int = 0
    errors: list[BaseException] = field(default_factory=list)
    result: Any = None
    xcoms: dict[str, Any] = field(default_factory=dict)
    state: dict[str, Any] = field(default_factory=dict)  # the task state store, kept across tries

    @property
    def succeeded(self) -> bool:
        return self.tries > len(self.errors)

    @property
    def retries_used(self) -> int:
        return max(0, self.tries - 1)


class _TaskInstance:
    """What the operator reads from ``context["ti"]``; XComs go to the date's run."""

    def __init__(self, run: DateRun, task_id: str) -> None:
        self.dag_id, self.task_id, self.run_id, self.map_index = DAG_ID, task_id, f"backfill__{run.date}", -1
        self._run = run

    def xcom_push(self, key: str, value: Any) -> None:
        self._run.xcoms[key] = json.loads(json.dumps(value))


class _StateStore:
    def __init__(self, values: dict[str, Any]) -> None:
        self._values = values

    def get(self, key: str, default: Any = None) -> Any:
        return self._values.get(key, default)

    def set(self, key: str, value: Any) -> None:
        self._values[key] = json.loads(json.dumps(value))


class Triggerer:
    """One event loop on its own thread: every trigger runs there, as on one triggerer."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="triggerer", daemon=True)
        self.triggers = 0

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()

    def run(self, trigger: Any, timeout: float) -> dict[str, Any]:
        """The trigger's first event, after rebuilding it from its serialized form (as the triggerer does)."""
        classpath, kwargs = trigger.serialize()
        module, _, name = classpath.rpartition(".")
        rebuilt = getattr(importlib.import_module(module), name)(**json.loads(json.dumps(kwargs)))
        self.triggers += 1
        payload = asyncio.run_coroutine_threadsafe(_first_event(rebuilt), self.loop).result(timeout)
        return json.loads(json.dumps(payload))


async def _first_event(trigger: Any) -> Any:
    async for event in trigger.run():
        return event.payload
    raise RuntimeError(f"{type(trigger).__name__} ended without an event")


@contextmanager
def triggerer() -> Iterator[Triggerer]:
    shared = Triggerer()
    shared.start()
    try:
        yield shared
    finally:
        shared.stop()


def run_backfill(
    make_operator: Callable[[str], BaseOperator],
    dates: list[str],
    *,
    retries: int = 2,
    timeout: float = 120.0,
    on_triggerer: Triggerer | None = None,
) -> dict[str, DateRun]:
    """Run one task instance per date, all at once; each try to its end, at most ``retries`` retries.

    :param make_operator: the date's operator (a new one per try, as a worker parses the DAG again).
    :param on_triggerer: the shared triggerer (one is started for the call when None).
    :return: each date's run.
    """
    runs = {date: DateRun(date) for date in dates}
    with nullcontext(on_triggerer) if on_triggerer else triggerer() as shared:
        threads = [
            threading.Thread(
                target=_run_date, args=(make_operator, runs[d], retries, shared, timeout), name=f"worker-{d}"
            )
            for d in dates
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout + 30)
    stuck = [t.name for t in threads if t.is_alive()]
    assert not stuck, f"task instances still running after {timeout} s: {stuck}"
    return runs


def _run_date(
    make_operator: Callable[[str], BaseOperator],
    run: DateRun,
    retries: int,
    shared: Triggerer,
    timeout: float,
) -> None:
    while run.tries <= retries:
        run.tries += 1
        try:
            run.result = _one_try(make_operator(run.date), run, shared, timeout)
            return
        except Exception as err:  # a failed try; Airflow would retry it
            run.errors.append(err)


def _one_try(operator: BaseOperator, run: DateRun, shared: Triggerer, timeout: float) -> Any:
    """``execute``, then the method each deferral names with its trigger's event, until the try ends."""
    context: dict[str, Any] = {
        "ti": _TaskInstance(run, operator.task_id),
        "logical_date": pendulum.parse(run.date),
        "ds": run.date,
        "task_state_store": _StateStore(run.state),
    }
    method, kwargs = operator.execute, {}
    while True:
        try:
            return method(context, **kwargs)
        except TaskDeferred as deferred:
            kwargs = {"event": shared.run(deferred.trigger, timeout)}
            method = getattr(operator, deferred.method_name)
