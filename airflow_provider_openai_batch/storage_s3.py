"""Landing on S3 without a local copy: several streams written at once, in parallel parts, as one object (or
as several, each its own upload, their parts sharing one :class:`PartPool`).

A multipart upload is invisible until it is completed, so completing it is the atomic step, taken only once
every stream was written whole; any failure aborts it, and a worker killed midway leaves an incomplete upload
that no reader sees (a bucket lifecycle rule, ``AbortIncompleteMultipartUpload``, clears its parts). Each
stream (shard, round) writes its own range of part numbers, so the join costs nothing: no temporary object,
no server-side copy. S3 wants every part but the last to be at least 5 MiB; a stream's tail rides with its
last part, and streams shorter than a part are gathered into parts after every range. So the lines of a short
stream may come after those of a longer one that follows it: each line whole, each line once. Every part
carries a CRC32 that S3 checks on arrival and the object keeps a checksum of its parts, as boto3's own
transfer manager does (and, like it, none when the client is set to send checksums only when required): a
part damaged on the way is refused, not landed.
"""

from __future__ import annotations

import logging
import threading
from concurrent.futures import Future, ThreadPoolExecutor, wait
from typing import Any, BinaryIO

#: S3's smallest part (but the last).
MIN_PART = 5 * 2**20
#: S3's most parts in one upload.
MAX_PARTS = 10_000
#: The checksum every part carries, as boto3's transfer manager sends by default.
CHECKSUM = "CRC32"

_CHECKSUM_FIELD = f"Checksum{CHECKSUM}"
#: One uploaded part as CompleteMultipartUpload wants it: number, ETag and checksum.
Part = dict[str, Any]

log = logging.getLogger(__name__)


def _read(stream: BinaryIO, size: int) -> bytes:
    """``size`` bytes, fewer only at the end of the stream (a read may return less than it was asked)."""
    data = stream.read(size)
    if len(data) in (0, size):
        return data
    chunks = [data]
    got = len(data)
    while got < size and (more := stream.read(size - got)):
        chunks.append(more)
        got += len(more)
    return b"".join(chunks)


def client_for(conn_id: str | None) -> Any:
    """A boto3 S3 client with the credentials (and endpoint) of Airflow connection ``conn_id``."""
    from airflow.providers.amazon.aws.hooks.s3 import S3Hook

    return S3Hook(aws_conn_id=conn_id).get_conn()


class PartPool:
    """Parts uploaded ``concurrency`` at a time, shared by the uploads of one landing (so several objects written
    at once hold no more parts in memory than one)."""

    def __init__(self, concurrency: int) -> None:
        self.executor = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="s3-part")
        self.room = threading.BoundedSemaphore(concurrency)

    def shutdown(self) -> None:
        self.executor.shutdown(wait=True)


class JoinedUpload:
    """One object written by one multipart upload from several streams at once, each in its own range of part
    numbers; visible only once :meth:`complete` succeeds, aborted by :meth:`abort` (or on leaving a ``with``
    block by an exception).

    A stream's parts are ``part_size`` bytes but its last, which takes the stream's tail (up to twice
    ``part_size``), so every part is big enough for S3. A stream shorter than one part is gathered with the
    other short ones into parts of their own, after every range. At most ``concurrency`` parts are uploaded
    at once; each stream being read holds two more (the part it holds back and the next).

    :param sources: how many streams will be written (each gets a range of part numbers).
    :param parts: the pool its parts are uploaded from, when several uploads share one (else its own, of
        ``concurrency`` threads).
    """

    def __init__(
        self,
        client: Any,
        bucket: str,
        key: str,
        *,
        sources: int,
        part_size: int,
        concurrency: int,
        parts: PartPool | None = None,
    ) -> None:
        self.client, self.bucket, self.key, self.part_size = client, bucket, key, part_size
        # Gathered parts hold at least part_size bytes of streams each shorter than part_size: at most one
        # per two streams, plus the rest. The ranges share what is left of S3's 10,000 part numbers.
        self.span = (MAX_PARTS - sources // 2 - 2) // max(sources, 1)
        if self.span < 2:
            raise ValueError(
                f"Expected at most {(MAX_PARTS - 2) * 2 // 5} files to join into one S3 object but received "
                f"{sources}: S3 allows {MAX_PARTS} parts in one upload"
            )
        # As boto3's transfer manager: checksums unless the client sends them only where S3 requires them
        # (``request_checksum_calculation = when_required``, for S3-compatible stores without them).
        sends = client.meta.config.request_checksum_calculation == "when_supported"
        self._checksum = {"ChecksumAlgorithm": CHECKSUM} if sends else {}
        self.upload_id = client.create_multipart_upload(Bucket=bucket, Key=key, **self._checksum)["UploadId"]
        self._own = parts is None
        self._parts_in_flight = parts or PartPool(concurrency)
        self._lock = threading.Lock()
        self._parts: dict[int, dict[int, Part]] = {}  # stream index -> part number -> what completes it
        self._gathered: list[bytes] = []
        self._next_gathered = 1 + sources * self.span

    def __enter__(self) -> JoinedUpload:
        return self

    def __exit__(self, kind: object, *exc: object) -> None:
        if self._own:
            self._parts_in_flight.shutdown()
        if kind is not None:
            self.abort()

    def _put(self, number: int, body: bytes) -> Future[tuple[int, Part]]:
        if not 1 <= number <= MAX_PARTS:  # never sent: S3 would refuse it, after the batches were paid for
            raise ValueError(f"Part number {number} is outside S3's 1 to {MAX_PARTS}")
        pool = self._parts_in_flight
        pool.room.acquire()

        def put() -> tuple[int, Part]:
            try:
                answer = self.client.upload_part(
                    Bucket=self.bucket,
                    Key=self.key,
                    UploadId=self.upload_id,
                    PartNumber=number,
                    Body=body,
                    **self._checksum,
                )
                part: Part = {"PartNumber": number, "ETag": answer["ETag"]}
                # S3 wants each part's checksum back at completion; a store without checksums sends none.
                if _CHECKSUM_FIELD in answer:
                    part[_CHECKSUM_FIELD] = answer[_CHECKSUM_FIELD]
                return number, part
            finally:
                pool.room.release()

        return pool.executor.submit(put)

    def write(self, index: int, stream: BinaryIO, size: int | None = None) -> None:
        """Upload stream number ``index`` from its start; a retry replaces an earlier attempt's parts.

        :param size: the stream's size when known: a stream too big for its range of part numbers at
            ``part_size`` gets bigger parts.
        """
        part = self.part_size
        if size:
            part = max(part, -(-size // (self.span - 1)))
        held = _read(stream, part)
        if len(held) < part:  # the whole stream is short: gathered (complete, so never retried)
            self._gather(held)
            return
        first = number = 1 + index * self.span
        futures: list[Future[tuple[int, Part]]] = []
        try:
            while True:
                following = _read(stream, part)
                if len(following) < part:
                    futures.append(self._put(number, held + following))
                    break
                futures.append(self._put(number, held))
                number, held = number + 1, following
                if number - first >= self.span - 1:
                    raise ValueError(
                        f"Expected a file of at most {self.span - 1} parts of {part} bytes but it is longer; "
                        "raise [openai_batch] landing_part_size_mb"
                    )
            parts = dict(future.result() for future in futures)
        except BaseException:
            wait(futures)  # a retry must not race this attempt's parts
            raise
        with self._lock:
            self._parts[index] = parts

    def _gather(self, data: bytes) -> None:
        with self._lock:
            self._gathered.append(data)
            if sum(map(len, self._gathered)) < self.part_size:
                return
            body, self._gathered = b"".join(self._gathered), []
            number, self._next_gathered = self._next_gathered, self._next_gathered + 1
        number, part = self._put(number, body).result()
        with self._lock:
            self._parts.setdefault(-1, {})[number] = part

    def complete(self) -> None:
        """Make the object visible, whole: every stream was written."""
        rest = b"".join(self._gathered)
        if rest:
            number, part = self._put(self._next_gathered, rest).result()
            self._parts.setdefault(-1, {})[number] = part
        parts = [part for _, part in sorted(p for stream in self._parts.values() for p in stream.items())]
        if not parts:  # nothing at all: an empty object (a multipart upload needs a part)
            self.abort()
            self.client.put_object(Bucket=self.bucket, Key=self.key, Body=b"")
            return
        self.client.complete_multipart_upload(
            Bucket=self.bucket,
            Key=self.key,
            UploadId=self.upload_id,
            MultipartUpload={"Parts": parts},
        )

    def remove(self) -> None:
        """Delete the object a completed upload made (a landing that failed after it was completed)."""
        try:
            self.client.delete_object(Bucket=self.bucket, Key=self.key)
        except Exception as err:  # the folder has no manifest, so it does not look finished anyway
            log.warning("Could not remove %s after a failed landing: %s", self.key, type(err).__name__)

    def abort(self) -> None:
        try:
            self.client.abort_multipart_upload(Bucket=self.bucket, Key=self.key, UploadId=self.upload_id)
        except Exception as err:  # invisible anyway; a bucket lifecycle rule clears its parts
            log.warning("Could not abort the multipart upload of %s: %s", self.key, type(err).__name__)
