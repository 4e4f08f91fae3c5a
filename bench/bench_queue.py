"""Benchmark a backfill bigger than the organisation's batch queue: makespan against the ideal schedule.

    python bench/bench_queue.py --dates 8 --tokens 4000 --limit 10000 --seconds 6

N dated partitions of about T prompt tokens each run at once (one ``OpenAIBatchOperator`` per date on its own
worker thread, driven by tests/support/backfill.py; ``--mode deferred``, the default, runs every trigger in one
shared event loop as a triggerer does, so the status board admits waiting shards; ``in_place`` waits on each
worker thread) against the emulator with an enqueued-token limit of L for the model, each batch taking about
D seconds (requests / rate). The ideal schedule keeps the queue as full as whole batches allow: floor(L / T)
batches at a time, each wave taking D, so ``ceil(N / floor(L / T)) * D`` plus validation. Reported: makespan
and its ratio to the ideal, failed (queue-refused, free) creates per completed batch, billed creates, API calls,
task failures. Goals: makespan <= 1.25x ideal, failed creates <= 1 per completed batch, 0 task failures.

Measured in the same run, before the timed one: a warm-up date (the process's one-time imports) and a baseline,
the same N dates with no queue limit (one wave of D plus each task's fixed costs: spool, upload, create,
noticing the end, landing); ``ratio_to_ideal_plus_fixed`` divides by the ideal plus those fixed costs.

Without a limit configured in Airflow the first refusal teaches it (``--configured`` gives it up front).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("AIRFLOW__LOGGING__LOGGING_LEVEL", "WARNING")  # the tasks' log lines are not the result

from airflow_provider_openai_batch.cost.estimate import prompt_tokens  # noqa: E402
from airflow_provider_openai_batch.cost.tokens import token_counter  # noqa: E402
from airflow_provider_openai_batch.emulator.testing import start_emulator, stop_emulator  # noqa: E402
from tests.support.backfill import run_backfill  # noqa: E402

MODEL = "gpt-4o-mini"
CHAT = "/v1/chat/completions"
REQUESTS = 20  # per date


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


def backfill(root: Path, dates: list[str], args: argparse.Namespace, label: str) -> tuple[float, list[str]]:
    """Run one task instance per date at once (workers on threads, one shared triggerer loop); the makespan
    and the task failures."""
    from airflow_provider_openai_batch.operators.openai_batch import OpenAIBatchOperator

    def operator(date: str) -> OpenAIBatchOperator:
        return OpenAIBatchOperator(
            task_id=f"classify_{label}",  # another task per run: nothing of an earlier run is re-attached
            input_path=str(root / f"{date}.jsonl"),
            output_path=str(root / "results" / label / date),
            deferrable=args.mode == "deferred",
            poll_interval=args.poll_interval,
        )

    started = time.monotonic()
    runs = run_backfill(operator, dates, retries=0, timeout=600)
    failures = [f"{d}: {type(e).__name__}: {e}" for d, r in runs.items() for e in r.errors]
    return time.monotonic() - started, failures


def run(args: argparse.Namespace) -> dict[str, Any]:
    dates = [f"2026-10-{d:02d}" for d in range(1, args.dates + 1)]
    with tempfile.TemporaryDirectory(prefix="bench-queue-") as tmp:
        root = Path(tmp)
        size = write_dates(root, dates, args.tokens)
        settings = {"rate": REQUESTS / args.seconds, "validating_seconds": 0.5, "finalizing_seconds": 0.2}
        emulator = start_emulator(root / "emulator", settings=settings)
        try:
            os.environ["AIRFLOW_CONN_OPENAI_DEFAULT"] = json.dumps(
                {"conn_type": "openai_batch", "host": emulator.base_url, "password": "sk-bench"}
            )
            # Untimed: the process's first task pays its one-time imports (Airflow's filesystems, boto3,
            # tiktoken's tables), which a worker pays once and the queue has no part in.
            warm_up, _ = backfill(root, dates[:1], args, "warm_up")
            # Baseline, same run: every date at once with no queue limit, one wave of D plus the tasks' own
            # fixed costs (spool, upload, create, notice the end, land).
            emulator.reset()
            emulator.configure(**settings)
            baseline, baseline_failures = backfill(root, dates, args, "baseline")
            emulator.reset()
            emulator.configure(**settings, enqueued_token_limits={MODEL: args.limit})
            if args.configured:
                os.environ["AIRFLOW__OPENAI_BATCH__ENQUEUED_TOKEN_LIMITS"] = json.dumps({MODEL: args.limit})
            makespan, failures = backfill(root, dates, args, "queue")
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
                "warm_up_s": round(warm_up, 1),
                "baseline_no_limit_s": round(baseline, 1),
                "makespan_s": round(makespan, 1),
                "ideal_s": round(ideal, 1),
                "ratio": round(makespan / ideal, 2),
                "ratio_to_ideal_plus_fixed": round(makespan / (ideal + baseline - batch_seconds), 2),
                "billed_creates": len(paid),
                "failed_creates": len(free),
                "failed_per_completed": round(len(free) / max(1, len(paid)), 2),
                "api_calls": len(emulator.journal()),
                "task_failures": baseline_failures + failures,
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
