"""Landing on S3 (moto_server) from the emulator over real HTTP: a file of several parts, each checked by its
CRC32; a task's several shards landed as one object each; and a worker killed in the middle of their uploads.

The landing worker is a real subprocess running :func:`landing.land_result` against an S3 connection that goes
through ``bench/latency_proxy.py`` (300 ms a request), so its uploads last long enough to be caught midway.
"""

from __future__ import annotations

import base64
import io
import json
import os
import signal
import subprocess
import sys
import time
import zlib
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from airflow_provider_openai_batch import storage, storage_s3, transfer
from airflow_provider_openai_batch.hooks.openai_batch import OpenAIBatchHook
from airflow_provider_openai_batch.lifecycle import landing
from airflow_provider_openai_batch.reader import read_results
from tests.support.assertions import assert_paid, read_s3_jsonl
from tests.support.builders import jsonl
from tests.support.environment import connected_emulator, short_client_backoff

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
EMBEDDINGS = "/v1/embeddings"


@pytest.fixture
def emulator(openai_emulator, monkeypatch):
    short_client_backoff(monkeypatch)
    yield from connected_emulator(openai_emulator, monkeypatch, timeout=30)


@pytest.fixture
def slow_s3(moto_s3, monkeypatch):
    """An `aws` connection to moto_server through the latency proxy (300 ms a request)."""
    proxy = subprocess.Popen(
        [sys.executable, str(ROOT / "bench" / "latency_proxy.py"), "--target", moto_s3["endpoint"][7:]]
        + ["--delay", "0.3"],
        stdout=subprocess.PIPE,
        text=True,
    )
    url = proxy.stdout.readline().strip().partition("=")[2]  # type: ignore[union-attr]
    conn = {
        "conn_type": "aws",
        "login": "testing",
        "password": "testing",
        "extra": {"endpoint_url": url, "region_name": "us-east-1"},
    }
    monkeypatch.setenv("AIRFLOW_CONN_AWS_SLOW", json.dumps(conn))
    yield {**moto_s3, "conn_id": "aws_slow"}
    proxy.kill()
    proxy.wait()


def embedding_requests(prefix: str, n: int) -> bytes:
    body = {"model": "text-embedding-3-small", "input": ["a", "b"], "dimensions": 3072}
    return jsonl(
        *({"custom_id": f"{prefix}-{i}", "method": "POST", "url": EMBEDDINGS, "body": body} for i in range(n))
    )


def completed_shards(hook: OpenAIBatchHook, shards: int, per_shard: int) -> list[dict]:
    """``shards`` completed embedding batches (each a paid create); about 6 MB of output each."""
    batches = []
    for s in range(shards):
        uploaded = hook.upload_file(
            file=io.BytesIO(embedding_requests(f"s{s}", per_shard)), filename=f"in{s}.jsonl"
        )
        batches.append(hook.create_batch(input_file_id=uploaded.id, endpoint=EMBEDDINGS))
    deadline = time.monotonic() + 120
    while any(b["status"] != "completed" for b in batches):
        assert time.monotonic() < deadline, [b["status"] for b in batches]
        time.sleep(0.5)
        batches = [hook.get_batch(b["id"]) for b in batches]
    return batches


def keys_under(s3, bucket: str, prefix: str) -> list[str]:
    return [o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", [])]


LAND = """
import json, sys
from airflow_provider_openai_batch.hooks.openai_batch import OpenAIBatchHook
from airflow_provider_openai_batch.lifecycle import landing
from airflow_provider_openai_batch.reader import read_results
from airflow_provider_openai_batch.lifecycle import landing
rounds = json.loads(sys.argv[1])
landing.land_result(OpenAIBatchHook(), sys.argv[2], rounds, [], fingerprint="fp", model=None,
                    custom_id_prefix=None)
print("LANDED", flush=True)
"""


def test_a_worker_killed_mid_upload_leaves_nothing_finished_and_the_retry_lands_everything(
    emulator, slow_s3, monkeypatch
):
    s3, bucket = slow_s3["client"], slow_s3["bucket"]
    hook = OpenAIBatchHook()
    batches = completed_shards(hook, 3, 100)
    ids = [f"s{s}-{i}" for s in range(3) for i in range(100)]
    prefix = "kill/2026-11-01/"
    output_path = f"s3://aws_slow@{bucket}/{prefix}"
    env = {
        **os.environ,
        "AIRFLOW__OPENAI_BATCH__LANDING_PART_SIZE_MB": "5",
        "AIRFLOW__OPENAI_BATCH__LANDING_CONCURRENCY": "2",
    }
    args = [sys.executable, "-c", LAND, json.dumps([batches]), output_path]

    worker = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT)
    deadline = time.monotonic() + 180
    caught = None
    while caught is None:
        assert worker.poll() is None, worker.communicate()  # still landing: else the kill came too late
        assert time.monotonic() < deadline
        for upload in s3.list_multipart_uploads(Bucket=bucket, Prefix=prefix).get("Uploads", []):
            parts = s3.list_parts(Bucket=bucket, Key=upload["Key"], UploadId=upload["UploadId"])
            if parts.get("Parts"):
                caught = upload["Key"]
        time.sleep(0.02)
    os.kill(worker.pid, signal.SIGKILL)
    worker.wait()

    names = [f"{prefix}output-{s:05d}.jsonl" for s in range(3)]  # one object per shard's output file
    assert caught in names  # its multipart upload, parts sent, never completed
    assert keys_under(s3, bucket, prefix) == []  # no output object, no _manifest.json, no piece
    left_open = {u["UploadId"] for u in s3.list_multipart_uploads(Bucket=bucket, Prefix=prefix)["Uploads"]}

    retry = subprocess.run(args, env=env, capture_output=True, text=True, cwd=ROOT, timeout=300)

    assert retry.returncode == 0 and "LANDED" in retry.stdout, retry.stderr[-3000:]
    assert keys_under(s3, bucket, prefix) == [f"{prefix}_manifest.json", *names]
    for s, name in enumerate(names):  # each shard's lines in its own object, each once, none torn
        landed = read_s3_jsonl(s3, bucket, name)
        assert [line["custom_id"] for line in landed] == [f"s{s}-{i}" for i in range(100)]
    manifest = json.loads(s3.get_object(Bucket=bucket, Key=f"{prefix}_manifest.json")["Body"].read())
    assert manifest["output_lines"] == 300 and manifest["output_path"] is None
    assert manifest["output_paths"] == [f"s3://aws_slow@{bucket}/{name}" for name in names]
    assert sorted(r["custom_id"] for r in read_results(output_path)) == sorted(ids)
    # The killed worker's uploads stay open (a bucket lifecycle rule clears them); the retry completed its own.
    still_open = s3.list_multipart_uploads(Bucket=bucket, Prefix=prefix).get("Uploads", [])
    assert {u["UploadId"] for u in still_open} == left_open
    assert assert_paid(emulator, 3) == [b["id"] for b in batches]  # landing twice paid nothing more


def test_a_landing_with_fewer_files_replaces_every_earlier_one(emulator, moto_s3):
    """Three shards land as three objects; the same folder landed again from one batch holds only its
    ``output.jsonl``, and the other way round: no file of an earlier landing is left to be read."""
    s3, bucket = moto_s3["client"], moto_s3["bucket"]
    hook = OpenAIBatchHook()
    three = completed_shards(hook, 3, 4)
    prefix = "relanded/"
    output_path = f"s3://{moto_s3['conn_id']}@{bucket}/{prefix}"

    def land(rounds):
        return landing.land_result(
            hook, output_path, rounds, [], fingerprint="fp", model=None, custom_id_prefix=None
        )

    first = land([three])
    numbered = [f"{prefix}output-{s:05d}.jsonl" for s in range(3)]
    assert keys_under(s3, bucket, prefix) == [f"{prefix}_manifest.json", *numbered]
    assert first["output_lines"] == 12 and len(first["output_paths"]) == 3

    second = land([three[:1]])
    assert keys_under(s3, bucket, prefix) == [f"{prefix}_manifest.json", f"{prefix}output.jsonl"]
    assert second["output_path"] == f"{output_path}output.jsonl"
    assert sorted(r["custom_id"] for r in read_results(output_path)) == [f"s0-{i}" for i in range(4)]

    land([three])
    assert keys_under(s3, bucket, prefix) == [f"{prefix}_manifest.json", *numbered]
    assert len(list(read_results(output_path))) == 12
    assert_paid(emulator, 3)


def test_a_file_of_several_parts_lands_whole_with_a_crc32_on_every_part(emulator, moto_s3, monkeypatch):
    """One OpenAI file of four parts and a short tail, streamed from the emulator into its object: byte for byte,
    with a CRC32 on every part that the object's checksum is made of."""
    s3, bucket = moto_s3["client"], moto_s3["bucket"]
    # part number -> (its x-amz-checksum-crc32 header, the CRC32 of its body)
    sent: dict[int, tuple[bytes, bytes]] = {}

    def record(request, **_):
        number = int(parse_qs(urlsplit(request.url).query)["partNumber"][0])
        body = request.body.getvalue()  # botocore sends a part's bytes as a BytesIO
        sent[number] = (
            request.headers.get("x-amz-checksum-crc32"),
            base64.b64encode(zlib.crc32(body).to_bytes(4, "big")),
        )

    client_for = storage_s3.client_for

    def recording_client(conn_id):
        client = client_for(conn_id)
        client.meta.events.register("before-send.s3.UploadPart", record)
        return client

    monkeypatch.setattr(storage_s3, "client_for", recording_client)
    hook = OpenAIBatchHook()
    pad = "x" * 900
    content = jsonl(
        *(
            {"custom_id": f"p-{i}", "method": "POST", "url": EMBEDDINGS, "body": {"input": pad}}
            for i in range(22_000)
        )
    )
    file_id = hook.upload_file(file=io.BytesIO(content), filename="p.jsonl").id
    destination = storage.to_path(f"s3://{moto_s3['conn_id']}@{bucket}/pieces/output.jsonl")

    lines = transfer.write_each(
        [lambda sink: hook.stream_file(file_id, sink)[1].lines],
        [destination],
        transfer.TransferSettings(part_size=5 * 2**20),
    )

    assert lines == [22_000]
    assert s3.get_object(Bucket=bucket, Key="pieces/output.jsonl")["Body"].read() == content
    assert keys_under(s3, bucket, "pieces/") == ["pieces/output.jsonl"]
    assert s3.list_multipart_uploads(Bucket=bucket, Prefix="pieces/").get("Uploads", []) == []
    # Every part carried the CRC32 of its bytes, and the object's checksum is the one of exactly those parts,
    # in order (S3's composite: the CRC32 of the parts' CRC32s), which the completion declared.
    assert sorted(sent) == [1, 2, 3, 4, 5] and all(header == crc for header, crc in sent.values()), sent
    composite = zlib.crc32(b"".join(base64.b64decode(sent[n][1]) for n in sorted(sent))).to_bytes(4, "big")
    head = s3.head_object(Bucket=bucket, Key="pieces/output.jsonl", ChecksumMode="ENABLED")
    assert head.get("ChecksumCRC32", "").partition("-")[0] == base64.b64encode(composite).decode(), head


def in_memory(data: bytes) -> transfer.Source:
    def source(sink) -> int:
        sink(io.BytesIO(data))
        return data.count(b"\n")

    return source


class Broken(io.RawIOBase):
    """A download that drops after its first 6 MiB (a part is already on its way to S3)."""

    def __init__(self) -> None:
        self.sent = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        if self.sent >= 6 * 2**20:
            raise OSError("connection to OpenAI lost midway")
        n = min(len(buffer), 6 * 2**20 - self.sent)
        buffer[:n] = b"x" * (n - 1) + b"\n"
        self.sent += n
        return n


def test_one_file_failing_among_several_leaves_no_object_and_no_open_upload(moto_s3):
    s3, bucket = moto_s3["client"], moto_s3["bucket"]
    prefix = "each-fails/"
    destinations = [
        storage.to_path(f"s3://{moto_s3['conn_id']}@{bucket}/{prefix}output-{i:05d}.jsonl") for i in range(3)
    ]
    big = b"".join(b"%d\n" % i for i in range(2_000_000))  # 15 MB: parts of every file go up

    def broken(sink) -> int:
        sink(io.BufferedReader(Broken()))
        return 0

    with pytest.raises(OSError, match="lost midway"):
        transfer.write_each(
            [in_memory(big), broken, in_memory(big)],
            destinations,
            transfer.TransferSettings(part_size=5 * 2**20),
        )

    assert keys_under(s3, bucket, prefix) == []
    assert s3.list_multipart_uploads(Bucket=bucket, Prefix=prefix).get("Uploads", []) == []  # all aborted


def test_a_failure_while_completing_removes_the_objects_already_completed(moto_s3, monkeypatch):
    """The uploads complete together at the end; one refused there takes the completed ones away with it, so
    no file of the landing is left to be read without the others."""
    s3, bucket = moto_s3["client"], moto_s3["bucket"]
    prefix = "each-complete-fails/"
    destinations = [
        storage.to_path(f"s3://{moto_s3['conn_id']}@{bucket}/{prefix}output-{i:05d}.jsonl") for i in range(3)
    ]
    complete = storage_s3.Upload.complete
    completed: list[str] = []

    def refused_last(self) -> None:
        if self.key.endswith("00001.jsonl"):
            time.sleep(1)  # the others complete first
            raise OSError("S3 refused the completion")
        complete(self)
        completed.append(self.key)

    monkeypatch.setattr(storage_s3.Upload, "complete", refused_last)
    data = [b"".join(b"f%d-%d\n" % (f, i) for i in range(100)) for f in range(3)]

    with pytest.raises(OSError, match="refused the completion"):
        transfer.write_each([in_memory(d) for d in data], destinations, transfer.TransferSettings())

    assert sorted(completed) == [f"{prefix}output-00000.jsonl", f"{prefix}output-00002.jsonl"]
    assert keys_under(s3, bucket, prefix) == []  # the two completed objects were removed
    assert s3.list_multipart_uploads(Bucket=bucket, Prefix=prefix).get("Uploads", []) == []


def test_several_files_land_each_whole_in_its_own_object(moto_s3):
    s3, bucket = moto_s3["client"], moto_s3["bucket"]
    prefix = "each/"
    destinations = [
        storage.to_path(f"s3://{moto_s3['conn_id']}@{bucket}/{prefix}output-{i:05d}.jsonl") for i in range(4)
    ]
    # Sizes around the 5 MiB part: empty, one short part, a part and a tail, several parts.
    data = [
        b"",
        b"a\n" * 10,
        b"b" * (5 * 2**20) + b"\n" + b"c\n" * 100,
        b"".join(b"%d\n" % i for i in range(3_000_000)),
    ]

    lines = transfer.write_each(
        [in_memory(d) for d in data],
        destinations,
        transfer.TransferSettings(part_size=5 * 2**20, concurrency=2),
    )

    assert lines == [d.count(b"\n") for d in data]
    for i, expected in enumerate(data):
        assert s3.get_object(Bucket=bucket, Key=f"{prefix}output-{i:05d}.jsonl")["Body"].read() == expected
    assert s3.list_multipart_uploads(Bucket=bucket, Prefix=prefix).get("Uploads", []) == []
