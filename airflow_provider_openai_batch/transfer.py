"""Landing streamed files on storage: several files at once, none copied whole to local disk, each appearing
only when whole: joined into one file on local disk (:func:`write_joined`), one object each on object storage
(:func:`write_each`).

On local disk each source (one output or error file on OpenAI) is written at its own offset of one hidden file
beside the destination (the sum of the sizes before it, from each download's ``content-length``), renamed into
place. On S3 each source streams into its own multipart upload (:mod:`.storage_s3`); the uploads share one pool
of part uploads and are completed together once every source is whole. On other object stores each source goes
into a hidden object, then is moved into place. Sources are fetched ``concurrency`` at a time; a source whose
download drops starts over on its own. Peak memory is set by ``part_size × concurrency`` and no local disk is
used for remote destinations; both are ``[openai_batch]`` options (docs/results.md).
"""

from __future__ import annotations

import logging
import os
import shutil
import threading
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


def write_joined(sources: Sequence[Source], destination: Any, settings: TransferSettings) -> list[int]:
    """Land ``sources``, joined in order, at ``destination`` (an ObjectStoragePath on local disk); return each
    one's lines.

    Nothing appears at ``destination`` before every source landed whole; on any failure the hidden pieces are
    removed and the error raised.
    """
    if destination.protocol != "file":
        raise ValueError(
            f"Expected a local destination to join files into but received {destination}: object storage lands "
            "each file as its own object (write_each)"
        )
    return _write_local(sources, Path(destination.path), settings)


def write_each(
    sources: Sequence[Source], destinations: Sequence[Any], settings: TransferSettings
) -> list[int]:
    """Land each source at its own destination (ObjectStoragePaths in one object store); return each one's lines.

    None appears while another is still streaming; on any failure none is left.
    """
    if len(sources) != len(destinations):
        raise ValueError(
            f"Expected a destination per source but received {len(destinations)} for {len(sources)}"
        )
    if not sources:
        return []
    if destinations[0].protocol in _S3:
        return _write_s3(sources, destinations, settings)
    return _write_other(sources, destinations, settings)


def _hidden(name: str, index: int | str, tag: str) -> str:
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


class _Abandoned(Exception):
    """An earlier source failed: a later one stops waiting for its offset (the earlier failure is raised)."""


@dataclass
class _Piece:
    """Where one source's bytes went: ``written`` bytes at ``offset`` of the joined file, out of the ``reserved``
    ones, then ``tail`` (a newline added to a last line that lacked one); or, with ``path``, a file of its own."""

    offset: int = 0
    reserved: int = 0
    written: int = 0
    tail: bytes = b""
    path: Path | None = None

    @property
    def in_place(self) -> bool:
        return self.path is None and self.written == self.reserved and not self.tail


class _Layout:
    """Each source's offset in the joined file: the sum of the sizes of the sources before it, known once each of
    them has started (sources start in order, so an earlier one is running or done when a later one asks). A
    source whose size is not known up front (lines filtered, a compressed body), and every one after it, gets a
    file of its own."""

    def __init__(self, count: int) -> None:
        self._sizes: list[int | None] = [None] * count
        self._said = [False] * count
        self._abandoned = False
        self._changed = threading.Condition()

    def say(self, index: int, size: int | None) -> int | None:
        """Record source ``index``'s size (its first attempt's; a retry keeps it) and return it."""
        with self._changed:
            if not self._said[index]:
                self._sizes[index], self._said[index] = size, True
                self._changed.notify_all()
            return self._sizes[index]

    def offset(self, index: int) -> int | None:
        """Where source ``index`` starts, once every earlier one said its size; None when one of them could not."""
        with self._changed:
            self._changed.wait_for(lambda: self._abandoned or all(self._said[:index]))
            if self._abandoned:
                raise _Abandoned
            earlier = self._sizes[:index]
            return None if None in earlier else sum(earlier)  # type: ignore[arg-type]

    def abandon(self) -> None:
        with self._changed:
            self._abandoned = True
            self._changed.notify_all()


def _write_local(sources: Sequence[Source], destination: Path, settings: TransferSettings) -> list[int]:
    """Each source written at its own offset of one hidden file, renamed into place when all are whole: no
    bytes are copied after download. A source that did not fill its range exactly (a newline added, a size that
    changed on retry, a size not known) makes one sequential rewrite of the whole file, in the kernel."""
    destination.parent.mkdir(parents=True, exist_ok=True)
    tag = uuid.uuid4().hex[:12]
    joined = destination.with_name(_hidden(destination.name, "joined", tag))
    rebuilt = destination.with_name(_hidden(destination.name, "rebuilt", tag))
    own = [destination.with_name(_hidden(destination.name, i, tag)) for i in range(len(sources))]
    pieces = [_Piece() for _ in sources]
    layout = _Layout(len(sources))

    def sink(index: int) -> Callable[[BinaryIO], None]:
        def write(stream: BinaryIO) -> None:
            size = getattr(stream, "passed_size", None)
            said, start = layout.say(index, size), layout.offset(index)
            if start is None or size is None or size != said:
                pieces[index] = _Piece(path=own[index])
                with open(own[index], "wb") as out:  # truncated: a retry starts over
                    shutil.copyfileobj(stream, out, COPY_BUFFER)
                return
            piece = pieces[index] = _Piece(offset=start, reserved=size)  # a retry starts over
            fd = os.open(joined, os.O_WRONLY)
            try:
                while data := stream.read(COPY_BUFFER):
                    fits = max(0, min(len(data), size - piece.written))
                    _pwrite(fd, memoryview(data)[:fits], start + piece.written)
                    piece.written += fits
                    piece.tail += data[fits:]
            finally:
                os.close(fd)

        return write

    def run(index: int, source: Source) -> Source:
        def started(sink_: Callable[[BinaryIO], None]) -> int:
            try:
                lines = source(sink_)
            except BaseException:
                layout.abandon()
                raise
            layout.say(index, None)  # a source that never called its sink holds no later one up
            return lines

        return started

    try:
        joined.write_bytes(b"")  # the sources write into it at their offsets
        runs = [run(i, source) for i, source in enumerate(sources)]
        lines = _parallel(runs, sink, settings.concurrency) if runs else []
        if not all(piece.in_place for piece in pieces):
            _rebuild(joined, pieces, rebuilt)
            rebuilt.replace(joined)
        joined.replace(destination)
    except BaseException:
        joined.unlink(missing_ok=True)
        rebuilt.unlink(missing_ok=True)
        raise
    finally:
        for path in own:
            path.unlink(missing_ok=True)
    return lines


def _pwrite(fd: int, data: memoryview, offset: int) -> None:
    while data:
        written = os.pwrite(fd, data, offset)
        data, offset = data[written:], offset + written


def _rebuild(joined: Path, pieces: Sequence[_Piece], path: Path) -> None:
    """Write every piece, in order, into the new file ``path``: its range of ``joined`` and tail, or its own
    file. Every write is positioned, so no short write can shift what follows."""
    with open(joined, "rb", buffering=0) as src, open(path, "wb", buffering=0) as out:
        at = 0
        for piece in pieces:
            if piece.path is None:
                at = _copy(src.fileno(), piece.offset, piece.written, out.fileno(), at)
                _pwrite(out.fileno(), memoryview(piece.tail), at)
                at += len(piece.tail)
                continue
            with open(piece.path, "rb", buffering=0) as own:
                at = _copy(own.fileno(), 0, os.fstat(own.fileno()).st_size, out.fileno(), at)


def _copy(src: int, offset: int, count: int, dst: int, at: int) -> int:
    """Copy ``count`` bytes of ``src`` from ``offset`` into ``dst`` at ``at``; return where they end in ``dst``."""
    try:  # in the kernel, without passing the bytes through Python
        while count and (sent := os.copy_file_range(src, dst, count, offset, at)):
            offset, at, count = offset + sent, at + sent, count - sent
    except (AttributeError, OSError):  # not there: through Python, from where it stopped
        pass
    while count and (data := os.pread(src, min(count, COPY_BUFFER), offset)):
        _pwrite(dst, memoryview(data), at)
        offset, at, count = offset + len(data), at + len(data), count - len(data)
    return at


# -- S3 --------------------------------------------------------------------------------------------------


def _write_s3(
    sources: Sequence[Source], destinations: Sequence[Any], settings: TransferSettings
) -> list[int]:
    """Each source its own multipart upload, parts from one shared pool; the uploads are completed together,
    in parallel, once every source is whole. On any failure every upload is aborted and any object already
    completed removed."""
    client = storage_s3.client_for(connection_of(destinations[0]))
    parts = storage_s3.PartPool(settings.concurrency)
    uploads: list[storage_s3.Upload] = []
    completed: list[storage_s3.Upload] = []
    try:
        for destination in destinations:
            bucket, key = bucket_and_key(destination)
            uploads.append(storage_s3.Upload(client, bucket, key, part_size=settings.part_size, parts=parts))

        def sink(index: int) -> Callable[[BinaryIO], None]:
            return lambda stream: uploads[index].write(stream, getattr(stream, "size", None))

        lines = _parallel(sources, sink, settings.concurrency)

        def complete(upload: storage_s3.Upload) -> None:
            upload.complete()
            completed.append(upload)

        workers = min(len(uploads), settings.concurrency)
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="s3-complete") as pool:
            for future in [pool.submit(complete, upload) for upload in uploads]:
                future.result()
    except BaseException:
        parts.shutdown()  # no part of an aborted upload still on its way
        for upload in uploads:
            if upload in completed:
                upload.remove()
            else:
                upload.abort()
        raise
    finally:
        parts.shutdown()
    return lines


# -- other object stores (GCS, Azure, ...) ----------------------------------------------------------------


def _write_other(
    sources: Sequence[Source], destinations: Sequence[Any], settings: TransferSettings
) -> list[int]:
    """Through fsspec: each source into a hidden object beside its destination, moved into place once every
    source is whole; on a failure the hidden objects, and any destination already moved, are removed."""
    tag = uuid.uuid4().hex[:12]
    pieces = [d.parent / _hidden(d.name, i, tag) for i, d in enumerate(destinations)]
    moved: list[Any] = []

    def sink(index: int) -> Callable[[BinaryIO], None]:
        def write(stream: BinaryIO) -> None:
            with pieces[index].open("wb", block_size=settings.part_size) as out:
                shutil.copyfileobj(stream, out, settings.part_size)

        return write

    try:
        lines = _parallel(sources, sink, settings.concurrency)
        for piece, destination in zip(pieces, destinations, strict=True):
            piece.fs.mv(piece.path, destination.path)
            moved.append(destination)
    except BaseException:
        for path in (*pieces, *moved):
            try:
                if path.exists():
                    path.unlink()
            except Exception:  # best effort: hidden names, or a folder with no manifest
                log.warning("Could not remove %s after a failed landing", path)
        raise
    return lines
