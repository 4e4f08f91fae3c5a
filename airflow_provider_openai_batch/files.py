"""The landed-folder contract, and the one way the provider opens a file to read it. No Airflow import at module level.

A results folder holds ``output.jsonl``, ``errors.jsonl`` (only when there are error lines) and
``_manifest.json``, written last: its presence means the folder is complete. On object storage, a task with
several OpenAI output (or error) files (shards, follow-up rounds) lands each as its own object instead,
``output-00000.jsonl``, ``output-00001.jsonl``, ... (:func:`numbered`), which the manifest lists: an object
store cannot join objects without copying them, and several objects land in parallel and read in parallel.
Landing writes these names, the reader reads them, and every read (an input, a landed file, a price table) goes
through :func:`open_binary`.
Local paths and plain fsspec URLs (``s3://bucket/key``, ``file:///...``) need no Airflow; a URL naming an Airflow
connection (``s3://aws_conn@bucket/key``, as the operator writes them) needs Airflow's ``ObjectStoragePath`` to
find its credentials, so Airflow is imported for those only. Remote files are read and written in 5 MiB blocks;
a remote file read once from start to end (an input) can have :data:`READ_AHEAD` blocks of 8 MiB fetched at once,
so that reading it costs about one round trip per :data:`READ_AHEAD` blocks rather than one per block.
"""

from __future__ import annotations

import io
import os
import re
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, BinaryIO, cast

import orjson

OUTPUT = "output.jsonl"
ERRORS = "errors.jsonl"
#: Every name a landing may write for its output and error files (one file, or numbered ones).
LANDED_NAME = re.compile(r"(output|errors)(-\d{5})?\.jsonl")
#: Written last: a folder without it is still landing (or its landing failed).
MANIFEST = "_manifest.json"
#: Few round trips and small buffers (fsspec's S3 default buffers 50 MiB per open file, and S3 multipart
#: parts need at least 5 MiB).
BLOCK_SIZE = 5 * 2**20
#: A remote file read in order is fetched in blocks of this size (boto3's own transfer default), this many at
#: once: memory is READ_AHEAD_BLOCK × (READ_AHEAD + 1) = 40 MiB.
READ_AHEAD_BLOCK = 8 * 2**20
READ_AHEAD = 4


def numbered(name: str, index: int) -> str:
    """The name of file ``index`` of several: ``output.jsonl`` -> ``output-00000.jsonl``."""
    stem, dot, suffix = name.partition(".")
    return f"{stem}-{index:05d}{dot}{suffix}"


def describe_files(paths: list[str]) -> str:
    """Landed files for a message: the one path, or how many and where (one line however many)."""
    if len(paths) == 1:
        return paths[0]
    if not paths:
        return "no file"
    folder, _, first = paths[0].rpartition("/")
    return f"{folder}/ in {len(paths)} files ({first} to {paths[-1].rpartition('/')[2]})"


def is_storage_path(location: Any) -> bool:
    # ObjectStoragePath and universal_pathlib paths carry their filesystem; pathlib.Path does not.
    return hasattr(location, "fs") and hasattr(location, "protocol")


def display(location: Any) -> str:
    return os.fspath(location) if isinstance(location, os.PathLike) else str(location)


def _needs_airflow(url: str) -> bool:
    scheme, _, rest = url.partition("://")
    return scheme != "file" and "@" in rest.split("/", 1)[0]


def _object_storage_path(url: str) -> Any:
    """The ObjectStoragePath of a connection URL, once its connection is known to exist (:func:`.storage.to_path`)."""
    try:
        from airflow_provider_openai_batch.storage import to_path
    except ImportError as err:  # pragma: no cover - only without Airflow
        raise ImportError(
            f"Expected Airflow to be importable to open {url!r} (a URL naming a connection) but it is not; "
            "pass a plain fsspec URL or a local path instead"
        ) from err
    return to_path(url)


def local_path(location: Any) -> str | None:
    """The local path of ``location``, or None when it is remote."""
    if is_storage_path(location):
        return location.path if location.protocol in ("file", "local", "") else None
    text = display(location)
    if "://" not in text:
        return text
    if text.startswith("file://"):
        return text[len("file://") :]
    return None


def open_binary(location: Any, *, what: str = "a results file", in_order: bool = False) -> BinaryIO:
    """Open a file for streaming binary reads.

    :param location: a local path, an fsspec URL, an Airflow connection URL or an ObjectStoragePath.
    :param what: what the file is, for the error when it is missing.
    :param in_order: the file is read once, from start to end, with ``read`` only: a remote one then has
        its next blocks fetched at once (:class:`ReadAhead`).
    :raises FileNotFoundError: naming the location when it does not exist.
    """
    missing = f"Expected {what} at {display(location)} but found none"
    local = local_path(location)
    if local is not None:
        try:
            return open(local, "rb")  # noqa: SIM115 - the caller closes it
        except FileNotFoundError:
            raise FileNotFoundError(missing) from None
    if is_storage_path(location):
        path = location
    elif _needs_airflow(display(location)):
        path = _object_storage_path(display(location))
    else:
        import fsspec

        fs, path_in_fs = fsspec.core.url_to_fs(display(location))
        if not fs.exists(path_in_fs):
            raise FileNotFoundError(missing)
        remote: BinaryIO = fs.open(path_in_fs, "rb", block_size=BLOCK_SIZE)
        return ReadAhead.over(remote) if in_order else remote
    if not path.exists():
        raise FileNotFoundError(missing)
    stored: BinaryIO = path.open("rb", block_size=BLOCK_SIZE)
    return ReadAhead.over(stored) if in_order else stored


class ReadAhead(io.RawIOBase):
    """A remote file read once in order: its blocks are fetched by ranged reads, ``depth`` at a time on helper
    threads, and handed out in order. The ranged reads are the opened file's own (fsspec's ``_fetch_range``, what
    its block cache calls), so they keep its pinning: s3fs sends the ETag seen at open (``If-Match``), and an
    object replaced mid-read fails the read. A block that comes back short is an error too, never a silently
    shorter file.

    :param remote: the opened fsspec file (its ranged reads, ``path`` and ``size`` are used; closed with this one).
    :param block: bytes per ranged read (default :data:`READ_AHEAD_BLOCK`).
    :param depth: ranged reads in flight at once (default :data:`READ_AHEAD`).
    """

    def __init__(self, remote: Any, block: int | None = None, depth: int | None = None) -> None:
        super().__init__()
        self._remote = remote
        self._path, self._size = remote.path, int(remote.size)
        self._block_size = block or READ_AHEAD_BLOCK
        self._depth = depth or READ_AHEAD
        self._next = 0  # where the next ranged read starts
        self._pending: deque[Future[bytes]] = deque()
        self._block = b""
        self._at = 0  # read so far of self._block
        self._pool: ThreadPoolExecutor | None = None

    @classmethod
    def over(cls, remote: Any) -> BinaryIO:
        """``remote`` read ahead, when it is an fsspec buffered file (others, which have no ranged reads, as
        they are)."""
        if callable(getattr(remote, "_fetch_range", None)) and getattr(remote, "size", None) is not None:
            return cast(BinaryIO, cls(remote))
        return cast(BinaryIO, remote)

    def readable(self) -> bool:
        return True

    def read(self, size: int | None = -1) -> bytes:
        if self.closed:
            raise ValueError(f"I/O operation on closed file {self._path}")
        if size is None or size < 0:
            return b"".join(iter(lambda: self.read(self._block_size), b""))
        if self._at >= len(self._block):
            self._block, self._at = self._take(), 0
        start = self._at
        self._at = min(len(self._block), start + size)
        return self._block if start == 0 and self._at == len(self._block) else self._block[start : self._at]

    def _take(self) -> bytes:
        """The next block (b"" at the end), after starting the reads that keep ``depth`` in flight."""
        while len(self._pending) < self._depth and self._next < self._size:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self._depth, thread_name_prefix="read-ahead")
            end = min(self._size, self._next + self._block_size)
            self._pending.append(self._pool.submit(self._fetch, self._next, end))
            self._next = end
        return self._pending.popleft().result() if self._pending else b""

    def _fetch(self, start: int, end: int) -> bytes:
        data = cast(bytes, self._remote._fetch_range(start, end))
        if len(data) != end - start:
            raise OSError(
                f"Expected bytes {start}-{end} of {self._path} ({self._size} bytes) but received {len(data)} "
                "bytes: the file changed while it was read"
            )
        return data

    def close(self) -> None:
        if not self.closed:
            for pending in self._pending:
                pending.cancel()
            self._pending.clear()
            if self._pool is not None:
                self._pool.shutdown(wait=True)
            self._remote.close()
        super().close()


def exists(location: Any) -> bool:
    local = local_path(location)
    if local is not None:
        return os.path.exists(local)
    if is_storage_path(location):
        return bool(location.exists())
    if _needs_airflow(display(location)):
        return bool(_object_storage_path(display(location)).exists())
    import fsspec

    fs, path_in_fs = fsspec.core.url_to_fs(display(location))
    return bool(fs.exists(path_in_fs))


def json_line(raw: bytes, number: int, name: str) -> Any:
    """One line of a JSONL file, parsed; a line that is not JSON is a ValueError naming the line and the file."""
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as err:
        raise ValueError(f"Expected a JSON object on line {number} of {name} but received: {err}") from None


def child(folder: Any, name: str) -> Any:
    """``name`` inside ``folder``, of the same kind (storage path, URL or local path)."""
    if is_storage_path(folder):
        return folder / name
    text = display(folder)
    if "://" in text:
        return text.rstrip("/") + "/" + name
    return os.path.join(text, name)
