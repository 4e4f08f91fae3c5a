"""Find each request by ``custom_id`` without holding the requests in memory.

Results come back in any order, so joining them to their requests needs random access by id. The requests
stay in a local JSONL file (a remote or iterable source is first copied to one), and a temporary sqlite
database maps each ``custom_id`` to the byte offset and length of its line: memory stays under sqlite's page
cache (at most 16 MB) whatever the number of requests, where a dict of the bodies grows with the input.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import tempfile
from collections.abc import Callable, Iterable
from typing import Any

import orjson

from airflow_provider_openai_batch import files

_INSERT_BATCH = 10_000
# SQLite's page cache, in KiB: holds the whole index up to about 500,000 ids, and bounds memory beyond.
_CACHE_KIB = 16 * 1024
# Under SQLite's oldest limit on query parameters (999).
LOOKUP_BATCH = 900
# One system call per line read, where a buffered file's seek would throw its buffer away each time.
_PREAD: Callable[[int, int, int], bytes] | None = getattr(os, "pread", None)
_BOM = b"\xef\xbb\xbf"


def _is_bare_body(item: Any) -> bool:
    # The rule spool_requests applies: a dict with none of the request keys is a body to wrap.
    return isinstance(item, dict) and "custom_id" not in item and "method" not in item and "url" not in item


class RequestIndex:
    """Requests by ``custom_id``, read back from disk one line at a time.

    :param requests: the input path (local, fsspec URL, Airflow connection URL) or an iterable of request
        dicts, bare bodies or JSONL lines (as the operator accepts them).
    :param custom_id_prefix: the prefix the operator generated ids with for bare bodies from an iterable;
        ids are ``f"{custom_id_prefix}-{position:06d}"``.
    """

    def __init__(self, requests: Any, *, custom_id_prefix: str | None = None) -> None:
        self._dir = tempfile.mkdtemp(prefix="openai-batch-join-")
        self._file: Any = None
        self._db: sqlite3.Connection | None = None
        try:
            self._build(requests, custom_id_prefix)
        except BaseException:
            self.close()
            raise

    def _build(self, requests: Any, prefix: str | None) -> None:
        if isinstance(requests, (str, os.PathLike)) or files.is_storage_path(requests):
            self.name = files.display(requests)
            local = files.local_path(requests)
            if local is None:
                local = os.path.join(self._dir, "requests.jsonl")
                with (
                    files.open_binary(requests, what="a requests file", in_order=True) as src,
                    open(local, "wb") as dst,
                ):
                    shutil.copyfileobj(src, dst, 2**20)
            path, generated = local, False
        elif isinstance(requests, Iterable) and not isinstance(requests, (bytes, dict)):
            self.name = "the requests iterable"
            path = os.path.join(self._dir, "requests.jsonl")
            with open(path, "wb") as dst:
                for item in requests:
                    if isinstance(item, str):
                        item = item.encode()
                    dst.write(item.rstrip(b"\n") if isinstance(item, bytes) else orjson.dumps(item))
                    dst.write(b"\n")
            generated = True
        else:
            raise TypeError(
                "Expected the requests path or an iterable of requests as `requests` but received "
                f"{type(requests).__name__}"
            )
        self._db = sqlite3.connect(os.path.join(self._dir, "index.sqlite"))
        self._db.executescript(
            f"PRAGMA journal_mode=OFF; PRAGMA synchronous=OFF; PRAGMA cache_size=-{_CACHE_KIB};"
            "CREATE TABLE req (cid TEXT PRIMARY KEY, off INTEGER, len INTEGER) WITHOUT ROWID;"
        )
        rows: list[tuple[str, int, int, int]] = []
        offset = 0
        # A local file's own line iterator is C code: offsets are exact, and blank lines are skipped.
        with open(path, "rb") as fh:
            for number, raw in enumerate(fh, start=1):
                start, line = offset, raw.rstrip(b"\r\n")
                offset += len(raw)
                if number == 1 and line.startswith(_BOM):
                    start, line = start + len(_BOM), line[len(_BOM) :]
                if not line.strip():
                    continue
                rows.append((self._custom_id(line, number, generated, prefix), start, len(line), number))
                if len(rows) >= _INSERT_BATCH:
                    self._insert(rows)
                    rows = []
        self._insert(rows)
        self._db.commit()
        self._file = open(path, "rb")  # noqa: SIM115 - closed by close()

    def _custom_id(self, line: bytes, number: int, generated: bool, prefix: str | None) -> str:
        item = files.json_line(line, number, self.name)
        if generated and _is_bare_body(item):
            if not prefix:
                raise ValueError(
                    f"Expected item {number - 1} of {self.name} to carry a `custom_id`, or a `custom_id_prefix` "
                    "to rebuild the ids the operator generated, but received a bare body and no prefix"
                )
            return f"{prefix}-{number - 1:06d}"
        cid = item.get("custom_id") if isinstance(item, dict) else None
        if not isinstance(cid, str) or not cid:
            raise ValueError(
                f"Expected a non-empty string `custom_id` on line {number} of {self.name} but received {cid!r}"
            )
        return cid

    def _insert(self, rows: list[tuple[str, int, int, int]]) -> None:
        assert self._db is not None
        before = self._db.total_changes
        self._db.executemany("INSERT OR IGNORE INTO req VALUES (?, ?, ?)", [row[:3] for row in rows])
        if self._db.total_changes - before == len(rows):
            return
        for cid, offset, _, number in rows:  # the first line of an id is kept: a later one is the repeat
            if self._db.execute("SELECT off FROM req WHERE cid = ?", (cid,)).fetchone()[0] != offset:
                raise ValueError(
                    f"Expected each custom_id once in {self.name} but {cid!r} on line {number} appeared before"
                )

    def bodies(self, custom_ids: Iterable[str]) -> dict[str, Any]:
        """The request ``body`` of each id that has one (a bare body as given); ids without a request are left out.

        One query per :data:`LOOKUP_BATCH` ids: per-query overhead, not the search, dominates a lookup.
        """
        assert self._db is not None and self._file is not None
        ids = list(dict.fromkeys(custom_ids))
        found: dict[str, Any] = {}
        for start in range(0, len(ids), LOOKUP_BATCH):
            chunk = ids[start : start + LOOKUP_BATCH]
            query = f"SELECT cid, off, len FROM req WHERE cid IN ({','.join('?' * len(chunk))})"
            for cid, offset, length in self._db.execute(query, chunk):
                item = orjson.loads(self._read(offset, length))
                found[cid] = item if _is_bare_body(item) else item.get("body")
        return found

    def _read(self, offset: int, length: int) -> bytes:
        if _PREAD is not None:
            return _PREAD(self._file.fileno(), length, offset)
        self._file.seek(offset)
        data: bytes = self._file.read(length)
        return data

    def body(self, custom_id: str) -> Any:
        """The request ``body`` of ``custom_id``, or None when no request has that id."""
        return self.bodies([custom_id]).get(custom_id)

    def __len__(self) -> int:
        assert self._db is not None
        return int(self._db.execute("SELECT count(*) FROM req").fetchone()[0])

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        if self._db is not None:
            self._db.close()
            self._db = None
        shutil.rmtree(self._dir, ignore_errors=True)
