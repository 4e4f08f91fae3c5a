"""Benchmark the OpenAI Batches page with many batches in flight: API calls per refresh and render time.

    python bench/bench_pages.py --batches 500 --views 20

A real emulator holds ``--batches`` live batches (seeded ``in_progress``, with metadata); deferred tasks of
``--per-task`` batches each reference them as the operator's records would. The page's work is timed in process, with
the plugin's own code: the cached listing of the connection (the real hook and ``openai`` client over HTTP),
the view model and the Jinja render of the navigation page. Reported: the first view (it lists), the median
and worst warm view (served from the snapshot), and the emulator's journal: list calls per refresh and calls
per batch (which must be none). The database query and Airflow's auth are not in these numbers: the
integration test tests/integration/test_batch_pages.py prints the real API server's ``Server-Timing`` for
the same 500 batches.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--batches", type=int, default=500)
    parser.add_argument("--per-task", type=int, default=10)
    parser.add_argument("--views", type=int, default=20)
    args = parser.parse_args()

    from airflow_provider_openai_batch.emulator.testing import start_emulator, stop_emulator

    with tempfile.TemporaryDirectory() as tmp:
        emulator = start_emulator(Path(tmp))
        try:
            os.environ["AIRFLOW_CONN_OPENAI_DEFAULT"] = json.dumps(
                {"conn_type": "openai_batch", "host": emulator.base_url, "password": "sk-bench"}
            )
            ids = emulator.seed_batches(args.batches, status="in_progress", metadata={"note": "<b>bench</b>"})
            run(emulator, ids, args)
        finally:
            emulator.close()
            if emulator.process is not None:
                stop_emulator(emulator.process)


def run(emulator, ids: list[str], args: argparse.Namespace) -> None:
    from airflow_provider_openai_batch.plugin import api_cache, app, records, view

    tasks = [
        records.BatchTask(
            "bench_dag",
            "scheduled__2026-11-01",
            "score",
            i,
            batch_ids=ids[start : start + args.per_task],
            conn_id="openai_default",
            state="deferred",
        )
        for i, start in enumerate(range(0, len(ids), args.per_task))
    ]
    cache = api_cache.BatchCache(ttl=3600)

    def view_once(cache: api_cache.BatchCache = cache) -> tuple[float, str]:
        started = time.perf_counter()
        views, as_of, errors = app.build_views(tasks, cache)
        assert not errors, errors
        html = app._render(
            "batches.html",
            app._Timing(),
            runs=view.group_runs(views),
            dag_ids=["bench_dag"],
            states=["deferred"],
            dag_id="",
            state="",
            days=7,
            as_of=app._as_of_text(as_of),
            errors=[],
        ).body.decode()
        return time.perf_counter() - started, html

    def list_calls() -> int:
        return sum(1 for c in emulator.journal() if c["method"] == "GET" and c["path"] == "/v1/batches")

    before = list_calls()
    first, html = view_once()
    after_first = list_calls()
    warm = [view_once()[0] for _ in range(args.views)]
    after_warm = list_calls()
    # Views that each start a refresh, once imports and template compilation are behind us.
    refreshing = [view_once(api_cache.BatchCache(ttl=0))[0] for _ in range(5)]
    per_batch = sum(1 for c in emulator.journal() if re.fullmatch(r"/v1/batches/[^/]+", c["path"]))
    shown = html.count('class="batch"')
    print(
        f"{len(ids)} live batches in {len(tasks)} tasks, {shown} batch rows shown, page {len(html):,} bytes"
    )
    print(
        f"first view of the process (one listing): {first * 1000:.0f} ms; list calls (pages of 100): {after_first - before}"
    )
    print(
        f"views that refresh (one listing each) x5: median {statistics.median(refreshing) * 1000:.0f} ms, "
        f"worst {max(refreshing) * 1000:.0f} ms"
    )
    print(
        f"warm views x{args.views}: median {statistics.median(warm) * 1000:.0f} ms, "
        f"worst {max(warm) * 1000:.0f} ms; list calls during them: {after_warm - after_first}"
    )
    print(f"calls for one batch (GET /v1/batches/<id>): {per_batch}")


if __name__ == "__main__":
    main()
