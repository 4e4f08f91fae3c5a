"""Runs whenever the daily batch lands results: reads them with ``read_results`` and counts answers and failures.

Scheduled on the asset ``openai_batch_daily_results``, which ``openai_batch_daily``'s batch task declares as
an outlet. Each asset event's ``extra`` is the BatchResult summary (batch ids, status, request counts, usage,
output and error paths, cost), so ``read_results(event.extra)`` finds the files without knowing where the
upstream DAG writes them.

A clear of an upstream task that had succeeded lands the same batches again and emits a second event for them,
marked ``relanded: true``. Events are therefore counted once per set of batch ids: a repeat among the events of
one run is skipped. (Across runs, a consumer that must never count twice keeps the batch ids it has processed;
an event is never skipped only because it says ``relanded``: the earlier one may not have been processed.)
"""

from __future__ import annotations

import pendulum
from airflow.sdk import Asset, dag, task

from airflow_provider_openai_batch import read_results
from airflow_provider_openai_batch.reader import text

RESULTS = Asset("openai_batch_daily_results")


@dag(
    schedule=[RESULTS],
    start_date=pendulum.datetime(2026, 11, 1, tz="UTC"),
    catchup=False,
    tags=["openai", "example"],
)
def openai_batch_downstream():
    @task
    def count_results(triggering_asset_events=None) -> dict:
        counts = {"events": 0, "repeats": 0, "answered": 0, "empty": 0, "failed": 0, "estimated_usd": 0.0}
        seen: set[tuple[str, ...]] = set()
        for event in triggering_asset_events[RESULTS]:
            summary = event.extra
            batches = tuple(sorted(summary.get("batch_ids") or ()))
            if batches in seen:  # the same batches landed again (a clear): already counted
                counts["repeats"] += 1
                print(f"batch {list(batches)} again (relanded: {summary.get('relanded')}): skipped")
                continue
            seen.add(batches)
            counts["events"] += 1
            counts["estimated_usd"] += (summary.get("cost") or {}).get("total_usd") or 0.0
            for record in read_results(summary):
                if record["error"] is not None:
                    counts["failed"] += 1
                elif text(record):
                    counts["answered"] += 1
                else:
                    counts["empty"] += 1
            # One output file, or on object storage one per OpenAI file: output_path is then None.
            files = summary.get("output_paths") or []
            where = summary.get("output_path") or f"{len(files)} files beside {summary.get('manifest_path')}"
            print(f"batch {summary.get('batch_ids')} ({summary.get('status')}) at {where}")
        print(
            f"{counts['answered']} answered, {counts['empty']} empty, {counts['failed']} failed across "
            f"{counts['events']} result(s) ({counts['repeats']} repeat(s) skipped); estimated ${counts['estimated_usd']:.4f} (an estimate, not an invoice)"
        )
        return counts

    count_results()


openai_batch_downstream()
