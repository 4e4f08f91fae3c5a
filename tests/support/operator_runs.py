"""Helpers for tests that run the operator through Airflow: the outcome DAG's parameters, the exceptions the
operator raised (``dag.test()`` records a failed task but does not raise), and a person acting beside the run.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from typing import Any

import pytest

from airflow_provider_openai_batch.operators.openai_batch import OpenAIBatchOperator

OUTCOME_DAG = "openai_batch_outcome"


def configure_outcome_dag(monkeypatch: Any, **kwargs: Any) -> None:
    """The operator arguments of the outcome DAG (tests/dags/outcome_dags.py), read when the DAG is parsed."""
    monkeypatch.setenv("OPENAI_BATCH_OUTCOME_KWARGS", json.dumps(kwargs))


def record_raised(monkeypatch: Any) -> list[BaseException]:
    """Record the exceptions the operator's ``execute`` / ``execute_complete`` raise, in order.

    Deferral (``TaskDeferred``) is not recorded, and an exception passing through both methods is recorded once.

    :return: the list the exceptions are appended to.
    """
    seen: list[BaseException] = []
    for name in ("execute", "execute_complete"):
        original = getattr(OpenAIBatchOperator, name)

        def spy(self: Any, *args: Any, __original: Any = original, **kwargs: Any) -> Any:
            try:
                return __original(self, *args, **kwargs)
            except BaseException as err:
                if type(err).__name__ != "TaskDeferred" and not any(e is err for e in seen):
                    seen.append(err)
                raise

        monkeypatch.setattr(OpenAIBatchOperator, name, spy)
    return seen


@pytest.fixture(name="raised")
def raised_fixture(monkeypatch: Any) -> list[BaseException]:
    """The ``raised`` fixture: :func:`record_raised` for the test. A test module registers it by importing it
    (``from tests.support.operator_runs import raised_fixture  # noqa: F401``)."""
    return record_raised(monkeypatch)


def only_error(raised: list[BaseException], cls: type) -> BaseException:
    """The one exception raised, checked to be exactly of ``cls`` (not a subclass, not two of them)."""
    assert len(raised) == 1, raised
    assert type(raised[0]) is cls, repr(raised[0])
    return raised[0]


def in_background(fn: Callable[[], Any]) -> threading.Thread:
    """Run ``fn`` in a daemon thread (a person acting while the DAG runs); :func:`join_checked` surfaces its errors."""
    errors: list[BaseException] = []

    def run() -> None:
        try:
            fn()
        except BaseException as err:  # surfaced by join_checked
            errors.append(err)

    thread = threading.Thread(target=run, daemon=True)
    thread.errors = errors  # type: ignore[attr-defined]
    thread.start()
    return thread


def join_checked(thread: threading.Thread, timeout: float = 30) -> None:
    """Wait for a :func:`in_background` thread and fail the test with what it raised."""
    thread.join(timeout)
    assert not thread.is_alive()
    assert not thread.errors, thread.errors  # type: ignore[attr-defined]
