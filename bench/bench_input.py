"""Benchmark the input pipeline: spool_requests against a bare parse loop, and its peak memory.

    python bench/bench_input.py --mb 50 200 1000
    python bench/bench_input.py --mb 50 --compare /tmp/old   # against another checkout

For each size, a realistic chat-completions JSONL (about 1 KB a line) is generated once under
``--dir`` and reused. Then, in the same run:

(a) floor: read the file line by line and ``orjson.loads`` every line (the fastest parser installed);
(b) ``spool_requests`` on the same file (validate, shard, fingerprint, write the shards), in wall time and in
    CPU time of the calling thread (one core: the sha256 helper thread is left out);
(c) peak RSS (VmHWM, else ru_maxrss) of ``spool_requests`` in a fresh subprocess, against an
    in-memory approach (read the whole file, parse every line into a list), both minus an idle
    interpreter with the same imports.

Throughput is the best of ``--repeat`` runs, after one warm-up read that puts the file in the page cache.

With ``--compare DIR`` (a checkout of another commit, e.g. made by ``git worktree add DIR <commit>``), (a) runs
interleaved with (b) of this checkout and (b) of DIR's, one run of each per round, in alternating order, for
``--rounds`` rounds: load on a shared machine then hits all three alike. Best and median of the rounds, in
wall time and in CPU time (``process_time``: all threads, user and system), which a busy machine disturbs
far less: a process waiting for a core uses none.

With ``--task-heap``, the Airflow task SDK and the Amazon provider's S3 hook are imported before anything is
timed, as they are in a task that spools its input: the garbage collector then walks a heap of about 170,000
tracked objects whenever it runs (about 5,000 without), which the floor and the spool pay alike.
"""

from __future__ import annotations

import argparse
import importlib
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

try:
    import orjson

    loads, dumps = orjson.loads, orjson.dumps
    PARSER = f"orjson {orjson.__version__}"
except ImportError:  # pragma: no cover
    import json

    loads = json.loads

    def dumps(obj):
        return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()

    PARSER = "json (stdlib)"

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = "airflow_provider_openai_batch"

ENDPOINT = "/v1/chat/completions"
WORDS = (
    "the of and to in is that for it as was with be by on not he this are or his from at which but have "
    "an they you were her she there been one all we their has would when if so no will more can about "
    "invoice customer résumé naïve café 東京 données über straße analyse summarize classify sentiment"
).split()
SYSTEM = "You are a careful assistant. Answer in JSON with keys 'label' and 'reason'. Keep the reason short."


def generate(path: Path, mb: int) -> None:
    rng = random.Random(mb)
    target = mb * 1_000_000
    tmp = path.with_suffix(".part")
    written = 0
    i = 0
    with open(tmp, "wb") as f:
        while written < target:
            block = []
            for _ in range(1000):
                text = " ".join(rng.choices(WORDS, k=rng.randint(40, 260)))
                request = {
                    "custom_id": f"doc-{i:09d}",
                    "method": "POST",
                    "url": ENDPOINT,
                    "body": {
                        "model": "gpt-4o-mini",
                        "messages": [
                            {"role": "system", "content": SYSTEM},
                            {"role": "user", "content": f'Classify this text:\n"{text}"'},
                        ],
                        "max_tokens": 200,
                        "temperature": 0,
                        "response_format": {"type": "json_object"},
                    },
                }
                block.append(dumps(request))
                i += 1
            data = b"\n".join(block) + b"\n"
            f.write(data)
            written += len(data)
    tmp.rename(path)


def floor(path: Path) -> int:
    n = 0
    with open(path, "rb") as f:
        for line in f:
            loads(line)
            n += 1
    return n


def spool(spool_requests, path: Path, workdir: str) -> int:
    with open(path, "rb") as f:
        result = spool_requests(f, endpoint=ENDPOINT, workdir=workdir, source_name=path.name)
    return result.total_requests


def empty(workdir: str) -> None:
    """Remove the last run's shards, outside the clock: a task spools into a fresh folder, while overwriting
    earlier shard files would time the kernel freeing them (about 20 ms per 50 MB)."""
    for name in os.listdir(workdir):
        os.remove(os.path.join(workdir, name))


def best(fn, repeat: int, before=None) -> tuple[float, float]:
    """Best wall time and best CPU time of the calling thread (``thread_time``: the one core the work
    runs on, without the spool's sha256 helper thread) of ``repeat`` runs (``before`` runs untimed
    ahead of each)."""
    times, cpu = [], []
    for _ in range(repeat):
        if before is not None:
            before()
        start, start_cpu = time.perf_counter(), time.thread_time()
        fn()
        times.append(time.perf_counter() - start)
        cpu.append(time.thread_time() - start_cpu)
    return min(times), min(cpu)


# Peak RSS is read from VmHWM on Linux: ru_maxrss survives exec, so a child would report its parent's
# high-water mark whenever that is larger.
CHILD = """
import resource, sys
sys.path.insert(0, {root!r})

def peak_kib():
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

import orjson
from airflow_provider_openai_batch.batch_input import spool_requests
mode, path, workdir = sys.argv[1:4]
if mode == "spool":
    with open(path, "rb") as f:
        spool_requests(f, endpoint={endpoint!r}, workdir=workdir, source_name="bench")
elif mode == "inmem":
    with open(path, "rb") as f:
        rows = [orjson.loads(line) for line in f.read().splitlines()]
print(peak_kib())
"""


def load_spool_requests(root: str):
    """Import ``spool_requests`` from the checkout at ``root``, forgetting any copy of the package imported
    before, so that two checkouts' versions can be timed in one process. Each call puts its checkout's modules
    back in ``sys.modules`` first: msgspec looks up a type's string annotations there when a decoder is made."""

    def package_modules() -> list[str]:
        return [n for n in sys.modules if n == PACKAGE or n.startswith(PACKAGE + ".")]

    for name in package_modules():
        del sys.modules[name]
    sys.path.insert(0, root)
    try:
        module = importlib.import_module(PACKAGE + ".batch_input")
    finally:
        sys.path.remove(root)
    modules = {name: sys.modules[name] for name in package_modules()}

    def spool_requests(*args, **kwargs):
        sys.modules.update(modules)
        return module.spool_requests(*args, **kwargs)

    return spool_requests


def compare(args: argparse.Namespace, data_dir: Path) -> None:
    spools = {
        "compare": load_spool_requests(str(Path(args.compare).resolve())),
        "this": load_spool_requests(str(ROOT)),
    }
    print(f"this: {ROOT}; compare: {Path(args.compare).resolve()}")
    print()
    print(
        "| input | runs | | floor | this: spool | spool/floor | compare: spool | spool/floor | this/compare |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for mb in args.mb:
        path = data_dir / f"chat-{mb}mb.jsonl"
        if not path.exists():
            generate(path, mb)
        floor(path)  # warm-up: puts the file in the page cache
        wall: dict[str, list[float]] = {"floor": [], "this": [], "compare": []}
        cpu: dict[str, list[float]] = {"floor": [], "this": [], "compare": []}
        workdir = tempfile.mkdtemp(prefix="spool-", dir=args.workdir_in or data_dir)
        try:
            for round_no in range(args.rounds):
                order = ["floor", "this", "compare"]
                for name in order if round_no % 2 == 0 else reversed(order):
                    empty(workdir)
                    start, start_cpu = time.perf_counter(), time.process_time()
                    if name == "floor":
                        floor(path)
                    else:
                        spool(spools[name], path, workdir)
                    wall[name].append(time.perf_counter() - start)
                    cpu[name].append(time.process_time() - start_cpu)
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
        for clock, times in (("wall", wall), ("CPU", cpu)):
            for label, pick in (("best", min), ("median", statistics.median)):
                f, t, c = (pick(times[k]) for k in ("floor", "this", "compare"))
                print(
                    f"| {mb:,} MB | {args.rounds} | {clock}, {label} | {f:.3f} s | {t:.3f} s | {t / f:.2f}x "
                    f"| {c:.3f} s | {c / f:.2f}x | {t / c:.3f} |",
                    flush=True,
                )


def peak_rss_mb(mode: str, path: Path, workdir: str) -> float:
    code = CHILD.format(root=str(ROOT), endpoint=ENDPOINT)
    out = subprocess.run(
        [sys.executable, "-c", code, mode, str(path), workdir], check=True, capture_output=True, text=True
    )
    return int(out.stdout.strip()) / 1024  # KiB


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--mb", type=int, nargs="+", default=[50, 200])
    parser.add_argument("--dir", default=os.path.join(tempfile.gettempdir(), "openai-batch-bench"))
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument(
        "--workdir-in",
        default=None,
        help="where spool_requests writes its shards (default: under --dir); e.g. /dev/shm to leave the disk out",
    )
    parser.add_argument("--no-memory", action="store_true", help="skip (c), the subprocess peak-RSS runs")
    parser.add_argument("--compare", metavar="DIR", help="checkout to time against this one (see above)")
    parser.add_argument("--rounds", type=int, default=15, help="with --compare: runs of each, interleaved")
    parser.add_argument(
        "--task-heap", action="store_true", help="import what an Airflow task holds before timing (see above)"
    )
    args = parser.parse_args()
    if args.task_heap:
        import gc

        import airflow.providers.amazon.aws.hooks.s3  # noqa: F401
        import airflow.sdk  # noqa: F401

        print(f"task heap: {len(gc.get_objects()):,} objects tracked by the garbage collector")

    data_dir = Path(args.dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    print(f"python {sys.version.split()[0]}, parser {PARSER}, {os.cpu_count()} CPUs, data in {data_dir}")
    if args.compare:
        compare(args, data_dir)
        return
    sys.path.insert(0, str(ROOT))
    from airflow_provider_openai_batch.batch_input import spool_requests

    print()
    print(
        "| input | lines | floor: read+parse | spool_requests | spool/floor | spool/floor, CPU of the calling "
        "thread | shards |"
    )
    print("|---|---|---|---|---|---|---|")
    rows = []
    for mb in args.mb:
        path = data_dir / f"chat-{mb}mb.jsonl"
        if not path.exists():
            generate(path, mb)
        size = path.stat().st_size / 1e6
        lines = floor(path)  # warm-up: puts the file in the page cache
        workdir = tempfile.mkdtemp(prefix="spool-", dir=args.workdir_in or data_dir)
        try:
            t_floor, c_floor = best(lambda path=path: floor(path), args.repeat)
            t_spool, c_spool = best(
                lambda path=path, workdir=workdir: spool(spool_requests, path, workdir),
                args.repeat,
                lambda workdir=workdir: empty(workdir),
            )
            shards = len([n for n in os.listdir(workdir) if n.startswith("shard-")])
            print(
                f"| {size:,.0f} MB | {lines:,} | {size / t_floor:,.0f} MB/s ({t_floor:.2f} s) "
                f"| {size / t_spool:,.0f} MB/s ({t_spool:.2f} s) | {t_spool / t_floor:.2f}x "
                f"| {c_spool / c_floor:.2f}x ({c_floor:.2f} s, {c_spool:.2f} s) | {shards} |",
                flush=True,
            )
            rows.append((mb, path, workdir))
        except BaseException:
            shutil.rmtree(workdir, ignore_errors=True)
            raise
    if not args.no_memory:
        print()
        print(
            "| input | idle interpreter | spool_requests peak RSS (over idle) | in-memory list (over idle) |"
        )
        print("|---|---|---|---|")
        for mb, path, workdir in rows:
            idle = peak_rss_mb("idle", path, workdir)
            spooled = peak_rss_mb("spool", path, workdir)
            inmem = peak_rss_mb("inmem", path, workdir)
            print(
                f"| {mb:,} MB | {idle:,.1f} MB | {spooled - idle:,.1f} MB | {inmem - idle:,.0f} MB |",
                flush=True,
            )
    for _, _, workdir in rows:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
