"""Benchmark: land N shards of large embedding outputs on local disk and on S3, against a bare baseline.

    python bench/bench_landing.py [--shards 3] [--mb 150] [--delay 0.02] [--today REF] [--targets local s3]

The emulator (unthrottled) runs N embedding batches whose outputs are about ``--mb`` MB each. Each variant then
lands them, in a fresh child process, to (a) a local folder and (b) S3: a moto_server behind
``bench/latency_proxy.py`` (``--delay`` seconds a request):

- *ours*: ``landing.land`` (the operator's landing: one joined ``output.jsonl`` on local disk, one object per
  shard's file on S3), default ``[openai_batch]`` options;
- *today*: the same call on the code of git ref ``--today`` (checked out in a temporary worktree);
- *bare*: the openai client streaming each file (one thread per file) into its place: a local file, or
  boto3's ``upload_fileobj`` with a ``TransferConfig`` (parallel parts); one object per file, no join.

Reported per variant: wall time; peak local disk of the child's scratch (``TMPDIR``, sampled every 20 ms); peak
RSS over idle (``VmHWM`` at the end minus ``VmRSS`` after imports, before landing); CPU seconds of the landing
process and of each server (emulator, moto_server, proxy) during it, and the wall time spent in S3's
``CompleteMultipartUpload`` calls: on a shared 2-core machine the servers' CPU is part of the wall time (moto
joins an upload's parts in Python), so these say where a gap comes from.

Every variant starts from the same state: the kernel's dirty pages flushed (``sync``) and, on S3, an empty bucket.
moto keeps every object over 5 MB in a temporary file, so without that a variant would pay for writing back the
gigabytes the one before it left. What a variant landed is checked by size (every output byte, once) before it
is deleted.
"""

from __future__ import annotations

import argparse
import importlib
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_emulator import read_status_kb  # noqa: E402
from s3_server import start_s3  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
BUCKET = "bench"
EMBEDDINGS = "/v1/embeddings"
MB = 10**6


# -- the child: one landing ------------------------------------------------------------------------------


class _Body(io.RawIOBase):
    """A streamed response as a readable file, for boto3 (the bare baseline)."""

    def __init__(self, chunks: Any) -> None:
        self._chunks, self._rest = chunks, b""

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        while size < 0 or len(self._rest) < size:
            chunk = next(self._chunks, None)
            if chunk is None:
                break
            self._rest += chunk
        if size < 0:
            size = len(self._rest)
        out, self._rest = self._rest[:size], self._rest[size:]
        return out


class _Completions:
    """Times S3's CompleteMultipartUpload calls of the boto3 clients it is attached to: the wall time covered
    by at least one of them (moto joins the parts in Python, on the machine's own cores)."""

    def __init__(self) -> None:
        self.spans: list[tuple[float, float]] = []

    def attach(self, client: Any) -> Any:
        def before(context: dict[str, Any], **_: Any) -> None:
            context["bench_started"] = time.monotonic()

        def after(context: dict[str, Any], **_: Any) -> None:
            self.spans.append((context["bench_started"], time.monotonic()))

        client.meta.events.register("before-call.s3.CompleteMultipartUpload", before)
        client.meta.events.register("after-call.s3.CompleteMultipartUpload", after)
        return client

    def covered(self) -> float:
        total, end = 0.0, float("-inf")
        for start, stop in sorted(self.spans):
            total += max(0.0, stop - max(start, end))
            end = max(end, stop)
        return total


def child(
    variant: str, rounds: list[list[dict[str, Any]]], destination: str, s3: dict[str, str] | None
) -> None:
    completions = _Completions()
    import openai

    if variant != "bare":  # Airflow's import is not landing
        from airflow_provider_openai_batch.hooks.openai_batch import OpenAIBatchHook
        from airflow_provider_openai_batch.lifecycle import landing
        from airflow_provider_openai_batch.storage import to_path

        to_path(destination)  # the storage filesystem's import too
        # The operator re-reads its batches with this hook before it lands, so its client is built by then.
        hook = OpenAIBatchHook()
        hook.get_conn()
        try:
            storage_s3: Any = importlib.import_module("airflow_provider_openai_batch.storage_s3")
        except ImportError:  # the code of --today may not have it
            pass
        else:
            client_for = storage_s3.client_for
            storage_s3.client_for = lambda conn_id: completions.attach(client_for(conn_id))
    else:
        client = openai.OpenAI()
    idle = read_status_kb("self", "VmRSS")
    started, cpu_started = time.monotonic(), sum(os.times()[:2])
    if variant == "bare":
        files = [b["output_file_id"] for rnd in rounds for b in rnd]
        if s3:
            import boto3
            from boto3.s3.transfer import TransferConfig

            s3c = boto3.client(
                "s3",
                endpoint_url=s3["endpoint"],
                aws_access_key_id="testing",
                aws_secret_access_key="testing",
                region_name="us-east-1",
            )
            completions.attach(s3c)
            config = TransferConfig(multipart_chunksize=8 * 2**20, max_concurrency=10)

            def one(i_file: tuple[int, str]) -> None:
                i, file_id = i_file
                with client.files.with_streaming_response.content(file_id) as response:
                    s3c.upload_fileobj(
                        _Body(response.iter_bytes(2**20)),
                        BUCKET,
                        f"{destination}/part-{i}.jsonl",
                        Config=config,
                    )
        else:
            Path(destination).mkdir(parents=True, exist_ok=True)

            def one(i_file: tuple[int, str]) -> None:
                i, file_id = i_file
                with (
                    client.files.with_streaming_response.content(file_id) as response,
                    open(f"{destination}/part-{i}.jsonl", "wb") as out,
                ):
                    for chunk in response.iter_bytes(2**20):
                        out.write(chunk)

        with ThreadPoolExecutor(len(files)) as pool:
            list(pool.map(one, enumerate(files)))
    else:
        with tempfile.TemporaryDirectory() as work:
            landing.land(hook, destination, rounds, [], work)
    print(
        json.dumps(
            {
                "wall": time.monotonic() - started,
                "cpu": sum(os.times()[:2]) - cpu_started,
                "complete": completions.covered(),
                "idle_kb": idle,
                "hwm_kb": read_status_kb("self", "VmHWM"),
            }
        ),
        flush=True,
    )


# -- the parent ------------------------------------------------------------------------------------------


def disk_bytes(folder: Path) -> int:
    total = 0
    for dirpath, _, names in os.walk(folder):
        for name in names:
            try:
                total += os.stat(os.path.join(dirpath, name)).st_blocks * 512
            except OSError:
                pass
    return total


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_child(
    variant: str,
    rounds: Any,
    destination: str,
    env: dict[str, str],
    s3: dict[str, str] | None,
    scratch: Path,
    servers: dict[str, int],
) -> dict[str, Any]:
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)
    args = [
        sys.executable,
        __file__,
        "--child",
        variant,
        "--dest",
        destination,
        "--rounds",
        json.dumps(rounds),
    ]
    if s3:
        args += ["--s3", json.dumps(s3)]
    before = {name: cpu_seconds(pid) for name, pid in servers.items()}
    proc = subprocess.Popen(args, env={**env, "TMPDIR": str(scratch)}, stdout=subprocess.PIPE, text=True)
    peak = 0
    while proc.poll() is None:
        peak = max(peak, disk_bytes(scratch))
        time.sleep(0.02)
    out = proc.stdout.read() if proc.stdout else ""  # type: ignore[union-attr]
    if proc.returncode:
        raise RuntimeError(f"{variant} failed ({proc.returncode})")
    result = json.loads(out.strip().splitlines()[-1])
    cpu = {
        "landing": result["cpu"],
        **{name: cpu_seconds(pid) - before[name] for name, pid in servers.items()},
    }
    return {
        "variant": variant,
        "wall_s": round(result["wall"], 2),
        "s3_complete_s": round(result["complete"], 2),
        "cpu_s": {name: round(seconds, 1) for name, seconds in cpu.items()},
        "peak_disk_mb": round(peak / MB, 1),
        "peak_rss_over_idle_mb": round((result["hwm_kb"] - result["idle_kb"]) * 1024 / MB, 1),
    }


def summarize(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per target and variant: with several rounds, the median round's wall time (and best, in
    brackets); × bare is the ratio of medians. Disk and RSS are the worst round's, CPU the median round's."""
    out = []
    for target, variant in dict.fromkeys((r["target"], r["variant"]) for r in rows):
        mine = sorted(
            (r for r in rows if (r["target"], r["variant"]) == (target, variant)), key=lambda r: r["wall_s"]
        )
        bare = sorted(r["wall_s"] for r in rows if (r["target"], r["variant"]) == (target, "bare"))
        median = mine[len(mine) // 2]
        out.append(
            {
                **median,
                "wall_s": f"{median['wall_s']}" + (f" (best {mine[0]['wall_s']})" if len(mine) > 1 else ""),
                "x_bare": f"{median['wall_s'] / bare[len(bare) // 2]:.2f}",
                "peak_disk_mb": max(r["peak_disk_mb"] for r in mine),
                "peak_rss_over_idle_mb": max(r["peak_rss_over_idle_mb"] for r in mine),
            }
        )
    return out


def check_landed(variant: str, objects: dict[str, int], expected: int) -> None:
    """Every output byte landed once: the JSONL objects (``_manifest.json`` aside) add up to the outputs."""
    landed = sum(size for name, size in objects.items() if name.endswith(".jsonl"))
    if landed != expected:
        raise RuntimeError(f"{variant} landed {landed} bytes of output, not {expected}: {objects}")


def empty_bucket(direct: Any) -> dict[str, int]:
    """Delete every object in the bench bucket (moto drops its temporary files); their names and sizes."""
    objects = {
        item["Key"]: item["Size"]
        for page in direct.get_paginator("list_objects_v2").paginate(Bucket=BUCKET)
        for item in page.get("Contents", [])
    }
    for key in objects:
        direct.delete_object(Bucket=BUCKET, Key=key)
    return objects


def make_batches(base_url: str, shards: int, mb: int) -> list[dict[str, Any]]:
    from openai import OpenAI

    client = OpenAI(base_url=base_url, api_key="sk-bench")
    # About 34 KB of JSON per 3,072-dimension vector; 4 vectors a line.
    per_shard = max(1, mb * MB // (4 * 34_000))
    body = {"model": "text-embedding-3-large", "input": ["a", "b", "c", "d"], "dimensions": 3072}
    batches = []
    for s in range(shards):
        lines = (
            json.dumps({"custom_id": f"s{s}-{i}", "method": "POST", "url": EMBEDDINGS, "body": body})
            for i in range(per_shard)
        )
        data = ("\n".join(lines) + "\n").encode()
        uploaded = client.files.create(file=(f"in{s}.jsonl", data), purpose="batch")
        batches.append(
            client.batches.create(input_file_id=uploaded.id, endpoint=EMBEDDINGS, completion_window="24h").id
        )
    while True:
        got = [client.batches.retrieve(b).model_dump() for b in batches]
        if all(b["status"] == "completed" for b in got):
            return got
        time.sleep(1)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--shards", type=int, default=3)
    parser.add_argument("--mb", type=int, default=150, help="output MB per shard (about)")
    parser.add_argument("--delay", type=float, default=0.02)
    parser.add_argument("--today", default="", help="git ref of today's code (a *today* row per target)")
    parser.add_argument("--targets", nargs="+", default=["local", "s3"])
    parser.add_argument("--repeat", type=int, default=1, help="rounds of every variant, interleaved")
    parser.add_argument(
        "--ours-env", nargs="*", default=[], help="NAME=VALUE for *ours* (e.g. config options)"
    )
    parser.add_argument("--child")
    parser.add_argument("--dest")
    parser.add_argument("--rounds")
    parser.add_argument("--s3")
    args = parser.parse_args()
    if args.child:
        child(args.child, json.loads(args.rounds), args.dest, json.loads(args.s3) if args.s3 else None)
        return

    from airflow_provider_openai_batch.emulator.testing import start_emulator, stop_emulator

    work = Path(tempfile.mkdtemp(prefix="bench-landing-"))
    procs: list[subprocess.Popen[str]] = []
    emulator = start_emulator(
        work / "emulator", settings={"rate": 0, "validating_seconds": 0.1, "finalizing_seconds": 0.1}
    )
    try:
        t = time.monotonic()
        batches = make_batches(emulator.base_url, args.shards, args.mb)
        from openai import OpenAI

        api = OpenAI(base_url=emulator.base_url, api_key="sk-bench")
        sizes = [api.files.retrieve(b["output_file_id"]).bytes for b in batches]
        print(
            f"# {args.shards} shards made in {time.monotonic() - t:.0f} s; output MB: {[s // MB for s in sizes]}"
        )
        rounds = [batches]
        env = {
            **os.environ,
            "OPENAI_BASE_URL": emulator.base_url,
            "OPENAI_API_KEY": "sk-bench",
            "AIRFLOW_CONN_OPENAI_DEFAULT": json.dumps(
                {"conn_type": "openai_batch", "host": emulator.base_url, "password": "sk-bench"}
            ),
        }
        variants = ["bare", "ours"]
        today_root = None
        if args.today:
            today_root = work / "today"
            subprocess.run(
                ["git", "-C", str(ROOT), "worktree", "add", "--detach", str(today_root), args.today],
                check=True,
            )
            variants.append("today")
        s3 = None
        servers: dict[str, int] = {"emulator": emulator.pid} if emulator.pid else {}
        if "s3" in args.targets:
            s3_server = start_s3(BUCKET, args.delay)
            procs += s3_server.procs
            servers.update(s3_server.pids)
            s3 = {"endpoint": s3_server.proxy_url}
            env["AIRFLOW_CONN_AWS_BENCH"] = s3_server.connection()
        expected = sum(sizes)
        rows = []
        for target, _round, variant in (
            (t, r, v) for t in args.targets for r in range(args.repeat) for v in variants
        ):
            venv = dict(env)
            if variant == "today":
                venv["PYTHONPATH"] = str(today_root)
            if variant == "ours":
                venv.update(item.split("=", 1) for item in args.ours_env)
            os.sync()  # no variant pays for the writeback of the one before
            if target == "local":
                dest = str(work / "landed" / variant)
                shutil.rmtree(dest, ignore_errors=True)
                row = run_child(variant, rounds, dest, venv, None, work / "scratch", servers)
                check_landed(variant, {p.name: p.stat().st_size for p in Path(dest).iterdir()}, expected)
            else:
                dest = f"{variant}" if variant == "bare" else f"s3://aws_bench@{BUCKET}/{variant}/"
                row = run_child(
                    variant,
                    rounds,
                    dest,
                    venv,
                    s3 if variant == "bare" else None,
                    work / "scratch",
                    servers,
                )
                check_landed(variant, empty_bucket(s3_server.direct), expected)
            rows.append({"target": target, **row})
            print(json.dumps(rows[-1]), flush=True)
            if target == "local":
                shutil.rmtree(work / "landed" / variant, ignore_errors=True)
        print(
            "\n| target | variant | wall (s) | × bare | peak local disk (MB) | peak RSS over idle (MB) "
            "| CPU s (landing, servers) | in S3 complete (s) |"
        )
        print("|---|---|---|---|---|---|---|---|")
        for row in summarize(rows):
            print(
                f"| {row['target']} | {row['variant']} | {row['wall_s']} | {row['x_bare']} "
                f"| {row['peak_disk_mb']} | {row['peak_rss_over_idle_mb']} "
                f"| {', '.join(f'{k} {v}' for k, v in row['cpu_s'].items())} | {row['s3_complete_s']} |"
            )
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()
        if emulator.process is not None:
            stop_emulator(emulator.process)
        if args.today:
            subprocess.run(
                ["git", "-C", str(ROOT), "worktree", "remove", "--force", str(work / "today")], check=False
            )
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
