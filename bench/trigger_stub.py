"""A stub Batch API for bench_trigger.py: N batches of ours that finish on a schedule, under others' batches.

Run as a subprocess on loopback (``python bench/trigger_stub.py PORT_FILE --n ... --others ... --start ...``)
so that its CPU is not the poller's. Serves ``GET /v1/batches/{id}`` and ``GET /v1/batches`` pages (newest
first: the others, created after ours, then ours), each answered after ``--latency`` seconds, and
``GET /stats`` (request counts, not counted itself). A batch of ours is ``in_progress`` until its completion
time from :func:`schedule`, then ``completed``; others stay ``in_progress``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import socket
from pathlib import Path
from urllib.parse import parse_qs


def our_ids(n: int) -> list[str]:
    return [f"batch_ours_{i:05d}" for i in range(n)]  # oldest first


def schedule(n: int, start: float, warmup: float, spread: float, seed: int = 7) -> dict[str, float]:
    """Unix time at which each of our batches completes: one after another over ``spread`` seconds."""
    offsets = [spread * i / max(n - 1, 1) for i in range(n)]
    random.Random(seed).shuffle(offsets)
    return {b: start + warmup + o for b, o in zip(our_ids(n), offsets, strict=True)}


def batch_body(batch_id: str, status: str) -> dict:
    done = status == "completed"
    return {
        "id": batch_id,
        "object": "batch",
        "endpoint": "/v1/chat/completions",
        "errors": None,
        "input_file_id": "file-in",
        "completion_window": "24h",
        "status": status,
        "output_file_id": "file-out" if done else None,
        "error_file_id": None,
        "created_at": 1700000000,
        "in_progress_at": 1700000001,
        "expires_at": 1700086400,
        "request_counts": {"total": 100, "completed": 100 if done else 40, "failed": 0},
        "metadata": {"airflow_dag_id": "bench", "airflow_task_id": "t"},
    }


def make_app(n: int, others: int, start: float, warmup: float, spread: float, latency: float):
    import time

    done_at = schedule(n, start, warmup, spread)
    order = [f"batch_other_{i:05d}" for i in range(others)] + list(reversed(our_ids(n)))
    index = {b: i for i, b in enumerate(order)}
    stats = {"retrieve": 0, "list": 0}

    def status(batch_id: str) -> str:
        at = done_at.get(batch_id)
        return "completed" if at is not None and time.time() >= at else "in_progress"

    async def app(scope, receive, send):
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        path = scope["path"].rstrip("/")
        code, body = 200, None
        if path == "/stats":
            body = stats
        elif path == "/v1/batches":
            stats["list"] += 1
            await asyncio.sleep(latency)
            query = parse_qs(scope["query_string"].decode())
            limit = int(query.get("limit", ["20"])[0])
            after = query.get("after", [None])[0]
            first = index[after] + 1 if after else 0
            page = order[first : first + limit]
            body = {
                "object": "list",
                "data": [batch_body(b, status(b)) for b in page],
                "has_more": first + limit < len(order),
                "first_id": page[0] if page else None,
                "last_id": page[-1] if page else None,
            }
        elif path.startswith("/v1/batches/"):
            stats["retrieve"] += 1
            await asyncio.sleep(latency)
            batch_id = path.rsplit("/", 1)[-1]
            if batch_id in index:
                body = batch_body(batch_id, status(batch_id))
            else:
                code, body = 404, {"error": {"message": f"No batch found with id '{batch_id}'"}}
        else:
            code, body = 404, {"error": {"message": f"no route {path}"}}
        payload = json.dumps(body).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
        await send({"type": "http.response.start", "status": code, "headers": headers})
        await send({"type": "http.response.body", "body": payload})

    return app


def main() -> None:
    import uvicorn

    parser = argparse.ArgumentParser()
    parser.add_argument("port_file")
    parser.add_argument("--n", type=int, required=True)
    parser.add_argument("--others", type=int, default=0)
    parser.add_argument("--start", type=float, required=True)
    parser.add_argument("--warmup", type=float, required=True)
    parser.add_argument("--spread", type=float, required=True)
    parser.add_argument("--latency", type=float, default=0.05)
    args = parser.parse_args()
    app = make_app(args.n, args.others, args.start, args.warmup, args.spread, args.latency)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    Path(args.port_file).write_text(str(sock.getsockname()[1]))
    config = uvicorn.Config(app, log_level="warning", access_log=False, loop="uvloop", http="httptools")
    uvicorn.Server(config).run(sockets=[sock])


if __name__ == "__main__":
    main()
