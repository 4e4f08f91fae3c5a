"""Landing on S3 without a local copy: a stream uploaded in parallel parts, and pieces joined server-side.

A multipart upload is invisible until it is completed, so completing it is the atomic step: s3transfer's
manager completes an upload only once every part went up, and aborts it on any failure (a dropped download
included). A worker killed midway leaves an incomplete upload that no reader sees (a bucket lifecycle rule,
``AbortIncompleteMultipartUpload``, clears its parts). Several pieces (shards, rounds) become one object with
UploadPartCopy; S3 wants every part but the last to be at least 5 MiB, so :func:`plan_parts` (pure) copies
the pieces server-side where they are big enough and carries small ones, and the few bytes it takes to make a
part big enough, through the worker.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, BinaryIO

from s3transfer.manager import TransferConfig, TransferManager  # type: ignore[import-untyped]

#: S3's smallest part (but the last) and largest part.
MIN_PART = 5 * 2**20
MAX_PART = 5 * 2**30


@dataclass(frozen=True)
class Range:
    """Bytes ``[start, end)`` of piece number ``piece``."""

    piece: int
    start: int
    end: int


def plan_parts(
    sizes: Sequence[int], *, min_part: int = MIN_PART, max_part: int = MAX_PART
) -> list[tuple[Range, ...]]:
    """The parts of the object joining pieces of ``sizes`` in order, each part a tuple of ranges.

    A part of one range of at least ``min_part`` bytes is copied server-side; any other part is read and
    uploaded by the worker, and is smaller than ``2 * min_part``. Every part but the last has at least
    ``min_part`` bytes and at most ``max_part``.
    """
    parts: list[tuple[Range, ...]] = []
    pending: list[Range] = []
    held = 0
    for piece, size in enumerate(sizes):
        if not size:
            continue
        pos = 0
        if pending:
            need = min_part - held
            if size - need >= min_part:
                parts.append((*pending, Range(piece, 0, need)))
                pending, held, pos = [], 0, need
            else:
                pending.append(Range(piece, 0, size))
                held += size
                if held >= min_part:
                    parts.append(tuple(pending))
                    pending, held = [], 0
                continue
        left = size - pos
        if left >= min_part:
            count = math.ceil(left / max_part)
            bounds = [pos + left * i // count for i in range(count + 1)]
            parts.extend((Range(piece, a, b),) for a, b in zip(bounds, bounds[1:], strict=False))
        elif left:
            pending, held = [Range(piece, pos, size)], left
    if pending:
        parts.append(tuple(pending))
    return parts


def client_for(conn_id: str | None) -> Any:
    """A boto3 S3 client with the credentials (and endpoint) of Airflow connection ``conn_id``."""
    from airflow.providers.amazon.aws.hooks.s3 import S3Hook

    return S3Hook(aws_conn_id=conn_id).get_conn()


class Uploader:
    """Uploads streams as objects in parallel parts; at most ``concurrency`` parts are held in memory at once.

    :param part_size: bytes per part (at least 5 MiB); a stream shorter than one part is a single PUT.
    :param concurrency: parts uploaded at once, and streams read at once.
    """

    def __init__(self, client: Any, *, part_size: int, concurrency: int) -> None:
        config = TransferConfig(
            multipart_threshold=part_size,
            multipart_chunksize=part_size,
            max_request_concurrency=concurrency,
            max_submission_concurrency=concurrency,
            max_in_memory_upload_chunks=concurrency,
        )
        self.client = client
        self._manager = TransferManager(client, config)

    def __enter__(self) -> Uploader:
        return self

    def __exit__(self, *exc: object) -> None:
        self._manager.shutdown(cancel=exc[0] is not None)

    def upload(self, stream: BinaryIO, bucket: str, key: str) -> None:
        """Upload ``stream`` to ``key``, visible only when whole; any failure aborts it and is raised."""
        self._manager.upload(stream, bucket, key).result()


def compose(client: Any, bucket: str, key: str, pieces: Sequence[tuple[str, int]], concurrency: int) -> None:
    """Join the objects ``pieces`` (key, size), in order, into ``key``, visible only when complete.

    :raises: whatever S3 raised; the multipart upload is then aborted, never completed.
    """
    plan = plan_parts([size for _, size in pieces])
    if not plan:
        client.put_object(Bucket=bucket, Key=key, Body=b"")
        return
    upload_id = client.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"]

    def put(number: int, ranges: tuple[Range, ...]) -> dict[str, Any]:
        common = {"Bucket": bucket, "Key": key, "UploadId": upload_id, "PartNumber": number}
        if len(ranges) == 1 and ranges[0].end - ranges[0].start >= MIN_PART:
            r = ranges[0]
            answer = client.upload_part_copy(
                **common,
                CopySource={"Bucket": bucket, "Key": pieces[r.piece][0]},
                CopySourceRange=f"bytes={r.start}-{r.end - 1}",
            )
            return {"PartNumber": number, "ETag": answer["CopyPartResult"]["ETag"]}
        body = b"".join(
            client.get_object(Bucket=bucket, Key=pieces[r.piece][0], Range=f"bytes={r.start}-{r.end - 1}")[
                "Body"
            ].read()
            for r in ranges
        )
        return {"PartNumber": number, "ETag": client.upload_part(**common, Body=body)["ETag"]}

    try:
        with ThreadPoolExecutor(max_workers=max(1, concurrency)) as pool:
            parts = list(pool.map(put, range(1, len(plan) + 1), plan))
        client.complete_multipart_upload(
            Bucket=bucket, Key=key, UploadId=upload_id, MultipartUpload={"Parts": parts}
        )
    except BaseException:
        client.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id)
        raise
