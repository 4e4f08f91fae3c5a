"""One streaming pass from a request source to shard files: :func:`spool_requests` reads the requests once
and, before anything is uploaded, validates every line, writes the accepted ones to shard files under the
per-file limits and fingerprints them. If anything is wrong the whole input is still read (so the count of bad
lines is exact), every file written is removed, and :class:`InvalidRequestsError` names the first problems by
line and field. Memory stays flat in the input size: buffers of a few read chunks and fingerprint groups, plus
8 bytes per request for the duplicate check.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, BinaryIO, cast

from airflow_provider_openai_batch.requests_input import reading
from airflow_provider_openai_batch.requests_input.duplicates import IdHashes, confirm_duplicates
from airflow_provider_openai_batch.requests_input.fingerprint import ThreadedSha256
from airflow_provider_openai_batch.requests_input.problems import (
    MAX_PROBLEMS,
    InvalidRequestsError,
    Problem,
    ProblemLog,
)
from airflow_provider_openai_batch.requests_input.reading import Batch, item_batches, read_line_batches
from airflow_provider_openai_batch.requests_input.shards import Limits, Shard, ShardWriter
from airflow_provider_openai_batch.requests_input.validation import RequestChecker


@dataclass
class SpoolResult:
    """What :func:`spool_requests` wrote.

    :param shards: the shard files, in input order.
    :param total_requests: requests across all shards.
    :param model: the one ``body.model`` of the input (None only on a model-optional endpoint
        whose requests name none).
    :param fingerprint: sha256 hex over the spooled request lines in order, newline-terminated:
        the same requests give the same fingerprint whatever the source, chunking or sharding.
    :param embedding_inputs: embedding inputs across all shards (0 unless ``/v1/embeddings``).
    :param token_limit: the enqueued-token limit the shards were cut under (None: prompt tokens not counted).
    """

    shards: list[Shard]
    total_requests: int
    model: str | None
    fingerprint: str
    embedding_inputs: int = field(default=0)
    token_limit: int | None = None


def spool_requests(
    source: BinaryIO | Iterable[Any] | str | os.PathLike[str],
    *,
    endpoint: str,
    workdir: str | os.PathLike[str],
    source_name: str,
    limits: Limits = Limits(),  # noqa: B008 - frozen, so sharing the default is safe
    custom_id_prefix: str | None = None,
    token_limits: Mapping[str, int] | None = None,
) -> SpoolResult:
    """Validate every request, write them to shard files under ``workdir``, and fingerprint them.

    :param source: a binary file object of JSONL (a local file, an fsspec/S3 file opened ``"rb"``; read
        in 1 MiB chunks), a local path, or an iterable of dicts (full requests, or bare bodies when
        ``custom_id_prefix`` is given) or of str/bytes JSONL lines.
    :param endpoint: the batch endpoint, e.g. ``/v1/chat/completions``; every ``url`` must equal it.
    :param workdir: folder for ``shard-NNNNN.jsonl`` files (created if missing; existing shard files
        of the same names are overwritten).
    :param source_name: how the input is named in error messages.
    :param limits: per-file limits and safety margin, see :class:`Limits`.
    :param custom_id_prefix: wrap bare bodies from an iterable as requests with the id
        ``f"{custom_id_prefix}-{position:06d}"``, ``position`` being the item's 0-based index, so the id
        is stable across retries (the operator builds the prefix from the partition, e.g.
        ``"{dag_id}.{task_id}.{ds}"``). See :func:`.reading.item_batches`. File sources are spooled
        unchanged; a generated id equal to a given one is a duplicate.
    :param token_limits: enqueued-token limits by model (``"*"``: any); the input's model picks one, and
        shards are then cut under it as under ``limits.enqueued_tokens``.
    :raises InvalidRequestsError: if any line is invalid or there are no requests; no file is left behind.
    """
    workdir = os.fspath(workdir)
    made_dir = not os.path.isdir(workdir)
    if made_dir:
        os.makedirs(workdir)
    fingerprint = ThreadedSha256()
    problems = ProblemLog()
    checker = RequestChecker(endpoint, limits, problems, token_limits)
    writer = ShardWriter(workdir, limits, fingerprint)
    opened = None
    try:
        if isinstance(source, (bytes, bytearray, memoryview)):
            raise TypeError(
                "Expected a binary file object, a path or an iterable of requests as `source` but received bytes"
            )
        if isinstance(source, (str, os.PathLike)):
            source = opened = open(source, "rb")  # noqa: SIM115 - closed below
        if hasattr(source, "read"):
            batches: Iterable[Batch] = read_line_batches(source, reading.CHUNK_SIZE, writer.byte_cap)
        else:
            batches = item_batches(source, endpoint, custom_id_prefix)
        id_hashes = _spool(batches, checker, writer)
        shards = writer.finish()
        found, total = problems.first, problems.total
        repeated = id_hashes.repeated()
        if repeated:
            duplicates, count = confirm_duplicates(shards, repeated, problems.skipped)
            found = sorted(found + duplicates, key=lambda p: p.line)
            total += count
        if total:
            raise InvalidRequestsError(source_name, found[:MAX_PROBLEMS], total)
        if not checker.accepted:
            raise InvalidRequestsError(
                source_name, [Problem(0, None, "no requests (the input is empty or only blank lines)")], 1
            )
    except BaseException:
        fingerprint.close()
        writer.cleanup()
        if made_dir:
            try:
                os.rmdir(workdir)
            except OSError:
                pass
        raise
    finally:
        if opened is not None:
            opened.close()
    return SpoolResult(
        shards=shards,
        total_requests=checker.accepted,
        model=checker.model,
        fingerprint=fingerprint.hexdigest(),
        embedding_inputs=sum(s.embedding_inputs for s in shards),
        token_limit=checker.token_limit,
    )


def _spool(batches: Iterable[Batch], checker: RequestChecker, writer: ShardWriter) -> IdHashes:
    """Check each batch, file its ids, write what was accepted; returns the ids' hashes."""
    id_hashes = IdHashes()
    byte_cap = writer.byte_cap
    for batch in batches:
        head, region = batch.head, batch.region
        # A line in the region is no longer than the region; the head line was assembled from pieces.
        # When neither can exceed a file, the checker skips measuring every line.
        check_size = (
            region is None
            or len(region) > byte_cap
            or (bool(head) and type(head[0]) is bytes and len(head[0]) >= byte_cap)
        )
        if region is None:
            accepted, ids, embs, tokens = checker.check(head, check_size)
            whole = False
        else:
            utf8 = _utf8(head, region)
            accepted, ids, embs, tokens, whole = checker.check_read(batch, check_size, utf8)
        if tokens is not None and writer.tok_cap is None and checker.token_limit is not None:
            writer.tok_cap = max(
                1, int(checker.token_limit * writer.margin)
            )  # the limit of the model just seen
        id_hashes.add(ids)
        if whole:  # the region's lines all accepted, and not split: written as read when they fit
            assert region is not None
            read = (accepted[0] + b"\n", region) if accepted else (region,)
            if not writer.add_read(len(accepted) + batch.count, read):
                writer.add(accepted + batch.region_lines(), None)
            continue
        as_read = None
        if region is not None and len(accepted) == len(head) + batch.count:
            # Every line accepted: write the chunk as read rather than joining its lines again.
            as_read = (accepted[0] + b"\n", region) if head else (region,)
        writer.add(accepted, embs, as_read, tokens)
    return id_hashes


def _utf8(head: list[Any], region: memoryview) -> bool:
    """Whether a read chunk's lines are all valid UTF-8 (``region``, and the line that began in an earlier chunk)."""
    try:
        if not cast(bytes, region.obj).isascii():  # the whole chunk; all ASCII is common, and checked fastest
            str(region, "utf-8")
        if head:
            head[0].decode("utf-8")
    except (UnicodeDecodeError, AttributeError):  # AttributeError: a TooLong stands in for the first line
        return False
    return True
