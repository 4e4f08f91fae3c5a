"""Turn a source into batches of raw request lines: a binary JSONL file object is read in chunks whose lines are
found by hand (:func:`count_lines` per chunk instead of a Python ``readline`` per line, which is what fsspec/S3
files run; the chunk is split only when a line needs a look of its own), and an iterable of dicts or lines is
serialized in groups. Lines are never re-serialized: a chunk's lines come with the chunk itself, so a chunk whose
lines are all accepted is written as it was read.
Memory stays bounded by the chunk size whatever the input, since a line too long to be valid is measured, not
assembled. Dict items are serialized compactly (see :mod:`.codec`), so a file written with ``orjson.dumps`` per
line holds the same bytes as the same dicts passed as an iterable.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO

from airflow_provider_openai_batch.requests_input import codec

CHUNK_SIZE = 1 << 20
"""Bytes read from a file source at a time."""

BOM = b"\xef\xbb\xbf"
"""The UTF-8 byte order mark, dropped at the start of a file."""

_FLUSH_ITEMS = 1024


def count_lines(chunk: bytes, start: int = 0, end: int | None = None) -> int:
    """The newlines in ``chunk[start:end]``: found one by one with ``find`` (``memchr``, many GB/s) while lines are
    long, as requests and embedding outputs mostly are, and counted with ``bytes.count`` (about 1.6 GB/s, one byte
    at a time) once they prove short (at most one ``find`` a KiB), so data of short lines pays about the count
    alone."""
    if end is None:
        end = len(chunk)
    one_by_one, at, find = (end - start) // 1024 + 1, start, chunk.find  # at most a line per KiB, one by one
    for found in range(one_by_one):
        at = find(b"\n", at, end) + 1
        if not at:
            return found
    return one_by_one + chunk.count(b"\n", at, end)


class TooLong(int):
    """Stands in for a line too long to keep in memory; its value is the line's length."""


@dataclass(slots=True)
class Batch:
    """Request lines read together: ``head``, then the lines of ``region``.

    :param head: whole lines without their newline (bytes, :class:`TooLong` or :class:`Unusable`): all the
        lines of an iterable's group, or the line of a file that began in an earlier chunk.
    :param region: a memoryview of the read chunk holding the rest, each line with its newline, exactly as read
        (so lines that are all accepted are written without splitting, joining or copying); None for none.
    :param count: the lines in ``region``.
    """

    head: list[Any]
    region: memoryview | None = None
    count: int = 0

    def region_lines(self) -> list[bytes]:
        """The lines of ``region``, without their newline (split on demand: the common case never needs them)."""
        if not self.count or self.region is None:
            return []
        return bytes(self.region[:-1]).split(b"\n")

    def lines(self) -> list[Any]:
        """Every line, ``head`` first."""
        return self.head + self.region_lines() if self.count else self.head


class Unusable:
    """Stands in for an iterable item that cannot become a request line.

    :param message: why, as shown to the user.
    :param field: the offending field, or None for the item as a whole.
    """

    __slots__ = ("field", "message")

    def __init__(self, message: str, field: str | None = None) -> None:
        self.message = message
        self.field = field


def read_line_batches(fileobj: Any, chunk_size: int, max_line: int) -> Iterator[Batch]:
    """Yield the lines of ``fileobj`` as :class:`Batch` es, one per chunk read; lines come without their newline.

    A chunk's lines are found with ``find``/``count``, not split (see :meth:`Batch.region_lines`). A line longer
    than ``max_line`` that spans chunks is yielded as a :class:`TooLong` instead of being assembled, so memory
    stays bounded by the chunk size and the limit whatever the input.

    :param fileobj: a binary file object (``read`` returning bytes; str or other buffers are converted).
    :param chunk_size: bytes per ``read`` call.
    :param max_line: longest line, without its newline, that is assembled across chunks.
    """

    def read() -> bytes:
        chunk = fileobj.read(chunk_size)
        if type(chunk) is not bytes:
            chunk = chunk.encode("utf-8") if isinstance(chunk, str) else bytes(chunk)
        return chunk

    pending: list[bytes] = []  # pieces of a line that began in an earlier chunk
    pending_len = 0
    first = True
    while True:
        chunk = read()
        if not chunk:
            break
        if first:
            first = False
            while len(chunk) < len(BOM) and (more := read()):  # tiny reads: the mark may come in pieces
                chunk += more
            if chunk.startswith(BOM):
                chunk = chunk[len(BOM) :]
                if not chunk:
                    continue
        end = chunk.rfind(b"\n") + 1  # the region and a head line end here; the tail starts here
        if not end:  # no newline in this chunk: the pending line goes on
            pending_len += len(chunk)
            if pending_len <= max_line:
                pending.append(chunk)
            else:
                pending.clear()
            continue
        head: list[Any] = []
        start = 0
        if pending_len:
            start = chunk.find(b"\n") + 1
            line_len = pending_len + start - 1
            if line_len > max_line:
                head.append(TooLong(line_len))
            else:
                pending.append(chunk[: start - 1])
                head.append(b"".join(pending))
        tail = chunk[end:]
        pending = [tail] if tail else []
        pending_len = len(tail)
        yield Batch(head, memoryview(chunk)[start:end], count_lines(chunk, start, end))
    if pending_len:
        yield Batch([TooLong(pending_len) if pending_len > max_line else b"".join(pending)])


def iter_jsonl_lines(fileobj: BinaryIO, chunk_size: int = CHUNK_SIZE) -> Iterator[bytes]:
    """Yield the lines of a binary JSONL file object, without their newline, reading ``chunk_size`` at a time.

    Works the same on local files and on remote ones (fsspec/S3), whose ``readline`` is often slow.
    A UTF-8 byte order mark at the start is dropped; no line is yielded for a final newline.

    :param fileobj: a binary file object.
    :param chunk_size: bytes per ``read`` call.
    """
    for batch in read_line_batches(fileobj, chunk_size, 1 << 62):
        yield from batch.lines()


def item_batches(items: Iterable[Any], endpoint: str, prefix: str | None) -> Iterator[Batch]:
    """Turn an iterable of dicts (or str/bytes lines) into batches of request lines, with no region.

    A dict with none of the keys ``custom_id``, ``method`` and ``url`` is, when ``prefix`` is given, a bare
    request body: it is wrapped as ``{"custom_id": f"{prefix}-{position:06d}", "method": "POST", "url":
    endpoint, "body": item}``, ``position`` being its 0-based index in ``items``. The id is thus stable
    across retries, derived only from the prefix and the position. Items that cannot become a line are
    yielded as :class:`Unusable`.

    :param items: dicts (full requests or bare bodies) or str/bytes JSONL lines, mixed freely.
    :param endpoint: the batch endpoint, used as the ``url`` of wrapped bodies.
    :param prefix: the ``custom_id`` prefix for bare bodies; None to take every dict as a full request.
    """
    dumps = codec.dumps
    out: list[Any] = []
    for position, item in enumerate(items):
        if isinstance(item, dict):
            if prefix is not None and "custom_id" not in item and "method" not in item and "url" not in item:
                item = {
                    "custom_id": f"{prefix}-{position:06d}",
                    "method": "POST",
                    "url": endpoint,
                    "body": item,
                }
            try:
                raw: Any = dumps(item)
            except (TypeError, ValueError) as exc:
                raw = Unusable(f"cannot be serialized to JSON ({exc})")
        elif isinstance(item, (bytes, bytearray, memoryview, str)):
            raw = item.encode("utf-8", "surrogatepass") if isinstance(item, str) else bytes(item)
            if raw.endswith(b"\n"):
                raw = raw[:-1]
            if b"\n" in raw:
                raw = Unusable("contains a line break; each item must be one JSONL line")
        else:
            raw = Unusable(
                "expected a dict (a request, or with custom_id_prefix a request body) or a JSON line, "
                f"received {type(item).__name__}"
            )
        out.append(raw)
        if len(out) >= _FLUSH_ITEMS:
            yield Batch(out)
            out = []
    if out:
        yield Batch(out)
