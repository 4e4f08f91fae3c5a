"""Triggerer at scale: N deferred tasks in one event loop, their batches finishing one after another.

    python bench/bench_trigger.py --triggers 1000 5000 --others 0 1500

The workload of issue 10: N triggers (one batch each) start in one event loop the way the triggerer starts
them (one per loop turn), poll interval 10 s, a stub API on loopback answering in 50 ms
(``bench/trigger_stub.py``, a subprocess), the N batches completing one after another over 10 s from 15 s
after start, under ``--others`` newer batches of other users. Each poller runs in its own child process:

* ``ours``: ``OpenAIBatchTrigger.run()`` (the status board; INFO logging on, written to a file);
* ``bare``: one shared ``AsyncOpenAI``, one task per batch: ``batches.retrieve`` (pydantic model) every
  poll interval after the same first-poll jitter, until terminal;
* ``openai-provider`` and ``common-ai``: the anchor triggers of issue 10 (``bench/trigger_anchors.py``),
  run like ours, in a bench-only interpreter given with ``--python``.

Reported per run: completion → event p50/p99 (the stub's completion time to the event, same clock), API
calls/s over the run (the stub's count) against the cheapest plan (per poll interval, min over depth d of
pages down to d plus watched batches older than d, for the triggers not yet fired), event-loop lag
p50/p99 (a 10 ms sleep's overshoot, start-up included), the child's CPU time, events per trigger, and
log lines. Ratios against the bare loop come from the same invocation.
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

sys.path.insert(0, str(Path(__file__).resolve().parent))

from trigger_anchors import connections  # noqa: E402
from trigger_stub import our_ids, schedule  # noqa: E402

API_KEY = "sk-bench"
CONN_ID = "openai_bench"
TERMINAL = {"completed", "failed", "expired", "cancelled"}
POLLERS = ["ours", "bare", "openai-provider", "common-ai"]


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def cheapest_calls(pending_positions: list[int], page_size: int = 100) -> int:
    if not pending_positions:
        return 0
    deepest = max(pending_positions) // page_size + 1
    return min(d + sum(p >= d * page_size for p in pending_positions) for d in range(deepest + 1))


async def lag_probe(lags: list[float], stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    while not stop.is_set():
        before = loop.time()
        await asyncio.sleep(0.01)
        lags.append(loop.time() - before - 0.01)


async def child_main(args) -> dict:
    ids = our_ids(args.n)
    events: dict[str, list[float]] = {b: [] for b in ids}
    lags: list[float] = []
    stop = asyncio.Event()

    if args.poller == "ours":
        from airflow_provider_openai_batch.triggers.openai_batch import OpenAIBatchTrigger

        async def watch(batch_id: str) -> None:
            trigger = OpenAIBatchTrigger([batch_id], openai_conn_id=CONN_ID, poll_interval=args.interval)
            async for event in trigger.run():
                events[batch_id].append(time.time())
                assert event.payload["status"] == "terminal", event.payload
    elif args.poller == "bare":
        import openai

        client = openai.AsyncOpenAI(api_key=API_KEY, base_url=args.base_url)

        async def watch(batch_id: str) -> None:
            await asyncio.sleep(random.uniform(0, min(args.interval, 5.0)))
            while True:
                batch = await client.batches.retrieve(batch_id)
                if batch.status in TERMINAL:
                    events[batch_id].append(time.time())
                    return
                await asyncio.sleep(args.interval)
    else:
        from trigger_anchors import make_watch

        watch = make_watch(args.poller, args.interval, events)

    await asyncio.sleep(max(0.0, args.start - time.time()))
    cpu0, wall0 = time.process_time(), time.time()
    probe = asyncio.create_task(lag_probe(lags, stop))
    tasks = []
    for batch_id in ids:  # as the triggerer does: one trigger per loop turn
        tasks.append(asyncio.create_task(watch(batch_id)))
        await asyncio.sleep(0)
    done, pending = await asyncio.wait(tasks, timeout=args.start + args.bound - time.time())
    wall, cpu = time.time() - wall0, time.process_time() - cpu0
    stop.set()
    await probe
    for task in pending:
        task.cancel()
    failed = [t.exception() for t in done if t.exception() is not None]
    done_at = schedule(args.n, args.start, args.warmup, args.spread)
    latencies = [ts[0] - done_at[b] for b, ts in events.items() if ts]
    # The cheapest plan, one refresh per poll interval, for the batches whose trigger had not fired yet.
    position = {b: args.others + args.n - 1 - i for i, b in enumerate(ids)}
    ideal = 0
    t = wall0
    while t < wall0 + wall:
        ideal += cheapest_calls([position[b] for b, ts in events.items() if not ts or ts[0] > t])
        t += args.interval
    return {
        "wall_s": wall,
        "cpu_s": cpu,
        "fired": sum(1 for ts in events.values() if len(ts) == 1),
        "fired_twice": sum(1 for ts in events.values() if len(ts) > 1),
        "errors": [repr(e) for e in failed[:3]],
        "latency_p50": pct(latencies, 0.5),
        "latency_p99": pct(latencies, 0.99),
        "latency_max": max(latencies, default=float("nan")),
        "lag_p50_ms": 1000 * pct(lags, 0.5),
        "lag_p99_ms": 1000 * pct(lags, 0.99),
        "lag_max_ms": 1000 * max(lags, default=float("nan")),
        "ideal_calls": ideal,
    }


def start_stub(n: int, others: int, start: float, args) -> tuple[subprocess.Popen, str]:
    port_file = tempfile.mktemp(prefix="bench-stub-port-")
    proc = subprocess.Popen(
        [
            sys.executable,
            str(Path(__file__).with_name("trigger_stub.py")),
            port_file,
            f"--n={n}",
            f"--others={others}",
            f"--start={start}",
            f"--warmup={args.warmup}",
            f"--spread={args.spread}",
            f"--latency={args.latency}",
        ]
    )
    deadline = time.monotonic() + 30
    while not (os.path.exists(port_file) and Path(port_file).read_text()):
        if time.monotonic() > deadline or proc.poll() is not None:
            proc.kill()
            raise RuntimeError("the stub API did not start")
        time.sleep(0.05)
    time.sleep(0.3)
    return proc, f"http://127.0.0.1:{Path(port_file).read_text()}"


def stub_stats(root: str) -> dict:
    import urllib.request

    with urllib.request.urlopen(f"{root}/stats") as response:
        return json.loads(response.read())


def run_one(poller: str, n: int, others: int, args) -> dict:
    start = time.time() + args.startup
    stub, root = start_stub(n, others, start, args)
    out = tempfile.NamedTemporaryFile(prefix=f"bench-trigger-{poller}-", suffix=".log", delete=False)
    result_file = out.name + ".json"
    env = {
        **os.environ,
        f"AIRFLOW_CONN_{CONN_ID.upper()}": json.dumps(
            {"conn_type": "openai_batch", "password": API_KEY, "host": f"{root}/v1"}
        ),
        "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
        **{f"AIRFLOW_CONN_{c.upper()}": json.dumps(v) for c, v in connections(API_KEY, f"{root}/v1").items()},
    }
    env.setdefault("AIRFLOW_HOME", tempfile.mkdtemp(prefix="bench-airflow-"))
    try:
        before = stub_stats(root)
        cmd = [
            args.python,
            __file__,
            "--child",
            poller,
            f"--result={result_file}",
            f"--base-url={root}/v1",
        ]
        cmd += [f"--n={n}", f"--others={others}", f"--start={start}", f"--bound={args.seconds}"]
        cmd += [f"--interval={args.interval}", f"--warmup={args.warmup}", f"--spread={args.spread}"]
        subprocess.run(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, check=True)
        after = stub_stats(root)
    finally:
        stub.terminate()
        stub.wait(10)
    result = json.loads(Path(result_file).read_text())
    calls = {k: after[k] - before[k] for k in after}
    result.update(poller=poller, n=n, others=others, retrieves=calls["retrieve"], pages=calls["list"])
    result["calls_per_s"] = (calls["retrieve"] + calls["list"]) / result["wall_s"]
    result["ideal_per_s"] = result["ideal_calls"] / result["wall_s"]
    out.close()
    result["log_lines"] = sum(1 for _ in open(out.name, errors="replace"))
    return result


def row(r: dict, bare: dict | None) -> str:
    ratio = f" ({r['cpu_s'] / bare['cpu_s']:.2f}x bare)" if bare and r is not bare else ""
    calls = f"{r['calls_per_s']:.1f} ({r['pages']} pages, {r['retrieves']} retrieves)"
    return (
        f"| {r['poller']} | {r['n']:,} | {r['others']:,} | {r['latency_p50']:.1f} s / {r['latency_p99']:.1f} s "
        f"| {calls} | {r['ideal_per_s']:.2f} | {r['lag_p50_ms']:.1f} / {r['lag_p99_ms']:.1f} ms "
        f"| {r['cpu_s']:.1f} s in {r['wall_s']:.0f} s{ratio} | {r['fired']:,}/{r['n']:,}"
        f"{' (' + str(r['fired_twice']) + ' twice)' if r['fired_twice'] else ''} | {r['log_lines']:,} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--triggers", type=int, nargs="+", default=[1000, 5000])
    parser.add_argument("--others", type=int, nargs="+", default=[0, 1500])
    parser.add_argument("--pollers", nargs="+", default=["ours", "bare"], choices=POLLERS)
    parser.add_argument(
        "--python",
        default=sys.executable,
        help="interpreter of the poller children (a bench-only venv for the anchor pollers)",
    )
    parser.add_argument("--seconds", type=float, default=60.0, help="bound on one run, from its start")
    parser.add_argument("--interval", type=float, default=10.0, help="poll interval")
    parser.add_argument("--warmup", type=float, default=15.0, help="seconds before the first completion")
    parser.add_argument("--spread", type=float, default=10.0, help="seconds over which the batches finish")
    parser.add_argument("--latency", type=float, default=0.05, help="the stub's answer time")
    parser.add_argument("--startup", type=float, default=12.0, help="seconds for a child to import Airflow")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    parser.add_argument("--base-url", help=argparse.SUPPRESS)
    parser.add_argument("--n", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--start", type=float, help=argparse.SUPPRESS)
    parser.add_argument("--bound", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        args.poller, args.others = args.child, args.others[0]
        if args.poller == "ours":
            import airflow_provider_openai_batch.triggers.openai_batch  # noqa: F401  (loaded, as in a triggerer)
        Path(args.result).write_text(json.dumps(asyncio.run(child_main(args))))
        return
    print(
        f"poll interval {args.interval}s, stub latency {args.latency * 1000:.0f} ms, completions from "
        f"{args.warmup}s over {args.spread}s, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}"
    )
    print(
        "| poller | batches | others | completion → event p50 / p99 | API calls/s | cheapest plan, calls/s "
        "| loop lag p50 / p99 | CPU | fired once | log lines |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for n in args.triggers:
        for others in args.others:
            results = {p: run_one(p, n, others, args) for p in args.pollers}
            bare = results.get("bare")
            for r in results.values():
                print(row(r, bare), flush=True)
                if r["errors"]:
                    print(f"  errors: {r['errors']}", file=sys.stderr)
            for name, r in results.items():
                if bare is None or r is bare:
                    continue
                print(
                    f"  ratios {name}/bare: CPU x{r['cpu_s'] / bare['cpu_s']:.3f}, calls/s "
                    f"x{r['calls_per_s'] / bare['calls_per_s']:.4f}; {name}/cheapest plan calls "
                    f"x{r['calls_per_s'] / max(r['ideal_per_s'], 1e-9):.2f}; loop load average "
                    f"{os.getloadavg()[0]:.2f}",
                    file=sys.stderr,
                    flush=True,
                )


if __name__ == "__main__":
    main()
