"""Benchmark the operator's whole submit step (validate, spool, upload every shard, create the batches): peak memory.

    python bench/bench_submit.py --mb 50 200 1000
    python bench/bench_submit.py --parallel-mb 570 [--s3]   # multi-shard submit, parallel uploads

The inputs are bench_input.py's generated chat-completions JSONL (``--dir``, generated once and reused).
The emulator runs once, as a subprocess (``--rate 0``; batches are left in ``validating`` so that the
emulator does not process them while the client is being measured). For each size, each of these runs
in a fresh child process, so that its peak RSS (VmHWM, bench_input.py's method) belongs to that run only:

- idle: the same imports (airflow, the hook, openai, orjson, spool_requests) and the hook's client built;
- ours: what ``OpenAIBatchOperator.execute`` does before it defers: ``spool_requests`` from the file into
  a temp dir, then per shard ``OpenAIBatchHook.upload_file`` streaming from the open shard file and
  ``OpenAIBatchHook.create_batch`` (the connection comes from ``AIRFLOW_CONN_OPENAI_DEFAULT``, no DB);
- baseline (what in-memory integrations do): ``f.read()`` the whole file, parse every line into a list to
  validate it, then upload the bytes with ``files.create(file=("x.jsonl", data))`` and create the batch.
  Over the emulator's upload limit (200 MiB, ``--max-file-bytes``' default) the file cannot be uploaded
  as one, so there the baseline is read + parse only, and the table says so. (Its single batch would
  also be over the service's 50,000 requests from 200 MB on; it is left in ``validating``, so the
  emulator does not get to reject it: what is measured is the client's memory.)

Peaks are reported over the idle child. Ours also reports its VmHWM after the spool (before any upload)
and its wall time.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_input import CHILD as INPUT_CHILD  # noqa: E402
from bench_input import ENDPOINT, ROOT, generate  # noqa: E402

from airflow_provider_openai_batch.emulator.settings import DEFAULT_MAX_FILE_BYTES  # noqa: E402
from airflow_provider_openai_batch.emulator.testing import start_emulator, stop_emulator  # noqa: E402

# bench_input.py's child prelude: sys.path and peak_kib() (VmHWM from /proc/self/status, else ru_maxrss).
PRELUDE = INPUT_CHILD.partition("\nimport orjson")[0]
assert "def peak_kib" in PRELUDE, "bench_input.CHILD changed: peak_kib() not found before 'import orjson'"

CHILD = """
import os, json, tempfile, time
import orjson
from airflow_provider_openai_batch.batch_input import spool_requests
from airflow_provider_openai_batch.hooks.openai_batch import OpenAIBatchHook

mode, path = sys.argv[1:3]
hook = OpenAIBatchHook()
client = hook.client  # built in every mode, idle included
out = {{}}
start = time.perf_counter()
if mode == "ours":
    with tempfile.TemporaryDirectory(prefix="openai-batch-spool-", dir=os.environ.get("BENCH_WORKDIR")) as workdir:
        with open(path, "rb") as f:
            spool = spool_requests(f, endpoint={endpoint!r}, workdir=workdir, source_name=path)
        out["spool_s"] = time.perf_counter() - start
        out["spool_peak_kib"] = peak_kib()
        for shard in spool.shards:
            with open(shard.path, "rb") as fh:
                uploaded = hook.upload_file(file=fh, filename=f"bench-{{shard.index:05d}}.jsonl")
            batch = hook.create_batch(
                input_file_id=uploaded.id, endpoint={endpoint!r}, metadata={{"shard": str(shard.index)}}
            )
            assert uploaded.bytes == shard.bytes, (uploaded.bytes, shard.bytes)
        out["shards"] = len(spool.shards)
        out["requests"] = spool.total_requests
elif mode in ("baseline", "baseline-parse"):
    with open(path, "rb") as f:
        data = f.read()
    rows = [orjson.loads(line) for line in data.splitlines()]
    out["requests"] = len(rows)
    out["parse_peak_kib"] = peak_kib()
    if mode == "baseline":
        uploaded = client.files.create(file=("x.jsonl", data), purpose="batch")
        batch = client.batches.create(
            input_file_id=uploaded.id, endpoint={endpoint!r}, completion_window="24h"
        )
        out["shards"] = 1
elif mode in ("ours-parallel", "bare-parallel"):
    from concurrent.futures import ThreadPoolExecutor
    from airflow_provider_openai_batch.batch_input import Limits
    from airflow_provider_openai_batch.lifecycle.ledger import Ledger, Upload
    from airflow_provider_openai_batch.lifecycle.record import RecordStore, SubmissionRecord
    from airflow_provider_openai_batch.lifecycle.tags import TaskIdentity, label

    limits = Limits(max_requests=int(os.environ["BENCH_MAX_REQUESTS"]))
    input_url = os.environ.get("BENCH_INPUT_URL")
    if mode == "bare-parallel":  # the shard files ours would upload, sent by the bare client, all at once
        shards = json.loads(os.environ["BENCH_SHARDS"])
        start = time.perf_counter()
        if input_url:  # the input is on S3: first fetched whole, by boto3's parallel ranged reads
            import boto3
            from boto3.s3.transfer import TransferConfig

            s3 = boto3.client("s3", endpoint_url=os.environ["BENCH_S3_ENDPOINT"], aws_access_key_id="testing",
                              aws_secret_access_key="testing", region_name="us-east-1")
            bucket, key = input_url.split("@", 1)[1].split("/", 1)
            with tempfile.TemporaryFile(dir=os.environ.get("BENCH_WORKDIR")) as fetched:
                s3.download_fileobj(bucket, key, fetched, Config=TransferConfig())
            out["fetch_s"] = time.perf_counter() - start

        def send(shard_path):
            with open(shard_path, "rb") as fh:
                return client.files.create(file=(os.path.basename(shard_path), fh), purpose="batch")

        with ThreadPoolExecutor(max_workers=len(shards)) as pool:
            uploaded = list(pool.map(send, shards))
        for one in uploaded:
            client.batches.create(input_file_id=one.id, endpoint={endpoint!r}, completion_window="24h")
        out["shards"] = len(uploaded)
    else:  # read_input's spool, then Ledger.upload (what upload_shards runs), then one create per shard
        concurrency = int(os.environ["BENCH_CONCURRENCY"])
        ledger = Ledger(hook, RecordStore(None), TaskIdentity("bench", "submit", "bench"))
        if os.environ.get("BENCH_NO_READ_AHEAD"):  # as before the read-ahead: fsspec's own block cache
            from airflow_provider_openai_batch import files
            files.ReadAhead.over = staticmethod(lambda remote: remote)
        from airflow_provider_openai_batch import storage
        with tempfile.TemporaryDirectory(prefix="openai-batch-spool-", dir=os.environ.get("BENCH_WORKDIR")) as workdir:
            with (storage.open_input(input_url) if input_url else open(path, "rb")) as f:
                spool = spool_requests(f, endpoint={endpoint!r}, workdir=workdir, source_name=path, limits=limits)
            out["spool_s"] = time.perf_counter() - start
            n = len(spool.shards)
            record = SubmissionRecord(fingerprint=spool.fingerprint[:32], shard_count=n)
            uploads = [Upload(label(0, s.index, n), s.path, f"bench-{{s.index:05d}}.jsonl") for s in spool.shards]
            ledger.upload(record, uploads, concurrency)
            out["upload_s"] = time.perf_counter() - start - out["spool_s"]
            for u in uploads:
                hook.create_batch(input_file_id=record.files[u.label], endpoint={endpoint!r}, metadata={{}})
        out["shards"] = n
out["seconds"] = time.perf_counter() - start
out["peak_kib"] = peak_kib()
print(json.dumps(out))
"""


def run_child(mode: str, path: Path, env: dict[str, str]) -> dict:
    code = PRELUDE.format(root=str(ROOT)) + CHILD.format(endpoint=ENDPOINT)
    out = subprocess.run(
        [sys.executable, "-c", code, mode, str(path)], check=True, capture_output=True, text=True, env=env
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def parallel(args: argparse.Namespace, data_dir: Path, env: dict[str, str]) -> None:
    """Wall time of a whole multi-shard submit (spool + uploads + creates), with parallel uploads
    (``upload_concurrency`` 4, the default) and one at a time (1), against the bare client uploading the same
    shard files all at once and creating their batches; the runs interleaved, ``--rounds`` of each.

    With ``--s3`` the input is read from S3 (moto_server behind the latency proxy, ``--delay`` a request): ours
    spools it as the operator does (``storage.open_input``, read ahead), and once more as before the read-ahead
    (fsspec's block cache, one block at a time); the bare client first fetches it whole with boto3's parallel
    ranged reads (``download_fileobj``), then uploads the shard files all at once.
    """
    from airflow_provider_openai_batch.batch_input import Limits, spool_requests

    s3_server = None
    if args.s3:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from s3_server import start_s3

        s3_server = start_s3("bench", args.delay)
        env = {
            **env,
            "AIRFLOW_CONN_AWS_BENCH": s3_server.connection(),
            "BENCH_S3_ENDPOINT": s3_server.proxy_url,
        }
        variants = {
            "bare": ("bare-parallel", {}, "bare: fetch + parallel upload"),
            "ours4": ("ours-parallel", {"BENCH_CONCURRENCY": "4"}, "ours, read ahead, 4 at once"),
            "before": (
                "ours-parallel",
                {"BENCH_CONCURRENCY": "4", "BENCH_NO_READ_AHEAD": "1"},
                "ours, no read-ahead, 4 at once",
            ),
        }
    else:
        variants = {
            "bare": ("bare-parallel", {}, "bare parallel upload"),
            "ours4": ("ours-parallel", {"BENCH_CONCURRENCY": "4"}, "ours, 4 at once"),
            "ours1": ("ours-parallel", {"BENCH_CONCURRENCY": "1"}, "ours, 1 at a time"),
        }
    where = f"S3 behind a {args.delay * 1000:.0f} ms proxy" if args.s3 else "local disk"
    print(f"\ninput on {where}; each ours cell: total (spool + upload)\n")
    names = list(variants)
    head = " | ".join(f"{variants[n][2]} | × bare" for n in names[1:])
    print(f"| input | shards | runs | | {variants['bare'][2]} | {head} | peak RSS over idle: ours 4 / bare |")
    print("|---|---|---|---|---|" + "---|---|" * (len(names) - 1) + "---|")
    env = {**env, "BENCH_MAX_REQUESTS": str(args.max_requests)}
    try:
        for mb in args.parallel_mb:
            path = data_dir / f"chat-{mb}mb.jsonl"
            if not path.exists():
                generate(path, mb)
            run_env = dict(env)
            if s3_server is not None:  # not timed: the input put in place
                s3_server.direct.upload_file(str(path), "bench", f"input/{path.name}")
                run_env["BENCH_INPUT_URL"] = f"s3://aws_bench@bench/input/{path.name}"
            shard_dir = tempfile.mkdtemp(prefix="bench-shards-", dir=env["BENCH_WORKDIR"])
            try:
                with open(path, "rb") as f:  # the shard files, for the bare client (not timed)
                    spool = spool_requests(
                        f,
                        endpoint=ENDPOINT,
                        workdir=shard_dir,
                        source_name=str(path),
                        limits=Limits(max_requests=args.max_requests),
                    )
                shard_env = {**run_env, "BENCH_SHARDS": json.dumps([s.path for s in spool.shards])}
                idle = run_child("idle", path, env)["peak_kib"] / 1024
                runs: dict[str, list[dict]] = {name: [] for name in names}
                for round_no in range(args.rounds):
                    for name in names if round_no % 2 == 0 else reversed(names):
                        mode, extra, _ = variants[name]
                        runs[name].append(run_child(mode, path, {**shard_env, **extra}))
            finally:
                shutil.rmtree(shard_dir, ignore_errors=True)
            for pick_name, pick in (("best", min), ("median", statistics.median)):
                bare = pick(r["seconds"] for r in runs["bare"])
                bare_cell = f"{bare:.2f} s"
                if args.s3:
                    bare_cell += f" (fetch {pick(r['fetch_s'] for r in runs['bare']):.2f} s)"
                cells = []
                for name in names[1:]:
                    total = pick(r["seconds"] for r in runs[name])
                    spool_s = pick(r["spool_s"] for r in runs[name])
                    upload_s = pick(r["upload_s"] for r in runs[name])
                    cells += [f"{total:.2f} s ({spool_s:.2f} + {upload_s:.2f} s)", f"{total / bare:.2f}x"]
                peak_ours = max(r["peak_kib"] for r in runs["ours4"]) / 1024 - idle
                peak_bare = max(r["peak_kib"] for r in runs["bare"]) / 1024 - idle
                print(
                    f"| {path.stat().st_size / 1e6:,.0f} MB | {runs['ours4'][0]['shards']} | {args.rounds} "
                    f"| wall, {pick_name} | {bare_cell} | {' | '.join(cells)} "
                    f"| {peak_ours:,.1f} / {peak_bare:,.1f} MB |",
                    flush=True,
                )
    finally:
        if s3_server is not None:
            s3_server.close()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--mb", type=int, nargs="+", default=[50, 200])
    parser.add_argument("--dir", default=os.path.join(tempfile.gettempdir(), "openai-batch-bench"))
    parser.add_argument(
        "--workdir-in", default=None, help="where the spool's shards go (default: under --dir)"
    )
    parser.add_argument(
        "--parallel-mb",
        type=int,
        nargs="*",
        default=[],
        help="also time a multi-shard submit with parallel uploads against a bare parallel upload of the same "
        "shard files (e.g. 570: three shards of up to 190 MiB under --max-requests)",
    )
    parser.add_argument(
        "--max-requests",
        type=int,
        default=1_000_000,
        help="with --parallel-mb: Limits.max_requests, high so that shards are cut by bytes (190 MiB)",
    )
    parser.add_argument("--rounds", type=int, default=3, help="with --parallel-mb: runs of each, interleaved")
    parser.add_argument(
        "--s3",
        action="store_true",
        help="with --parallel-mb: the input is read from S3 (moto behind a proxy)",
    )
    parser.add_argument(
        "--delay", type=float, default=0.02, help="with --s3: seconds of round trip a request"
    )
    args = parser.parse_args()

    data_dir = Path(args.dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    import openai

    print(
        f"python {sys.version.split()[0]}, openai {openai.__version__}, {os.cpu_count()} CPUs, data in {data_dir}"
    )
    emu_dir = Path(tempfile.mkdtemp(prefix="emulator-", dir=data_dir))
    # Batches stay in `validating` for an hour: the emulator does not process them during the measurements.
    emulator = start_emulator(
        emu_dir,
        settings={
            "rate": 0,
            "validating_seconds": 3600,
            "finalizing_seconds": 0.2,
            "max_requests": max(50_000, args.max_requests),
        },
    )
    env = {
        **os.environ,
        "AIRFLOW_CONN_OPENAI_DEFAULT": json.dumps(
            {
                "conn_type": "openai_batch",
                "host": emulator.base_url,
                "password": "sk-bench",
                "extra": {"timeout": 600},
            }
        ),
        "BENCH_WORKDIR": args.workdir_in or str(data_dir),
    }
    print(f"emulator {emulator.base_url} (pid {emulator.pid})")
    if args.parallel_mb:
        try:
            parallel(args, data_dir, env)
        finally:
            stop_emulator(emulator.process)
            emulator.close()
            shutil.rmtree(emu_dir, ignore_errors=True)
        return
    print()
    print(
        "| input | idle child | ours: peak over idle (after spool) | baseline: peak over idle "
        "| baseline / ours | ours wall time | shards |"
    )
    print("|---|---|---|---|---|---|---|")
    try:
        for mb in args.mb:
            path = data_dir / f"chat-{mb}mb.jsonl"
            if not path.exists():
                generate(path, mb)
            size = path.stat().st_size
            idle = run_child("idle", path, env)
            ours = run_child("ours", path, env)
            base_mode = "baseline" if size <= DEFAULT_MAX_FILE_BYTES else "baseline-parse"
            base = run_child(base_mode, path, env)
            idle_mb = idle["peak_kib"] / 1024
            ours_mb = ours["peak_kib"] / 1024 - idle_mb
            spool_mb = ours["spool_peak_kib"] / 1024 - idle_mb
            base_mb = base["peak_kib"] / 1024 - idle_mb
            parse_mb = base["parse_peak_kib"] / 1024 - idle_mb
            label = (
                f" (read + parse: {parse_mb:,.0f} MB)"
                if base_mode == "baseline"
                else " (read + parse only: over the upload limit)"
            )
            print(
                f"| {size / 1e6:,.0f} MB | {idle_mb:,.1f} MB | {ours_mb:,.1f} MB ({spool_mb:,.1f} MB) "
                f"| {base_mb:,.0f} MB{label} | {base_mb / ours_mb:,.1f}x "
                f"| {ours['seconds']:.2f} s (spool {ours['spool_s']:.2f} s) | {ours['shards']} |",
                flush=True,
            )
    finally:
        stop_emulator(emulator.process)
        emulator.close()
        shutil.rmtree(emu_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
