"""Benchmark: how long moto_server takes to complete a multipart upload, by object size and checksum.

    python bench/bench_s3_complete.py [--mb 600 1800 2100] [--part-mb 8]

The landing writes one ``output.jsonl`` as one multipart upload; the bare baseline of ``bench_landing.py``
writes one object per file. On moto the completion is where they differ: moto joins the parts in Python and
writes the whole object to a temporary file, so this measures that step alone, straight to moto (no proxy,
nothing else running), for each size:

- one object of the whole size, created with no checksum (moto then computes a whole-object checksum) and with
  ``ChecksumAlgorithm=CRC32`` (a checksum per part, what the landing sends);
- three objects of a third each (CRC32), completed at once from three threads: what one object per shard costs.

Every case starts from flushed dirty pages and an empty bucket. Reported: wall time of the completion(s), moto's
CPU seconds during it, and the kernel's peak ``Dirty`` memory (``/proc/meminfo``, sampled every 50 ms).
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_landing import BUCKET, cpu_seconds, empty_bucket  # noqa: E402
from s3_server import start_s3  # noqa: E402

MIB = 2**20


def dirty_kb() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("Dirty:"):
            return int(line.split()[1])
    return 0


def upload(client: Any, key: str, size: int, part: bytes, checksum: str | None) -> dict[str, Any]:
    """Upload ``size`` bytes as parts of ``part``; what completing it needs."""
    extra = {"ChecksumAlgorithm": checksum} if checksum else {}
    upload_id = client.create_multipart_upload(Bucket=BUCKET, Key=key, **extra)["UploadId"]
    parts = []
    for number in range(1, -(-size // len(part)) + 1):
        answer = client.upload_part(
            Bucket=BUCKET, Key=key, UploadId=upload_id, PartNumber=number, Body=part, **extra
        )
        parts.append(
            {"PartNumber": number, "ETag": answer["ETag"]}
            | ({f"Checksum{checksum}": answer[f"Checksum{checksum}"]} if checksum else {})
        )
    return {"Bucket": BUCKET, "Key": key, "UploadId": upload_id, "MultipartUpload": {"Parts": parts}}


def measure(client: Any, moto_pid: int, completes: list[dict[str, Any]]) -> tuple[float, float, float]:
    """Complete every upload of ``completes`` at once: wall s, moto CPU s, peak dirty MB."""
    os.sync()
    peak, done = [0], threading.Event()

    def sample() -> None:
        while not done.wait(0.05):
            peak[0] = max(peak[0], dirty_kb())

    sampler = threading.Thread(target=sample)
    sampler.start()
    cpu, started = cpu_seconds(moto_pid), time.monotonic()
    with ThreadPoolExecutor(len(completes)) as pool:
        list(pool.map(lambda kwargs: client.complete_multipart_upload(**kwargs), completes))
    wall = time.monotonic() - started
    done.set()
    sampler.join()
    return wall, cpu_seconds(moto_pid) - cpu, peak[0] / 1024


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mb", type=int, nargs="+", default=[600, 1800, 2100], help="object sizes, MiB")
    parser.add_argument("--part-mb", type=int, default=8)
    args = parser.parse_args()
    s3 = start_s3(BUCKET, 0)
    client, moto_pid = s3.direct, s3.pids["moto"]
    part = os.urandom(args.part_mb * MIB)
    print("| size (MiB) | objects | checksum | complete wall (s) | moto CPU (s) | peak dirty (MB) |")
    print("|---|---|---|---|---|---|")
    try:
        for mb in args.mb:
            cases: list[tuple[int, str | None]] = [(1, None), (1, "CRC32"), (3, "CRC32")]
            for objects, checksum in cases:
                size = mb * MIB // objects
                completes = [upload(client, f"k{i}", size, part, checksum) for i in range(objects)]
                wall, cpu, dirty = measure(client, moto_pid, completes)
                print(
                    f"| {mb} | {objects} | {checksum or 'none'} | {wall:.2f} | {cpu:.1f} | {dirty:.0f} |",
                    flush=True,
                )
                empty_bucket(client)
    finally:
        s3.close()


if __name__ == "__main__":
    main()
