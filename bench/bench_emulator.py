"""Benchmark: push a 50,000-request, ~200 MB batch through the emulator and watch its memory.

    python bench/bench_emulator.py [--requests 50000] [--line-bytes 4000] [--small-requests 5000]

For the big file and a small one (a tenth of it) in the same run, each against a fresh emulator process:
generate the JSONL, upload it with the openai client, create the batch, poll until it is completed, stream
the output file to disk; report wall time per phase and the emulator's peak RSS (VmHWM from
/proc/<pid>/status at the end, and the highest sampled VmRSS per phase). Flat memory means the big/small
peak ratio stays near 1.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
from pathlib import Path

from openai import OpenAI

from airflow_provider_openai_batch.emulator.testing import start_emulator, stop_emulator

SETTINGS = {"rate": 0, "validating_seconds": 0.2, "finalizing_seconds": 0.2, "cancelling_seconds": 0.2}


def write_input(path: Path, requests: int, line_bytes: int) -> int:
    """A chat-completions JSONL of ``requests`` lines of about ``line_bytes`` bytes each."""
    with open(path, "w") as f:
        for i in range(requests):
            line = {
                "custom_id": f"req-{i:06d}",
                "method": "POST",
                "url": "/v1/chat/completions",
                "body": {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": ""}]},
            }
            padding = max(0, line_bytes - len(json.dumps(line)) - 1)
            line["body"]["messages"][0]["content"] = (
                f"Question {i}: " + "lorem ipsum " * (padding // 12 + 1)
            )[:padding]
            f.write(json.dumps(line) + "\n")
    return path.stat().st_size


def read_status_kb(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


class RssSampler(threading.Thread):
    """Samples the process's VmRSS every 50 ms; ``peak(phase)`` is the highest seen during that phase."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid, self.phase, self.peaks, self.running = pid, "start", {}, True

    def run(self) -> None:
        while self.running:
            try:
                rss = read_status_kb(self.pid, "VmRSS")
            except OSError:
                return
            self.peaks[self.phase] = max(self.peaks.get(self.phase, 0), rss)
            time.sleep(0.05)


def run_one(label: str, requests: int, line_bytes: int, workdir: Path) -> dict:
    workdir.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    started = time.monotonic()
    input_path = workdir / "input.jsonl"
    size = write_input(input_path, requests, line_bytes)
    timings["generate"] = time.monotonic() - started

    emulator = start_emulator(workdir / "data", settings=SETTINGS)
    sampler = RssSampler(emulator.pid)
    sampler.start()
    try:
        baseline_kb = read_status_kb(emulator.pid, "VmRSS")
        client = OpenAI(base_url=emulator.base_url, api_key="sk-bench", max_retries=0, timeout=600)

        def phase(name: str):
            sampler.phase = name
            return time.monotonic()

        t = phase("upload")
        with open(input_path, "rb") as f:
            uploaded = client.files.create(file=("input.jsonl", f), purpose="batch")
        timings["upload"] = time.monotonic() - t

        t = phase("process")
        batch = client.batches.create(
            input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h"
        )
        while batch.status not in ("completed", "failed", "expired", "cancelled"):
            time.sleep(0.2)
            batch = client.batches.retrieve(batch.id)
        timings["process"] = time.monotonic() - t
        if batch.status != "completed" or batch.request_counts.completed != requests:
            raise SystemExit(f"{label}: batch ended {batch.status} with {batch.request_counts}")

        t = phase("download")
        output_path, lines, output_bytes = workdir / "output.jsonl", 0, 0
        with (
            client.files.with_streaming_response.content(batch.output_file_id) as response,
            open(output_path, "wb") as out,
        ):
            for chunk in response.iter_bytes(1 << 20):
                out.write(chunk)
                output_bytes += len(chunk)
                lines += chunk.count(b"\n")
        timings["download"] = time.monotonic() - t
        if lines != requests:
            raise SystemExit(f"{label}: downloaded {lines} lines, expected {requests}")

        # Also stream the whole input back: the biggest download the emulator can be asked for.
        t = phase("download_input")
        with client.files.with_streaming_response.content(uploaded.id) as response:
            echoed = sum(len(chunk) for chunk in response.iter_bytes(1 << 20))
        timings["download_input"] = time.monotonic() - t
        if echoed != size:
            raise SystemExit(f"{label}: downloaded {echoed} input bytes, expected {size}")
        sampler.phase = "end"
        time.sleep(0.1)
        hwm_kb = read_status_kb(emulator.pid, "VmHWM")
    finally:
        sampler.running = False
        stop_emulator(emulator.process)
    return {
        "label": label,
        "requests": requests,
        "input_mb": round(size / 1e6, 1),
        "output_mb": round(output_bytes / 1e6, 1),
        "seconds": {k: round(v, 2) for k, v in timings.items()},
        "requests_per_second": round(requests / timings["process"]),
        "baseline_rss_mb": round(baseline_kb / 1024, 1),
        "peak_rss_mb_by_phase": {k: round(v / 1024, 1) for k, v in sampler.peaks.items()},
        "vm_hwm_mb": round(hwm_kb / 1024, 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=50_000)
    parser.add_argument("--line-bytes", type=int, default=4000)
    parser.add_argument("--small-requests", type=int, default=None, help="default: a tenth of --requests")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    small = args.small_requests or max(1, args.requests // 10)

    with tempfile.TemporaryDirectory(prefix="bench-emulator-") as tmp:
        results = [
            run_one("small", small, args.line_bytes, Path(tmp) / "small"),
            run_one("big", args.requests, args.line_bytes, Path(tmp) / "big"),
        ]
    ratio = results[1]["vm_hwm_mb"] / results[0]["vm_hwm_mb"]
    print(
        f"{'run':6} {'requests':>8} {'input MB':>8} {'upload s':>8} {'process s':>9} {'req/s':>7} "
        f"{'output s':>8} {'input back s':>12} {'base MB':>7} {'VmHWM MB':>8}"
    )
    for r in results:
        s = r["seconds"]
        print(
            f"{r['label']:6} {r['requests']:>8} {r['input_mb']:>8} {s['upload']:>8} {s['process']:>9} "
            f"{r['requests_per_second']:>7} {s['download']:>8} {s['download_input']:>12} "
            f"{r['baseline_rss_mb']:>7} {r['vm_hwm_mb']:>8}"
        )
        print(f"       sampled VmRSS peak by phase (MB): {r['peak_rss_mb_by_phase']}")
    print(f"peak RSS ratio big/small: {ratio:.2f}")
    if args.json:
        args.json.write_text(json.dumps({"runs": results, "peak_rss_ratio": round(ratio, 3)}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
