"""Benchmark a backfill bigger than the organisation's batch queue: makespan against the ideal schedule.

    python bench/bench_queue.py --dates 8 --tokens 4000 --limit 10000 --seconds 6

N dated partitions of about T prompt tokens each run at once (one ``OpenAIBatchOperator`` per date, each in
its own thread; ``--mode deferred``, the default, runs every trigger in one shared event loop as a triggerer
does, so the status board admits waiting shards; ``in_place`` waits on each worker thread) against the
emulator with an enqueued-token limit of L for the model, each batch taking about D seconds (requests / rate).
The ideal schedule keeps the queue as full as whole batches allow: floor(L / T) batches at a time, each wave
taking D, so ``ceil(N / floor(L / T)) * D`` plus validation. Reported: makespan and its ratio to the ideal,
failed (queue-refused, free) creates per completed batch, billed creates, API calls, task failures. Goals:
makespan <= 1.25x ideal, failed creates <= 1 per completed batch, 0 task failures.

Without a limit configured in Airflow the first refusal teaches it (``--configured`` gives it up front).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("AIRFLOW__LOGGING__LOGGING_LEVEL", "WARNING")  # the tasks' log lines are not the result

from airflow_provider_openai_batch.cost.estimate import prompt_tokens  # noqa: E402
from airflow_provider_openai_batch.cost.tokens import token_counter  # noqa: E402
from airflow_provider_openai_batch.emulator.testing import start_emulator, stop_emulator  # noqa: E402

MODEL = "gpt-4o-mini"
CHAT = "/v1/chat/completions"
REQUESTS = 20  # per date


class _TI:
    """What the operator reads from ``context["ti"]`` outside a DAG run."""

    def __init__(self, date: str) -> None:
        self.dag_id, self.task_id, self.run_id, self.map_index = (
            "bench_queue",
            "classify",
            f"bench__{date}",
            -1,
        )

    def xcom_push(self, key: str, value: Any) -> None:
        pass


def write_dates(folder: Path, dates: list[str], tokens: int) -> int:
    """One input per date of about ``tokens`` prompt tokens; the tokens of one date as counted."""
    count = token_counter(MODEL).count
    size = 0
    for date in dates:
        per = max(1, tokens // REQUESTS)
        lines = []
        for j in range(REQUESTS):
            body = {"model": MODEL, "messages": [{"role": "user", "content": f"{date}-{j} " + "z " * per}]}
            lines.append({"custom_id": f"{date}-{j}", "method": "POST", "url": CHAT, "body": body})
        size = sum(prompt_tokens(x["body"], CHAT, count) for x in lines)
        (folder / f"{date}.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    return size


async def _first_event(trigger: Any) -> Any:
    async for event in trigger.run():
        return event.payload
    raise RuntimeError("the trigger ended without an event")


def run(args: argparse.Namespace) -> dict[str, Any]:
    import pendulum
    from airflow.sdk.exceptions import TaskDeferred

    from airflow_provider_openai_batch.operators.openai_batch import OpenAIBatchOperator

    dates = [f"2026-10-{d:02d}" for d in range(1, args.dates + 1)]
    with tempfile.TemporaryDirectory(prefix="bench-queue-") as tmp:
        root = Path(tmp)
        size = write_dates(root, dates, args.tokens)
        rate = REQUESTS / args.seconds
        emulator = start_emulator(
            root / "emulator",
            settings={"rate": rate, "validating_seconds": 0.5, "finalizing_seconds": 0.2},
        )
        try:
            emulator.configure(enqueued_token_limits={MODEL: args.limit})
            os.environ["AIRFLOW_CONN_OPENAI_DEFAULT"] = json.dumps(
                {"conn_type": "openai_batch", "host": emulator.base_url, "password": "sk-bench"}
            )
            if args.configured:
                os.environ["AIRFLOW__OPENAI_BATCH__ENQUEUED_TOKEN_LIMITS"] = json.dumps({MODEL: args.limit})
            failures: list[str] = []

            loop = (
                asyncio.new_event_loop()
            )  # the one "triggerer": every deferred wait shares its status board
            threading.Thread(target=loop.run_forever, daemon=True).start()

            def one(date: str) -> None:
                operator = OpenAIBatchOperator(
                    task_id="classify",
                    input_path=str(root / f"{date}.jsonl"),
                    output_path=str(root / "results" / date),
                    deferrable=args.mode == "deferred",
                    poll_interval=args.poll_interval,
                )
                context = {"ti": _TI(date), "logical_date": pendulum.parse(date), "task_state_store": None}
                try:
                    step = lambda: operator.execute(context)  # noqa: E731
                    while True:
                        try:
                            step()
                            return
                        except TaskDeferred as deferred:
                            event = asyncio.run_coroutine_threadsafe(
                                _first_event(deferred.trigger), loop
                            ).result()
                            step = lambda event=event: operator.execute_complete(context, event)  # noqa: E731
                except Exception as err:  # a task failure is a result here
                    failures.append(f"{date}: {type(err).__name__}: {err}")

            started = time.monotonic()
            threads = [threading.Thread(target=one, args=(d,)) for d in dates]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            makespan = time.monotonic() - started
            per_wave = max(1, args.limit // size)
            batch_seconds = args.seconds + 0.5 + 0.2
            ideal = math.ceil(len(dates) / per_wave) * batch_seconds
            paid, free = emulator.paid_creates(), emulator.free_creates()
            return {
                "mode": args.mode,
                "dates": len(dates),
                "tokens_per_date": size,
                "limit": args.limit,
                "batch_seconds": round(batch_seconds, 2),
                "makespan_s": round(makespan, 1),
                "ideal_s": round(ideal, 1),
                "ratio": round(makespan / ideal, 2),
                "billed_creates": len(paid),
                "failed_creates": len(free),
                "failed_per_completed": round(len(free) / max(1, len(paid)), 2),
                "api_calls": len(emulator.journal()),
                "task_failures": failures,
            }
        finally:
            emulator.close()
            if emulator.process is not None:
                stop_emulator(emulator.process)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dates", type=int, default=8, help="N dated partitions run at once")
    parser.add_argument("--tokens", type=int, default=4000, help="T: prompt tokens per date (about)")
    parser.add_argument("--limit", type=int, default=10000, help="L: the model's enqueued-token limit")
    parser.add_argument("--seconds", type=float, default=6.0, help="D: seconds a batch processes")
    parser.add_argument("--poll-interval", type=float, default=0.5)
    parser.add_argument("--configured", action="store_true", help="give L to Airflow too")
    parser.add_argument(
        "--mode",
        choices=("deferred", "in_place"),
        default="deferred",
        help="wait on one shared loop, or in place",
    )
    result = run(parser.parse_args())
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
