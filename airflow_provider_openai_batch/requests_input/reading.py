"""Turn a source into batches of raw request lines: a binary JSONL file object is read in chunks and split on
newlines by hand (one ``bytes.split`` per chunk instead of a Python ``readline`` per line, which is what
fsspec/S3 files run), and an iterable of dicts or lines is serialized in groups. Lines are never re-serialized:
a chunk's lines come with the chunk itself, so a chunk whose lines are all accepted is written as it was read.
Memory stays bounded by the chunk size whatever the input, since a line too long to be valid is measured, not
assembled. Dict items are serialized compactly (see :mod:`.codec`), so a file written with ``orjson.dumps`` per
line holds the same bytes as the same dicts passed as an iterable.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any, BinaryIO

from airflow_provider_openai_batch.requests_input import codec

CHUNK_SIZE = 1 << 20
"""Bytes read from a file source at a time."""

BOM = b"\xef\xbb\xbf"
"""The UTF-8 byte order mark, dropped at the start of a file."""

_FLUSH_ITEMS = 1024

Batch = tuple[list[Any], int, Any]
"""``(lines, head, region)``: see :func:`read_line_batches`."""


class TooLong(int):
    """Stands in for a line too long to keep in memory; its value is the line's length."""


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
    """Yield ``(lines, head, region)`` read from ``fileobj`` in chunks; lines come without their newline.

    ``region`` is a memoryview of the chunk holding ``lines[head:]`` with their newlines, exactly as read
    (``head`` is 1 when ``lines[0]`` began in an earlier chunk), so a batch whose lines are all accepted
    is written without joining or copying; None when there is no such region.
    A line longer than ``max_line`` that spans chunks is yielded as a :class:`TooLong` instead of being
    assembled, so memory stays bounded by the chunk size and the limit whatever the input.

    :param fileobj: a binary file object (``read`` returning bytes; str or other buffers are converted).
    :param chunk_size: bytes per ``read`` call.
    :param max_line: longest line, without its newline, that is assembled across chunks.
    """
    read = fileobj.read
    pending: list[bytes] = []  # pieces of a line that began in an earlier chunk
    pending_len = 0
    first = True
    while True:
        chunk = read(chunk_size)
        if not chunk:
            break
        if type(chunk) is not bytes:
            chunk = chunk.encode("utf-8") if isinstance(chunk, str) else bytes(chunk)
        if first:
            first = False
            if chunk.startswith(BOM):
                chunk = chunk[len(BOM) :]
        lines: list[Any] = chunk.split(b"\n")  # bytes, and a TooLong where the first line is too long
        tail: bytes = lines.pop()
        if not lines:  # no newline in this chunk: the pending line goes on
            pending_len += len(tail)
            if pending_len <= max_line:
                pending.append(tail)
            else:
                pending.clear()
            continue
        head = 0
        if pending_len:
            head = 1
            start = len(lines[0]) + 1
            line_len = pending_len + len(lines[0])
            if line_len > max_line:
                lines[0] = TooLong(line_len)
            else:
                pending.append(lines[0])
                lines[0] = b"".join(pending)
        else:
            start = 0
        pending = [tail] if tail else []
        pending_len = len(tail)
        yield lines, head, memoryview(chunk)[start : len(chunk) - len(tail)]
    if pending_len:
        yield [TooLong(pending_len) if pending_len > max_line else b"".join(pending)], 1, None


def iter_jsonl_lines(fileobj: BinaryIO, chunk_size: int = CHUNK_SIZE) -> Iterator[bytes]:
    """Yield the lines of a binary JSONL file object, without their newline, reading ``chunk_size`` at a time.

    Works the same on local files and on remote ones (fsspec/S3), whose ``readline`` is often slow.
    A UTF-8 byte order mark at the start is dropped; no line is yielded for a final newline.

    :param fileobj: a binary file object.
    :param chunk_size: bytes per ``read`` call.
    """
    for lines, _, _ in read_line_batches(fileobj, chunk_size, 1 << 62):
        yield from lines


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
            yield out, 0, None
            out = []
    if out:
        yield out, 0, None
