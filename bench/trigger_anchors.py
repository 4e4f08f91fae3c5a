"""The two anchor triggers of issue 10, as bench_trigger.py's ``openai-provider`` and ``common-ai`` pollers.

They are not dependencies of this project, so they run only in a bench-only interpreter passed as
``bench_trigger.py --python`` (a throwaway venv with apache-airflow-providers-openai 2.2 and
apache-airflow-providers-common-ai 1.0 installed next to this project; see docs/benchmarks.md). Each
trigger is built with the arguments its operator passes to ``defer`` (the operator's defaults, poll
interval from the bench) and run with ``run()`` exactly like ours, so the numbers compare the triggers
and nothing else.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

#: Connection ids of the anchors, pointed at the stub by ``connections()``.
OPENAI_PROVIDER_CONN_ID = "openai_bench_provider"
COMMON_AI_CONN_ID = "llm_bench_common_ai"
#: The operators' default ``timeout`` (24 h, OpenAI's completion window); the bench never reaches it.
OPERATOR_TIMEOUT = 24 * 60 * 60
#: Terminal event statuses of a completed batch, per anchor.
SUCCESS = {"openai-provider": "success", "common-ai": "success"}


def connections(api_key: str, base_url: str) -> dict[str, dict]:
    """
    Connections of the anchors, in the shape of ``AIRFLOW_CONN_<ID>`` JSON, both aimed at the stub.

    :param api_key: The API key both connections carry (a bench placeholder, not a secret).
    :param base_url: The stub's base URL including ``/v1``, read by both from the connection's host.
    """
    return {
        OPENAI_PROVIDER_CONN_ID: {"conn_type": "openai", "password": api_key, "host": base_url},
        COMMON_AI_CONN_ID: {"conn_type": "pydanticai", "password": api_key, "host": base_url},
    }


def make_trigger(poller: str, batch_id: str, interval: float):
    """
    Build one anchor trigger as its operator's ``execute`` would when deferring.

    ``LLMBatchOperator`` refuses a poll interval under 30 s; the trigger itself does not, and the
    workload of issue 10 polls every 10 s, so the trigger is built directly with the bench's interval.

    :param poller: ``"openai-provider"`` or ``"common-ai"``.
    :param batch_id: The batch the trigger waits on.
    :param interval: The poll interval in seconds.
    """
    if poller == "openai-provider":
        from airflow.providers.openai.triggers.openai import OpenAIBatchTrigger

        return OpenAIBatchTrigger(
            conn_id=OPENAI_PROVIDER_CONN_ID,
            batch_id=batch_id,
            poll_interval=interval,
            timeout=OPERATOR_TIMEOUT,
        )
    if poller == "common-ai":
        from airflow.providers.common.ai.triggers.llm_batch import LLMBatchTrigger

        return LLMBatchTrigger(
            llm_conn_id=COMMON_AI_CONN_ID,
            adapter="openai",
            batch_id=batch_id,
            poll_interval=interval,
            end_time=time.time() + OPERATOR_TIMEOUT,
            timeout=OPERATOR_TIMEOUT,
            cancel_on_kill=True,
            cancel_on_timeout=True,
        )
    raise ValueError(f"Expected poller 'openai-provider' or 'common-ai' but received {poller!r}")


def make_watch(
    poller: str, interval: float, events: dict[str, list[float]]
) -> Callable[[str], Awaitable[None]]:
    """
    Return ``watch(batch_id)``, which runs one anchor trigger to its event and records the event's time.

    :param poller: ``"openai-provider"`` or ``"common-ai"``.
    :param interval: The poll interval in seconds.
    :param events: Event times per batch id, appended to by ``watch``.
    """
    make_trigger(poller, "batch_import_check", interval)  # import the provider before the clock starts

    async def watch(batch_id: str) -> None:
        async for event in make_trigger(poller, batch_id, interval).run():
            events[batch_id].append(time.time())
            if event.payload["status"] != SUCCESS[poller]:
                raise RuntimeError(
                    f"Expected a {SUCCESS[poller]!r} event for {batch_id} but received {event.payload!r}"
                )

    return watch
