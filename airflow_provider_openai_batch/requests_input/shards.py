"""Shard files: accepted request lines are appended to ``workdir/shard-00000.jsonl``, ``shard-00001.jsonl``, ...
and a new shard is started before any of OpenAI's per-file limits would be crossed (:class:`Limits`). Bytes
are written as they were read (only a missing final newline is added), and every byte written also goes to
the fingerprint, in order. A read chunk whose lines all fit in the open shard is written in one call, counted
once; only a chunk that crosses a limit is counted line by line.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from airflow_provider_openai_batch.requests_input.fingerprint import ThreadedSha256


@dataclass(frozen=True)
class Limits:
    """OpenAI's per-input-file limits, and the margin each shard keeps under them.

    A shard holds at most ``int(limit * safety_margin)`` of each: with the defaults 47,500 requests,
    199,229,440 bytes (190 MiB, under both 200 MiB and 200 MB) and, on ``/v1/embeddings``, 47,500
    embedding inputs. Bytes count each line with its newline.

    :param max_requests: requests per input file (OpenAI: 50,000).
    :param max_bytes: bytes per input file (OpenAI: 200 MB; taken as 200 MiB, the margin covers both).
    :param max_embedding_inputs: embedding inputs across one file's requests (OpenAI: 50,000).
    :param safety_margin: fraction of each limit a shard may use, in (0, 1].
    :param enqueued_tokens: the model's enqueued-token limit (its batch queue), when known: shards then hold
        at most ``int(enqueued_tokens * safety_margin)`` prompt tokens (a single request up to the limit
        itself gets a shard of its own), counted as the cost estimate counts them; a request over the limit
        is refused by validation. None: prompt tokens are not counted.
    """

    max_requests: int = 50_000
    max_bytes: int = 200 * 1024 * 1024
    max_embedding_inputs: int = 50_000
    safety_margin: float = 0.95
    enqueued_tokens: int | None = None

    def __post_init__(self) -> None:
        for name in ("max_requests", "max_bytes", "max_embedding_inputs", "enqueued_tokens"):
            value = getattr(self, name)
            if name == "enqueued_tokens" and value is None:
                continue
            if type(value) is not int or value < 1:
                raise ValueError(f"Expected a positive int for `{name}` but received {value!r}")
        if not 0 < self.safety_margin <= 1:
            raise ValueError(f"Expected `safety_margin` in (0, 1] but received {self.safety_margin!r}")

    @property
    def shard_requests(self) -> int:
        """Most requests one shard may hold."""
        return max(1, int(self.max_requests * self.safety_margin))

    @property
    def shard_bytes(self) -> int:
        """Most bytes one shard may hold (also the largest allowed single line, newline included)."""
        return max(1, int(self.max_bytes * self.safety_margin))

    @property
    def shard_embedding_inputs(self) -> int:
        """Most embedding inputs one shard may hold."""
        return max(1, int(self.max_embedding_inputs * self.safety_margin))

    @property
    def shard_tokens(self) -> int | None:
        """Most prompt tokens one shard of several requests may hold (None: not counted)."""
        return (
            None if self.enqueued_tokens is None else max(1, int(self.enqueued_tokens * self.safety_margin))
        )


@dataclass
class Shard:
    """One spooled input file, ready to upload.

    :param index: 0-based shard number (``path`` ends in ``shard-{index:05d}.jsonl``).
    :param path: local path of the JSONL file.
    :param requests: request lines in it.
    :param bytes: its size in bytes.
    :param embedding_inputs: embedding inputs across its requests (0 unless ``/v1/embeddings``).
    :param prompt_tokens: its prompt tokens, when an enqueued-token limit had them counted (else None).
    """

    index: int
    path: str
    requests: int
    bytes: int
    embedding_inputs: int
    prompt_tokens: int | None = None


class ShardWriter:
    """Appends accepted lines to shard files under ``workdir``, each within ``limits``.

    Every line given must fit in an empty shard (validation rejects the others), so a shard is never over.

    :param workdir: an existing folder; shard files of the same names are overwritten.
    :param limits: the per-file limits and safety margin.
    :param fingerprint: receives every byte written, in order.
    """

    def __init__(self, workdir: str, limits: Limits, fingerprint: ThreadedSha256) -> None:
        self.workdir = workdir
        self.req_cap = limits.shard_requests
        self.byte_cap = limits.shard_bytes
        self.emb_cap = limits.shard_embedding_inputs
        self.tok_cap = limits.shard_tokens
        self.margin = limits.safety_margin
        self.fingerprint = fingerprint
        self.shards: list[Shard] = []
        self.paths: list[str] = []
        self.file: Any = None
        # What the open shard holds.
        self.requests = self.bytes = self.embedding_inputs = self.tokens = 0

    def add(
        self,
        lines: list[bytes],
        embs: list[int] | None,
        as_read: tuple[Any, ...] | None = None,
        tokens: list[int] | None = None,
    ) -> None:
        """Append request lines, starting new shards as the limits require.

        :param lines: the lines, without newlines; the list may be changed.
        :param embs: each line's embedding inputs, or None when they do not count (not ``/v1/embeddings``).
        :param as_read: the same lines with their newlines, as read (e.g. a memoryview of a read chunk),
            written instead of joining ``lines`` when they all fit in the open shard.
        :param tokens: each line's prompt tokens, when an enqueued-token limit counts them.
        """
        n = len(lines)
        if not n:
            return
        emb = sum(embs) if embs is not None else 0
        tok = sum(tokens) if tokens is not None else 0
        size = sum(map(len, as_read)) if as_read is not None else sum(map(len, lines)) + n
        if not self._fits(n, size, emb, tok):
            self._add_line_by_line(lines, embs, tokens)
            return
        if as_read is not None:
            for data in as_read:
                self._write(data)
        else:
            self._write_lines(lines)
        self._count(n, size, emb, tok)

    def add_read(self, count: int, as_read: tuple[Any, ...]) -> bool:
        """Append ``count`` lines given only as read (with their newlines, no embedding inputs or tokens
        counted) if they fit in the open shard; False, writing nothing, when they do not."""
        size = sum(map(len, as_read))
        if not self._fits(count, size, 0, 0):
            return False
        for data in as_read:
            self._write(data)
        self._count(count, size, 0, 0)
        return True

    def _fits(self, requests: int, size: int, emb: int, tok: int) -> bool:
        """Whether this much more fits in the open shard (False when none is open)."""
        return (
            self.file is not None
            and self.requests + requests <= self.req_cap
            and self.bytes + size <= self.byte_cap
            and self.embedding_inputs + emb <= self.emb_cap
            and (self.tok_cap is None or self.tokens + tok <= self.tok_cap)
        )

    def _count(self, requests: int, size: int, emb: int, tok: int) -> None:
        self.requests += requests
        self.bytes += size
        self.embedding_inputs += emb
        self.tokens += tok

    def _add_line_by_line(self, lines: list[bytes], embs: list[int] | None, tokens: list[int] | None) -> None:
        req_cap, byte_cap, emb_cap = self.req_cap, self.byte_cap, self.emb_cap
        tok_cap = self.tok_cap if self.tok_cap is not None else float("inf")
        s_req, s_bytes, s_emb, s_tok = self.requests, self.bytes, self.embedding_inputs, self.tokens
        opened = self.file is not None
        start = 0  # first line not yet written
        emb = tok = 0
        for i, raw in enumerate(lines):
            size = len(raw) + 1
            if embs is not None:
                emb = embs[i]
            if tokens is not None:
                tok = tokens[i]
            if (
                not opened
                or s_req >= req_cap
                or s_bytes + size > byte_cap
                or s_emb + emb > emb_cap
                or (s_req and s_tok + tok > tok_cap)  # one request up to the whole limit gets its own shard
            ):
                if opened:
                    self._write_lines(lines[start:i])
                    self._close(s_req, s_bytes, s_emb, s_tok)
                self._open()
                opened = True
                s_req = s_bytes = s_emb = s_tok = 0
                start = i
            s_req += 1
            s_bytes += size
            s_emb += emb
            s_tok += tok
        self._write_lines(lines[start:] if start else lines)
        self.requests, self.bytes, self.embedding_inputs, self.tokens = s_req, s_bytes, s_emb, s_tok

    def finish(self) -> list[Shard]:
        """Close the open shard; returns every shard, in order."""
        if self.file is not None:
            self._close(self.requests, self.bytes, self.embedding_inputs, self.tokens)
        return self.shards

    def cleanup(self) -> None:
        """Close and remove every shard file written (after a failure)."""
        if self.file is not None:
            self.file.close()
            self.file = None
        for path in self.paths:
            try:
                os.remove(path)
            except FileNotFoundError:
                pass

    def _write(self, data: Any) -> None:
        self.file.write(data)
        self.fingerprint.update(data)

    def _write_lines(self, lines: list[bytes]) -> None:
        if lines:
            lines.append(b"")  # join then ends with a newline, without copying the block again
            self._write(b"\n".join(lines))

    def _open(self) -> None:
        path = os.path.join(self.workdir, f"shard-{len(self.shards):05d}.jsonl")
        self.paths.append(path)
        self.file = open(path, "wb")  # noqa: SIM115 - closed by _close or cleanup

    def _close(self, requests: int, nbytes: int, embedding_inputs: int, tokens: int) -> None:
        self.file.close()
        self.file = None
        index = len(self.shards)
        counted = tokens if self.tok_cap is not None else None
        self.shards.append(Shard(index, self.paths[index], requests, nbytes, embedding_inputs, counted))
