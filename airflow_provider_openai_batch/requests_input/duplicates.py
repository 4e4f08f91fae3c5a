"""Duplicate ``custom_id`` detection in flat memory: 8 bytes per request. Each accepted id's 64-bit ``hash()``
(SipHash, salted per process: fine, since both passes run in one process, and cheaper than ``blake2b``) is
filed into one of 64 ``array('q')`` buckets by its low bits, rather than kept in a set of strings (a set of a
million ids costs about 100 MB). At the end each bucket is checked for repeated hashes; only if there are any
are the shard files read a second time, to confirm with the ids themselves (so a hash collision is never
reported) and to name both line numbers.
"""

from __future__ import annotations

import bisect
from array import array
from collections.abc import Sequence

from airflow_provider_openai_batch.requests_input import codec
from airflow_provider_openai_batch.requests_input.problems import MAX_PROBLEMS, Problem, show
from airflow_provider_openai_batch.requests_input.reading import iter_jsonl_lines
from airflow_provider_openai_batch.requests_input.shards import Shard

_BUCKETS = 64
_LOW_BITS = _BUCKETS - 1  # bucket k holds the hashes whose low 6 bits are k


class IdHashes:
    """The hashes of every accepted ``custom_id``, bucketed by their low bits."""

    def __init__(self) -> None:
        self.buckets = [array("q") for _ in range(_BUCKETS)]
        self._appends = [bucket.append for bucket in self.buckets]

    def add(self, ids: list[str]) -> None:
        """File a batch's ids; empties ``ids``.

        :param ids: the batch's accepted ids, in any order.
        """
        # A bound append per bucket: cheaper per id than sorting each batch to slice it.
        appends = self._appends
        for h in map(hash, ids):
            appends[h & _LOW_BITS](h)
        ids.clear()

    def repeated(self) -> set[int]:
        """Hashes seen more than once (usually none)."""
        repeated: set[int] = set()
        for bucket in self.buckets:
            if len(bucket) > 1 and len(set(bucket)) != len(bucket):
                seen: set[int] = set()
                for h in bucket:
                    if h in seen:
                        repeated.add(h)
                    else:
                        seen.add(h)
        return repeated


def confirm_duplicates(
    shards: Sequence[Shard], repeated: set[int], skipped: Sequence[int]
) -> tuple[list[Problem], int]:
    """Read the shards again to find the ids behind ``repeated`` hashes that really repeat.

    Returns the first :data:`MAX_PROBLEMS` duplicates, in line order, and how many there are in all.

    :param shards: the spooled shards, in input order.
    :param repeated: hashes seen more than once, from :meth:`IdHashes.repeated`.
    :param skipped: for every line not spooled, how many requests came before it, in order
        (:attr:`ProblemLog.skipped`): maps a request's index back to its line number.
    """
    loads = codec.loads
    first_line: dict[str, int] = {}
    found: list[Problem] = []
    total = 0
    index = 0
    for shard in shards:
        with open(shard.path, "rb") as f:
            for raw in iter_jsonl_lines(f):
                cid = loads(raw)["custom_id"]
                if hash(cid) in repeated:
                    line = index + 1 + bisect.bisect_right(skipped, index)
                    first = first_line.setdefault(cid, line)
                    if first != line:
                        total += 1
                        if len(found) < MAX_PROBLEMS:
                            message = f"duplicate custom_id {show(cid)} (first seen on line {first})"
                            found.append(Problem(line, "custom_id", message))
                index += 1
    return found, total
