"""Landing streamed files on storage: several files at once, none copied whole to local disk, joined into one
destination that appears only when whole.

Each source (one output or error file on OpenAI) is streamed straight into its place: on S3 into its own range
of parts of the destination's one multipart upload (:mod:`.storage_s3`), completed once every source is whole;
on local disk into a hidden file beside the destination, the files then appended and renamed into place; on
other object stores into hidden objects, then joined. Sources are fetched ``concurrency`` at a time; a source
whose download drops starts over on its own. Peak memory is set by ``part_size × concurrency`` and no local
disk is used for remote destinations; both are ``[openai_batch]`` options (docs/results.md).
"""

from __future__ import annotations

import logging
import os
import shutil
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from airflow_provider_openai_batch import storage_s3
from airflow_provider_openai_batch.storage import bucket_and_key, connection_of

log = logging.getLogger(__name__)

SECTION = "openai_batch"
#: Defaults, as declared in the provider info's ``config`` section.
DEFAULT_PART_SIZE_MB = 8
DEFAULT_CONCURRENCY = 8
_S3 = ("s3", "s3a")
#: Bytes per read and write on local disk.
COPY_BUFFER = 2**20

#: Streams one file into the consumer it is given (calling it again, afresh, when the download drops) and
#: returns the number of lines it passed on.
Source = Callable[[Callable[[BinaryIO], None]], int]


@dataclass(frozen=True)
class TransferSettings:
    """How landing moves bytes.

    :param part_size: bytes per upload part (at least 5 MiB, S3's minimum).
    :param concurrency: files downloaded at once, and parts uploaded at once.
    """

    part_size: int = DEFAULT_PART_SIZE_MB * 2**20
    concurrency: int = DEFAULT_CONCURRENCY

    def __post_init__(self) -> None:
        if self.part_size < storage_s3.MIN_PART:
            raise ValueError(
                f"Expected [{SECTION}] landing_part_size_mb to be at least 5 (S3's smallest part) but received "
                f"{self.part_size / 2**20:g}"
            )
        if self.concurrency < 1:
            raise ValueError(
                f"Expected [{SECTION}] landing_concurrency to be at least 1 but received {self.concurrency}"
            )

    @classmethod
    def from_config(cls) -> TransferSettings:
        """Read ``landing_part_size_mb`` and ``landing_concurrency`` from ``[openai_batch]``."""
        from airflow_provider_openai_batch.version_compat import conf

        return cls(
            part_size=int(
                conf.getint(SECTION, "landing_part_size_mb", fallback=DEFAULT_PART_SIZE_MB) * 2**20
            ),
            concurrency=conf.getint(SECTION, "landing_concurrency", fallback=DEFAULT_CONCURRENCY),
        )


def write_joined(
    sources: Sequence[Source],
    destination: Any,
    settings: TransferSettings,
) -> list[int]:
    """Land ``sources``, joined, at ``destination`` (an ObjectStoragePath); return each one's lines.

    Nothing appears at ``destination`` before every source landed whole; on any failure the hidden pieces are
    removed and the error raised.
    """
    if destination.protocol == "file":
        return _write_local(sources, Path(destination.path), settings)
    if destination.protocol in _S3:
        return _write_s3(sources, destination, settings)
    return _write_other(sources, destination, settings)


def _hidden(name: str, index: int, tag: str) -> str:
    return f".partial-{tag}-{index}.{name}"


def _parallel(
    sources: Sequence[Source], sink: Callable[[int], Callable[[BinaryIO], None]], workers: int
) -> list[int]:
    """Run every source into its sink, ``workers`` at a time; the first failure is raised once the running
    ones stop (the ones not started are not started)."""
    if len(sources) == 1:
        return [sources[0](sink(0))]
    with ThreadPoolExecutor(max_workers=min(workers, len(sources)), thread_name_prefix="landing") as pool:
        futures = [pool.submit(source, sink(i)) for i, source in enumerate(sources)]
        try:
            wait(futures, return_when=FIRST_EXCEPTION)
        finally:  # a failure, or this thread interrupted (a task timeout): nothing more starts
            for future in futures:
                future.cancel()
        for future in futures:
            if future.done() and not future.cancelled() and future.exception() is not None:
                raise future.exception()  # type: ignore[misc]
        return [future.result() for future in futures]


# -- local disk ------------------------------------------------------------------------------------------


def _write_local(sources: Sequence[Source], destination: Path, settings: TransferSettings) -> list[int]:
    destination.parent.mkdir(parents=True, exist_ok=True)
    tag = uuid.uuid4().hex[:12]
    pieces = [destination.with_name(_hidden(destination.name, i, tag)) for i in range(max(1, len(sources)))]

    def sink(index: int) -> Callable[[BinaryIO], None]:
        def write(stream: BinaryIO) -> None:
            with open(pieces[index], "wb") as out:  # truncated: a retried download starts over
                shutil.copyfileobj(stream, out, COPY_BUFFER)

        return write

    try:
        lines = _parallel(sources, sink, settings.concurrency) if sources else []
        pieces[0].touch()
        with open(pieces[0], "r+b", buffering=0) as out:
            out.seek(0, os.SEEK_END)
            for piece in pieces[1:]:
                _append(piece, out)
                piece.unlink()
        pieces[0].replace(destination)
    except BaseException:
        for piece in pieces:
            piece.unlink(missing_ok=True)
        raise
    return lines


def _append(source: Path, out: Any) -> None:
    """Append file ``source`` to ``out`` (unbuffered, positioned at its end)."""
    with open(source, "rb", buffering=0) as src:
        left = os.fstat(src.fileno()).st_size
        try:  # in the kernel, without passing the bytes through Python
            while left and (sent := os.copy_file_range(src.fileno(), out.fileno(), left)):
                left -= sent
        except (AttributeError, OSError):  # not there: through Python, from where it stopped
            pass
        if left:
            shutil.copyfileobj(src, out, COPY_BUFFER)


# -- S3 --------------------------------------------------------------------------------------------------


def _write_s3(sources: Sequence[Source], destination: Any, settings: TransferSettings) -> list[int]:
    client = storage_s3.client_for(connection_of(destination))
    bucket, key = bucket_and_key(destination)
    with storage_s3.JoinedUpload(
        client,
        bucket,
        key,
        sources=len(sources),
        part_size=settings.part_size,
        concurrency=settings.concurrency,
    ) as upload:

        def sink(index: int) -> Callable[[BinaryIO], None]:
            return lambda stream: upload.write(index, stream, getattr(stream, "size", None))

        lines = _parallel(sources, sink, settings.concurrency) if sources else []
        upload.complete()
    return lines


# -- other object stores (GCS, Azure, ...) ----------------------------------------------------------------


def _write_other(sources: Sequence[Source], destination: Any, settings: TransferSettings) -> list[int]:
    """Through fsspec: each source into a hidden object, then streamed into one hidden object and moved."""
    tag = uuid.uuid4().hex[:12]
    pieces = [destination.parent / _hidden(destination.name, i, tag) for i in range(len(sources))]
    joined = destination.parent / _hidden(destination.name, len(sources), tag)

    def sink(index: int) -> Callable[[BinaryIO], None]:
        def write(stream: BinaryIO) -> None:
            with pieces[index].open("wb", block_size=settings.part_size) as out:
                shutil.copyfileobj(stream, out, settings.part_size)

        return write

    try:
        lines = _parallel(sources, sink, settings.concurrency) if sources else []
        with joined.open("wb", block_size=settings.part_size) as out:
            for piece in pieces:
                with piece.open("rb", block_size=settings.part_size) as src:
                    shutil.copyfileobj(src, out, settings.part_size)
        joined.fs.mv(joined.path, destination.path)
    finally:
        for path in (*pieces, joined):
            try:
                if path.exists():
                    path.unlink()
            except Exception:  # best effort: hidden names
                pass
    return lines
