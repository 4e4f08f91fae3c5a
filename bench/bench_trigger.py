"""Polls per second: N OpenAIBatchTriggers in one event loop, coalesced, per-trigger retrieve, and naive.

    python bench/bench_trigger.py --triggers 500 --seconds 10

Serves the Batch API from the bundled emulator (a subprocess), or, if it cannot start, from a minimal
starlette app in a subprocess that returns fixed in-progress batches for ``GET /v1/batches/{id}`` and
``GET /v1/batches`` pages. Each trigger watches its own batch (``--batches`` defaults to ``--triggers``).
Each mode runs for ``--seconds`` with every trigger polling every ``--poll-interval`` seconds, so the client
saturates, and compares three polling paths in the same run:

* coalesced: ``OpenAIBatchTrigger.run()`` through the process-wide status board (``batches.list`` pages,
  shared by every trigger on the connection);
* retrieve: the same trigger with coalescing off (``status_board.COALESCE_MIN_BATCHES = None``): one shared
  AsyncOpenAI, one raw ``batches.retrieve`` per batch per poll (the trigger before the board);
* naive: each trigger builds its own ``AsyncOpenAI`` and calls ``batches.retrieve`` (full pydantic model).

A "status" is one batch status handed to one trigger (what one retrieve used to fetch); the table reports
statuses/s, HTTP requests per status and this process's CPU time per status.

INFO logging is off in every mode (a per-poll log line would measure the log sink, not the poller).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("AIRFLOW_HOME", tempfile.mkdtemp(prefix="bench-airflow-"))
os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
os.environ["AIRFLOW__LOGGING__LOGGING_LEVEL"] = "WARNING"

API_KEY = "sk-bench"
CONN_ID = "openai_bench"

FIXED_BATCH = {
    "id": "batch_fixed",
    "object": "batch",
    "endpoint": "/v1/chat/completions",
    "errors": None,
    "input_file_id": "file-in",
    "completion_window": "24h",
    "status": "in_progress",
    "output_file_id": None,
    "error_file_id": None,
    "created_at": 1700000000,
    "in_progress_at": 1700000001,
    "expires_at": 1700086400,
    "request_counts": {"total": 1000, "completed": 10, "failed": 0},
    "metadata": {"airflow_dag_id": "bench", "airflow_task_id": "t"},
}


def serve_fallback(port_file: str, n_batches: int) -> None:
    """The minimal server (run in a subprocess): a fixed in-progress batch for any id, and list pages."""
    import socket

    import uvicorn
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    ids = [f"batch_{i}" for i in reversed(range(n_batches))]  # newest first

    async def get_batch(request):
        return JSONResponse({**FIXED_BATCH, "id": request.path_params["batch_id"]})

    async def list_batches(request):
        after = request.query_params.get("after")
        limit = int(request.query_params.get("limit", 20))
        start = ids.index(after) + 1 if after else 0
        page = ids[start : start + limit]
        return JSONResponse(
            {
                "object": "list",
                "data": [{**FIXED_BATCH, "id": i} for i in page],
                "has_more": start + limit < len(ids),
                "first_id": page[0] if page else None,
                "last_id": page[-1] if page else None,
            }
        )

    app = Starlette(routes=[Route("/v1/batches", list_batches), Route("/v1/batches/{batch_id}", get_batch)])
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    Path(port_file).write_text(str(sock.getsockname()[1]))
    uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False)).run(sockets=[sock])


def start_server(n_batches: int, which: str) -> tuple[str, list[str], str, subprocess.Popen | None]:
    """Return (base_url, batch_ids, server description, process to stop)."""
    try:
        if which == "fallback":
            raise RuntimeError("--server fallback")
        import openai

        from airflow_provider_openai_batch.emulator.testing import start_emulator

        # A tiny per-batch rate keeps every batch in_progress for the whole run.
        emulator = start_emulator(
            Path(tempfile.mkdtemp(prefix="bench-emulator-")),
            settings={"rate": 0.001, "validating_seconds": 0, "finalizing_seconds": 0},
        )
        client = openai.OpenAI(api_key=API_KEY, base_url=emulator.base_url)
        line = {
            "custom_id": "r",
            "method": "POST",
            "url": "/v1/chat/completions",
            "body": {"model": "gpt-4o-mini"},
        }
        lines = "".join(json.dumps({**line, "custom_id": f"r{i}"}) + "\n" for i in range(20)).encode()
        file_id = client.files.create(file=("bench.jsonl", lines), purpose="batch").id
        ids = [
            client.batches.create(
                input_file_id=file_id, endpoint="/v1/chat/completions", completion_window="24h"
            ).id
            for _ in range(n_batches)
        ]
        client.close()
        return emulator.base_url, ids, "bundled emulator (subprocess)", emulator.process
    except Exception as exc:  # the emulator is optional for this benchmark
        print(
            f"emulator unavailable ({type(exc).__name__}: {exc}); using the fallback server", file=sys.stderr
        )
    port_file = tempfile.mktemp(prefix="bench-port-")
    proc = subprocess.Popen(
        [sys.executable, __file__, "--serve-fallback", port_file, "--batches", str(n_batches)]
    )
    deadline = time.monotonic() + 30
    while not (os.path.exists(port_file) and Path(port_file).read_text()):
        if time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError("fallback server did not start")
        time.sleep(0.05)
    time.sleep(0.5)
    base_url = f"http://127.0.0.1:{Path(port_file).read_text()}/v1"
    return base_url, [f"batch_{i}" for i in range(n_batches)], "fallback starlette server (subprocess)", proc


async def run_ours(batch_ids: list[str], n: int, seconds: float, interval: float, coalesce: bool) -> int:
    from airflow_provider_openai_batch.hooks import openai_batch as hook_module
    from airflow_provider_openai_batch.triggers import status_board
    from airflow_provider_openai_batch.triggers.openai_batch import OpenAIBatchTrigger

    hook_module.clear_async_client_cache()
    statuses = 0
    original_poll = OpenAIBatchTrigger._poll
    original_http = hook_module._new_async_http_client
    original_min = status_board.COALESCE_MIN_BATCHES

    async def counting(self, client, pending, seen):
        nonlocal statuses
        results = await original_poll(self, client, pending, seen)
        statuses += sum(1 for r in results if not isinstance(r, BaseException))
        for r in results:
            if isinstance(r, BaseException):
                ERRORS[type(r).__name__] = ERRORS.get(type(r).__name__, 0) + 1
        return results

    async def count_response(response) -> None:
        REQUESTS[0] += 1

    def counted_http_client():
        http_client = original_http()
        # Counted on the response: a request still queued for a pooled connection is not one yet.
        http_client.event_hooks["response"].append(count_response)
        return http_client

    OpenAIBatchTrigger._poll = counting  # type: ignore[method-assign]
    hook_module._new_async_http_client = counted_http_client
    status_board.COALESCE_MIN_BATCHES = original_min if coalesce else None
    try:
        triggers = [
            OpenAIBatchTrigger(
                batch_ids=[batch_ids[i % len(batch_ids)]],
                openai_conn_id=CONN_ID,
                poll_interval=interval,
                first_poll_jitter=interval,
                max_consecutive_errors=1_000_000,
            )
            for i in range(n)
        ]

        async def drive(trigger):
            async for event in trigger.run():
                raise RuntimeError(f"unexpected event {event}")

        tasks = [asyncio.create_task(drive(t)) for t in triggers]
        await asyncio.sleep(seconds)
        sample_process()
        REQUESTS[1] = REQUESTS[0]
        SAMPLE["refreshes"] = sum(board.refreshes for board in status_board.live_boards())
        SAMPLE["statuses"] = statuses
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    finally:
        OpenAIBatchTrigger._poll = original_poll  # type: ignore[method-assign]
        hook_module._new_async_http_client = original_http
        status_board.COALESCE_MIN_BATCHES = original_min
    return SAMPLE["statuses"]


async def run_naive(base_url: str, batch_ids: list[str], n: int, seconds: float, interval: float) -> int:
    """Each poller owns an AsyncOpenAI (built before the window: see ``build_naive_clients``)."""
    import openai

    polls = 0
    terminal = {"completed", "failed", "expired", "cancelled"}
    clients = NAIVE_CLIENTS

    async def naive(client: openai.AsyncOpenAI, batch_id: str) -> None:
        nonlocal polls
        await asyncio.sleep(random.uniform(0, interval))
        while True:
            batch = await client.batches.retrieve(batch_id)
            polls += 1
            REQUESTS[0] += 1
            if batch.status in terminal:
                return
            await asyncio.sleep(interval)

    tasks = [asyncio.create_task(naive(clients[i], batch_ids[i % len(batch_ids)])) for i in range(n)]
    await asyncio.sleep(seconds)
    sample_process()
    REQUESTS[1] = REQUESTS[0]
    SAMPLE["refreshes"] = polls
    for task in tasks:
        task.cancel()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    errors = [r for r in results if isinstance(r, Exception)]
    if errors:
        print(f"naive: {len(errors)} pollers failed, first: {errors[0]!r}", file=sys.stderr)
    await asyncio.gather(*(c.close() for c in clients))
    return polls


NAIVE_CLIENTS: list = []
SAMPLE: dict = {}
#: HTTP requests answered: [running count, count at the end of the window].
REQUESTS = [0, 0]
#: Failed polls in the window, by exception class.
ERRORS: dict[str, int] = {}


def sample_process() -> None:
    """Open TCP connections and resident memory of this process, taken at the end of a window."""
    import psutil

    proc = psutil.Process()
    SAMPLE["tcp"] = sum(1 for c in proc.net_connections(kind="tcp") if c.status == psutil.CONN_ESTABLISHED)
    SAMPLE["rss_mb"] = proc.memory_info().rss / 2**20


def build_naive_clients(base_url: str, n: int) -> tuple[float, float]:
    """Build the naive mode's N clients; return (wall, cpu) seconds. A naive trigger does this in run()."""
    import openai

    cpu0, wall0 = time.process_time(), time.perf_counter()
    NAIVE_CLIENTS[:] = [openai.AsyncOpenAI(api_key=API_KEY, base_url=base_url) for _ in range(n)]
    return time.perf_counter() - wall0, time.process_time() - cpu0


def measure(label: str, coro_factory, seconds: float) -> dict:
    SAMPLE.clear()
    ERRORS.clear()
    REQUESTS[:] = [0, 0]
    cpu0, wall0 = time.process_time(), time.perf_counter()
    polls = asyncio.run(coro_factory())
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    result = {
        "label": label,
        "polls": polls,
        "polls_per_s": polls / seconds,
        "requests": REQUESTS[1],
        "requests_per_poll": REQUESTS[1] / polls if polls else float("nan"),
        "cpu_s": cpu,
        "cpu_ms_per_poll": 1000 * cpu / polls if polls else float("nan"),
        "wall_s": wall,
        **SAMPLE,
    }
    print(
        f"{label:9s} statuses={polls:7d}  statuses/s={result['polls_per_s']:8.1f}  "
        f"requests={REQUESTS[1]:6d}  requests/status={result['requests_per_poll']:.4f}  "
        f"board refreshes={SAMPLE.get('refreshes')}  "
        f"cpu={cpu:6.2f}s  cpu/status={result['cpu_ms_per_poll']:.3f} ms  tcp={SAMPLE.get('tcp')}  "
        f"rss={SAMPLE.get('rss_mb', 0):.0f} MB  (wall {wall:.1f}s)"
        + (f"  failed polls: {ERRORS}" if ERRORS else "")
    )
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--triggers", type=int, default=500)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--poll-interval", type=float, default=0.05, help="seconds between polls per trigger")
    parser.add_argument(
        "--batches", type=int, help="distinct batch ids, shared round-robin (default: one per trigger)"
    )
    parser.add_argument(
        "--server", choices=["auto", "fallback"], default="auto", help="auto: emulator if it starts"
    )
    parser.add_argument("--serve-fallback", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_fallback:
        serve_fallback(args.serve_fallback, args.batches)
        return
    n_batches = args.triggers if args.batches is None else min(args.batches, args.triggers)

    # Import Airflow and the provider before measuring: a triggerer has them loaded already.
    import airflow_provider_openai_batch.triggers.openai_batch  # noqa: F401

    base_url, batch_ids, server, proc = start_server(n_batches, args.server)
    conn = {"conn_type": "openai_batch", "password": API_KEY, "host": base_url}
    os.environ[f"AIRFLOW_CONN_{CONN_ID.upper()}"] = json.dumps(conn)
    try:
        print(
            f"server: {server} at {base_url}; {args.triggers} triggers, {len(batch_ids)} batch ids, "
            f"poll interval {args.poll_interval}s, {args.seconds}s per mode"
        )
        coalesced = measure(
            "coalesced",
            lambda: run_ours(batch_ids, args.triggers, args.seconds, args.poll_interval, coalesce=True),
            args.seconds,
        )
        ours = measure(
            "retrieve",
            lambda: run_ours(batch_ids, args.triggers, args.seconds, args.poll_interval, coalesce=False),
            args.seconds,
        )
        wall, cpu = build_naive_clients(base_url, args.triggers)
        print(
            f"naive setup: {args.triggers} AsyncOpenAI clients built in {wall:.2f}s wall, {cpu:.2f}s CPU "
            f"({1000 * cpu / args.triggers:.1f} ms each, blocking the event loop); not counted below"
        )
        naive = measure(
            "naive",
            lambda: run_naive(base_url, batch_ids, args.triggers, args.seconds, args.poll_interval),
            args.seconds,
        )
        for other in (ours, naive):
            if other["polls"] and coalesced["polls"]:
                print(
                    f"ratio coalesced/{other['label']} (steady state): "
                    f"statuses/s x{coalesced['polls_per_s'] / other['polls_per_s']:.2f}, "
                    f"requests per status x{coalesced['requests_per_poll'] / other['requests_per_poll']:.4f}, "
                    f"CPU per status x{coalesced['cpu_ms_per_poll'] / other['cpu_ms_per_poll']:.2f}"
                )
        if naive["polls"] and ours["polls"]:
            print(
                f"ratio retrieve/naive (steady state): statuses/s x{ours['polls_per_s'] / naive['polls_per_s']:.2f}, "
                f"CPU per status x{ours['cpu_ms_per_poll'] / naive['cpu_ms_per_poll']:.2f}"
            )
    finally:
        if proc is not None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()


if __name__ == "__main__":
    main()
