"""The input fingerprint: sha256 over the spooled request lines in order, each newline-terminated, so it depends
only on the request bytes, not on where they came from (local file, S3 object, iterable), the read chunk size
or the shard limits. ``hashlib`` releases the GIL while it hashes a large block, so the hashing runs on one
helper thread, overlapping with parsing on another core.
"""

from __future__ import annotations

import hashlib
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any


class ThreadedSha256:
    """sha256 of a stream of blocks, hashed on one helper thread in groups of ``group`` bytes.

    Groups are large because a helper thread waits up to the interpreter's switch interval (5 ms) to get
    the GIL back after each block. At most one group waits while one is hashed, so memory stays at about
    two groups plus the one being collected.

    :param group: bytes collected before they are handed to the helper thread.
    """

    def __init__(self, group: int = 8 << 20) -> None:
        self.sha = hashlib.sha256()
        self.group = group
        self.parts: list[Any] = []
        self.size = 0
        self.executor: ThreadPoolExecutor | None = None
        self.running: Future[None] | None = None

    def update(self, data: Any) -> None:
        """Add the next block (bytes or a memoryview, which must not change until :meth:`hexdigest`)."""
        self.parts.append(data)
        self.size += len(data)
        if self.size >= self.group:
            self._submit()

    def _submit(self) -> None:
        data = self.parts[0] if len(self.parts) == 1 else b"".join(self.parts)
        self.parts = []
        self.size = 0
        if self.executor is None:
            self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="spool-sha256")
        if self.running is not None:
            self.running.result()
        self.running = self.executor.submit(self.sha.update, data)

    def hexdigest(self) -> str:
        """Finish: wait for the helper, hash what is left, stop the helper thread."""
        if self.running is not None:
            self.running.result()
            self.running = None
        for part in self.parts:
            self.sha.update(part)
        self.parts = []
        self.close()
        return self.sha.hexdigest()

    def close(self) -> None:
        """Stop the helper thread (after it finishes its group); safe to call more than once."""
        if self.executor is not None:
            self.executor.shutdown(wait=True)
            self.executor = None
