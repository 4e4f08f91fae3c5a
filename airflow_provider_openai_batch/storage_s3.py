"""Landing on S3 without a local copy: one streamed file written as one object, in parallel parts.

A multipart upload is invisible until it is completed, so completing it is the atomic step, taken only once
the file was streamed whole; any failure aborts it, and a worker killed midway leaves an incomplete upload that
no reader sees (a bucket lifecycle rule, ``AbortIncompleteMultipartUpload``, clears its parts). The uploads of
one landing (one per OpenAI file) share one :class:`PartPool`, so several objects hold no more parts in memory
than one. Every part carries a CRC32 that S3 checks on arrival and the object keeps a checksum of its parts, as
boto3's own transfer manager does (and, like it, none when the client is set to send checksums only when
required): a part damaged on the way is refused, not landed.
"""

from __future__ import annotations

import logging
import threading
from concurrent.futures import Future, ThreadPoolExecutor, wait
from typing import Any, BinaryIO

#: S3's smallest part (but the last): the least ``landing_part_size_mb``.
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
    """Parts uploaded ``concurrency`` at a time, shared by the uploads of one landing."""

    def __init__(self, concurrency: int) -> None:
        self.executor = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="s3-part")
        self.room = threading.BoundedSemaphore(concurrency)

    def shutdown(self) -> None:
        self.executor.shutdown(wait=True)


class Upload:
    """One object written from one stream by a multipart upload; visible only once :meth:`complete` succeeds,
    aborted by :meth:`abort`. Parts are ``part_size`` bytes but the last; at most the pool's ``concurrency``
    are uploaded at once, and the stream being read holds one more.

    :param parts: the pool its parts are uploaded from, shared by the uploads of one landing.
    """

    def __init__(self, client: Any, bucket: str, key: str, *, part_size: int, parts: PartPool) -> None:
        self.client, self.bucket, self.key, self.part_size = client, bucket, key, part_size
        # As boto3's transfer manager: checksums unless the client sends them only where S3 requires them
        # (``request_checksum_calculation = when_required``, for S3-compatible stores without them).
        sends = client.meta.config.request_checksum_calculation == "when_supported"
        self._checksum = {"ChecksumAlgorithm": CHECKSUM} if sends else {}
        self.upload_id = client.create_multipart_upload(Bucket=bucket, Key=key, **self._checksum)["UploadId"]
        self._pool = parts
        self._parts: list[Part] = []  # of the attempt that wrote the whole stream

    def _put(self, number: int, body: bytes) -> Future[Part]:
        self._pool.room.acquire()

        def put() -> Part:
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
                return part
            finally:
                self._pool.room.release()

        return self._pool.executor.submit(put)

    def write(self, stream: BinaryIO, size: int | None = None) -> None:
        """Upload ``stream`` from its start; a retry replaces an earlier attempt's parts.

        :param size: the stream's size when known: a stream too big for S3's parts at ``part_size`` gets
            bigger parts.
        """
        part = max(self.part_size, -(-size // MAX_PARTS)) if size else self.part_size
        futures: list[Future[Part]] = []
        try:
            while body := _read(stream, part):
                # Part 10,001 is never sent: S3 would refuse it, after the batches were paid for.
                if len(futures) == MAX_PARTS:
                    raise ValueError(
                        f"Expected a file of at most {MAX_PARTS} parts of {part} bytes but it is longer; raise "
                        "[openai_batch] landing_part_size_mb"
                    )
                futures.append(self._put(len(futures) + 1, body))
            self._parts = [future.result() for future in futures]
        except BaseException:
            wait(futures)  # a retry must not race this attempt's parts
            raise

    def complete(self) -> None:
        """Make the object visible, whole: the stream was written."""
        if not self._parts:  # an empty file: an empty object (a multipart upload needs a part)
            self.abort()
            self.client.put_object(Bucket=self.bucket, Key=self.key, Body=b"")
            return
        self.client.complete_multipart_upload(
            Bucket=self.bucket,
            Key=self.key,
            UploadId=self.upload_id,
            MultipartUpload={"Parts": self._parts},
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
