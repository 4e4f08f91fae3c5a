"""Pre-flight for Batch API input: validate every request line, spool to shard files, fingerprint.

Pure module: no Airflow import, no network. :func:`spool_requests` reads the requests once, as a
stream, and before anything is uploaded:

* validates every line (valid UTF-8, a JSON object, ``custom_id`` a non-empty string unique in the whole
  input, ``method == "POST"``, ``url`` equal to the operator's endpoint, ``body`` an object, one model);
* writes the accepted lines to ``workdir/shard-00000.jsonl``, ``shard-00001.jsonl``, ... starting a new
  shard before any of OpenAI's per-file limits would be crossed (see :class:`Limits`);
* computes a sha256 ``fingerprint`` over the spooled request lines, in order.

If anything is wrong, the whole input is still read (so the count of bad lines is exact), every file
written is removed, and :class:`InvalidRequestsError` names the first :data:`MAX_PROBLEMS` problems by
line number and field.

Input lines are spooled byte for byte as read (only a missing final newline is added): lines are parsed
to be checked, never re-serialized. This keeps the spool close to the speed of parsing alone, and makes
the fingerprint depend only on the request bytes, not on where they came from (local file, S3 object,
chunk sizes or shard limits). Dict items are serialized compactly (``orjson.dumps``, or ``json.dumps``
with ``separators=(",", ":")`` and ``ensure_ascii=False``), so a file written with ``orjson.dumps`` per
line fingerprints the same as the same dicts passed as an iterable.

Memory stays flat in the input size (about 30 MB of buffers: 1 MiB reads, and up to three 8 MiB
groups for the sha256, which a helper thread computes while the next lines are parsed), but for 8
bytes per request: ``custom_id`` uniqueness is checked with the 64-bit ``hash()`` of each id, kept in
64 ``array('q')`` buckets (by top bits) rather than a set of strings (a set of a million ids costs
about 100 MB). At the end each bucket is checked for repeated hashes; only if there are any, the shard
files are read a second time to confirm with the actual strings (so a hash collision is never
reported) and to name both line numbers. ``hash()`` of a ``str`` is a 64-bit SipHash, salted per
process: fine here since both passes run in the same process, and cheaper than ``blake2b``.

Speed: per line there is one ``orjson.loads`` (stdlib ``json`` when orjson is not installed), a few
dict lookups, and no copy: a read chunk whose lines are all accepted is written to the shard as a
slice of the chunk. See ``docs/benchmarks.md``.

Model rule: ``body.model`` must be a non-empty string on every line, and the same on every line (the
first line that names a model sets it; later lines naming another are problems with field
``body.model``). On endpoints in :data:`MODEL_OPTIONAL_ENDPOINTS` (``/v1/moderations``, whose
model has a server-side default) ``body.model`` may be left out, but lines that name one must agree.

Generated ``custom_id`` (``custom_id_prefix``): when the source is an iterable and an item is a dict
with none of the keys ``custom_id``, ``method`` and ``url``, it is taken as a bare request body and
wrapped as ``{"custom_id": f"{custom_id_prefix}-{position:06d}", "method": "POST", "url": endpoint,
"body": item}``, where ``position`` is the item's 0-based index in the iterable. The id is thus stable
across retries, derived only from the prefix (the operator builds one from the partition, e.g.
``"{dag_id}.{task_id}.{ds}"``) and the position. Full requests and bare bodies may be mixed; a
generated id that equals a user-given one is reported as a duplicate. The prefix does not apply to
file sources, whose lines are spooled unchanged.
"""

from __future__ import annotations

import bisect
import hashlib
import json
import os
from array import array
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, BinaryIO

try:
    import orjson
except ImportError:  # pragma: no cover - the fallback functions have their own test
    orjson = None  # type: ignore[assignment]

__all__ = [
    "MAX_PROBLEMS",
    "MODEL_OPTIONAL_ENDPOINTS",
    "InvalidRequestsError",
    "Limits",
    "Problem",
    "Shard",
    "SpoolResult",
    "count_embedding_inputs",
    "iter_jsonl_lines",
    "spool_requests",
]

MAX_PROBLEMS = 20
"""How many problems :class:`InvalidRequestsError` keeps (``total`` still counts them all)."""

MODEL_OPTIONAL_ENDPOINTS = frozenset({"/v1/moderations"})
"""Endpoints whose request body may leave out ``model``."""

EMBEDDINGS_ENDPOINT = "/v1/embeddings"
CHUNK_SIZE = 1 << 20
_BOM = b"\xef\xbb\xbf"
_FLUSH_ITEMS = 1024
_BUCKETS = 64
# hash() is a signed 64-bit value; bucket k holds [bound(k-1), bound(k)): the top 6 bits.
_BUCKET_BOUNDS = [(k - _BUCKETS // 2 + 1) << 58 for k in range(_BUCKETS - 1)]


def _stdlib_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


_stdlib_decoder = json.JSONDecoder(parse_constant=_stdlib_constant)


def _stdlib_loads(raw: bytes) -> Any:
    if type(raw) is not bytes:  # the stand-ins for unusable lines fail like they do with orjson
        raise TypeError(f"Expected bytes but received {type(raw).__name__}")
    # Decode explicitly: json.loads(bytes) would also guess UTF-16/32, which the Batch API does not accept.
    return _stdlib_decoder.decode(raw.decode("utf-8"))


def _stdlib_dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode("utf-8")


if orjson is not None:
    _loads = orjson.loads
    _dumps = orjson.dumps
else:  # pragma: no cover - exercised by the stdlib fallback test
    _loads = _stdlib_loads
    _dumps = _stdlib_dumps


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
    """

    max_requests: int = 50_000
    max_bytes: int = 200 * 1024 * 1024
    max_embedding_inputs: int = 50_000
    safety_margin: float = 0.95

    def __post_init__(self) -> None:
        for name in ("max_requests", "max_bytes", "max_embedding_inputs"):
            value = getattr(self, name)
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


@dataclass(frozen=True)
class Problem:
    """One invalid request line.

    :param line: 1-based physical line number in the input (blank lines count); for an iterable
        source, the item's 1-based position. 0 means the input as a whole.
    :param field: the offending field (``custom_id``, ``method``, ``url``, ``body``, ``body.model``,
        ``body.input``), or None when the line as a whole is bad (not UTF-8, not JSON, too large).
    :param message: what was expected and what was received.
    """

    line: int
    field: str | None
    message: str

    def __str__(self) -> str:
        where = "input" if self.line == 0 else f"line {self.line}"
        if self.field is not None:
            where += f", field {self.field!r}"
        return f"{where}: {self.message}"


class InvalidRequestsError(ValueError):
    """The requests did not pass validation; nothing was uploaded and no shard file was left behind.

    :param source: name of the input, as shown to the user (e.g. ``requests.jsonl`` or an S3 URL).
    :param problems: the first problems, in line order (at most :data:`MAX_PROBLEMS` are kept).
    :param total: how many invalid lines the input has in all.

    Constructed with only a message (as Airflow's exception deserialization does), it keeps that
    message and has no problems.
    """

    def __init__(self, source: str, problems: Iterable[Problem] | None = None, total: int | None = None):
        if problems is None and total is None:
            message = source
            problems = ()
        self.source = source
        self.problems: list[Problem] = list(problems)[:MAX_PROBLEMS]
        self.total = len(self.problems) if total is None else total
        if total is not None or self.problems:
            message = self._format()
        super().__init__(message)

    def _format(self) -> str:
        noun = "invalid request line" if self.total == 1 else "invalid request lines"
        head = f"{self.source}: {self.total} {noun} (showing {len(self.problems)}):"
        lines = [head, *(f"  {p}" for p in self.problems)]
        if self.total > len(self.problems):
            lines.append(f"  ... and {self.total - len(self.problems)} more")
        return "\n".join(lines)

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.source, self.problems, self.total))


@dataclass
class Shard:
    """One spooled input file, ready to upload.

    :param index: 0-based shard number (``path`` ends in ``shard-{index:05d}.jsonl``).
    :param path: local path of the JSONL file.
    :param requests: request lines in it.
    :param bytes: its size in bytes.
    :param embedding_inputs: embedding inputs across its requests (0 unless ``/v1/embeddings``).
    """

    index: int
    path: str
    requests: int
    bytes: int
    embedding_inputs: int


@dataclass
class SpoolResult:
    """What :func:`spool_requests` wrote.

    :param shards: the shard files, in input order.
    :param total_requests: requests across all shards.
    :param model: the one ``body.model`` of the input (None only on a model-optional endpoint
        whose requests name none).
    :param fingerprint: sha256 hex over the spooled request lines in order, newline-terminated:
        the same requests give the same fingerprint whatever the source, chunking or sharding.
    """

    shards: list[Shard]
    total_requests: int
    model: str | None
    fingerprint: str
    embedding_inputs: int = field(default=0)


class _Sha256:
    """sha256 of a stream of blocks, hashed on one helper thread in groups of ``group`` bytes.

    ``hashlib`` releases the GIL while hashing a large block, so the hashing overlaps with parsing on
    another core. Groups are large because a helper thread waits up to the interpreter's switch
    interval (5 ms) to get the GIL back after each block. At most one group waits while one is hashed.
    """

    def __init__(self, group: int = 8 << 20) -> None:
        self.sha = hashlib.sha256()
        self.group = group
        self.parts: list[Any] = []
        self.size = 0
        self.executor: ThreadPoolExecutor | None = None
        self.running: Future[None] | None = None

    def update(self, data: Any) -> None:
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
        if self.running is not None:
            self.running.result()
            self.running = None
        for part in self.parts:
            self.sha.update(part)
        self.parts = []
        self.close()
        return self.sha.hexdigest()

    def close(self) -> None:
        if self.executor is not None:
            self.executor.shutdown(wait=True)
            self.executor = None


class _TooLong(int):
    """Stands in for a line too long to keep in memory; its value is the line's length."""


class _Unusable:
    """Stands in for an iterable item that cannot become a request line."""

    __slots__ = ("field", "message")

    def __init__(self, message: str, field: str | None = None) -> None:
        self.message = message
        self.field = field


def _read_line_batches(fileobj: Any, chunk_size: int, max_line: int) -> Iterator[tuple[list[Any], int, Any]]:
    """Yield ``(lines, head, region)`` read from ``fileobj`` in chunks; lines come without their newline.

    ``region`` is a memoryview of the chunk holding ``lines[head:]`` with their newlines, exactly as read
    (``head`` is 1 when ``lines[0]`` began in an earlier chunk), so a batch whose lines are all accepted
    is written without joining or copying; None when there is no such region.
    A line longer than ``max_line`` that spans chunks is yielded as a :class:`_TooLong` instead of being
    assembled, so memory stays bounded by the chunk size and the limit whatever the input.
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
            if chunk.startswith(_BOM):
                chunk = chunk[len(_BOM) :]
        lines = chunk.split(b"\n")
        tail = lines.pop()
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
                lines[0] = _TooLong(line_len)
            else:
                pending.append(lines[0])
                lines[0] = b"".join(pending)
        else:
            start = 0
        pending = [tail] if tail else []
        pending_len = len(tail)
        yield lines, head, memoryview(chunk)[start : len(chunk) - len(tail)]
    if pending_len:
        yield [_TooLong(pending_len) if pending_len > max_line else b"".join(pending)], 1, None


def iter_jsonl_lines(fileobj: BinaryIO, chunk_size: int = CHUNK_SIZE) -> Iterator[bytes]:
    """Yield the lines of a binary JSONL file object, without their newline, reading ``chunk_size`` at a time.

    Works the same on local files and on remote ones (fsspec/S3), whose ``readline`` is often slow.
    A UTF-8 byte order mark at the start is dropped; no line is yielded for a final newline.
    """
    for lines, _, _ in _read_line_batches(fileobj, chunk_size, 1 << 62):
        yield from lines


def _item_batches(
    items: Iterable[Any], endpoint: str, prefix: str | None
) -> Iterator[tuple[list[Any], int, Any]]:
    """Turn an iterable of dicts (or str/bytes lines) into batches of request lines."""
    dumps = _dumps
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
                raw = _Unusable(f"cannot be serialized to JSON ({exc})")
        elif isinstance(item, (bytes, bytearray, memoryview, str)):
            raw = item.encode("utf-8", "surrogatepass") if isinstance(item, str) else bytes(item)
            if raw.endswith(b"\n"):
                raw = raw[:-1]
            if b"\n" in raw:
                raw = _Unusable("contains a line break; each item must be one JSONL line")
        else:
            raw = _Unusable(
                "expected a dict (a request, or with custom_id_prefix a request body) or a JSON line, "
                f"received {type(item).__name__}"
            )
        out.append(raw)
        if len(out) >= _FLUSH_ITEMS:
            yield out, 0, None
            out = []
    if out:
        yield out, 0, None


def count_embedding_inputs(body_input: Any) -> int | None:
    """How many embedding inputs ``body.input`` holds, or None if it is not a valid input.

    A string is one input, a list of token ids (ints) is one input, a list of strings or of token
    lists is one input per element.
    """
    if type(body_input) is str:
        return 1
    if type(body_input) is list and body_input:
        return 1 if type(body_input[0]) is int else len(body_input)
    return None


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return type(value).__name__


_UNSET: Any = object()


class _Spooler:
    """State of one spool run; :meth:`run` is the hot loop, the other methods are the slow paths."""

    def __init__(self, endpoint: str, workdir: str, limits: Limits) -> None:
        self.endpoint = endpoint
        self.workdir = workdir
        self.limits = limits
        self.req_cap = limits.shard_requests
        self.byte_cap = limits.shard_bytes
        self.emb_cap = limits.shard_embedding_inputs
        self.embeddings = endpoint == EMBEDDINGS_ENDPOINT
        self.model_optional = endpoint in MODEL_OPTIONAL_ENDPOINTS
        self.model: str | None = None
        self.model_line = 0
        self.problems: list[Problem] = []
        self.total_problems = 0
        self.shards: list[Shard] = []
        self.paths: list[str] = []
        self.file: Any = None
        self.sha = _Sha256()
        # 64-bit hash of every accepted custom_id, bucketed by its low byte (see module docstring).
        self.buckets = [array("q") for _ in range(_BUCKETS)]
        # For each line not written (blank or invalid), how many requests were written before it:
        # maps a request's index back to its physical line number.
        self.skipped = array("q")
        self.written = 0
        self.emb_total = 0

    # -- slow paths ---------------------------------------------------------------------------
    def problem(self, line: int, field: str | None, message: str) -> None:
        self.total_problems += 1
        if len(self.problems) < MAX_PROBLEMS:
            self.problems.append(Problem(line, field, message))
        self.skipped.append(self.written)

    def bad_raw(self, raw: Any, line: int, exc: Exception) -> None:
        """A line that did not parse: blank, too long, not UTF-8, or not JSON."""
        if isinstance(raw, _TooLong):
            self.too_large(line, int(raw) + 1)
        elif isinstance(raw, _Unusable):
            self.problem(line, raw.field, raw.message)
        elif not raw.strip():
            self.skipped.append(self.written)  # blank lines are tolerated, not requests
        else:
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError as err:
                self.problem(line, None, f"not valid UTF-8 ({err.reason} at byte {err.start})")
                return
            message = str(exc)
            if line == 1 and raw.startswith(_BOM):
                message = "UTF-8 byte order mark inside the line"
            self.problem(line, None, f"not valid JSON ({message})")

    def too_large(self, line: int, size: int) -> None:
        self.problem(
            line,
            None,
            f"line is {size:,} bytes, more than the {self.byte_cap:,} bytes a batch input file may hold "
            f"(max_bytes {self.limits.max_bytes:,} x safety_margin {self.limits.safety_margin})",
        )

    def diagnose(self, obj: Any, line: int) -> tuple[str | None, str] | None:
        """Find the first problem of a parsed line the fast path did not accept; None if it is valid.

        Sets the input's model from the first line that names one.
        """
        if type(obj) is not dict:
            return None, f"expected a JSON object, received {_json_type(obj)}"
        if "custom_id" not in obj:
            return "custom_id", "missing"
        cid = obj["custom_id"]
        if type(cid) is not str or not cid:
            return "custom_id", f"expected a non-empty string, received {_show(cid)}"
        if "method" not in obj:
            return "method", "missing"
        if obj["method"] != "POST":
            return "method", f"expected 'POST', received {_show(obj['method'])}"
        if "url" not in obj:
            return "url", f"missing (expected {self.endpoint!r})"
        if obj["url"] != self.endpoint:
            return "url", f"expected {self.endpoint!r} (the batch endpoint), received {_show(obj['url'])}"
        if "body" not in obj:
            return "body", "missing"
        body = obj["body"]
        if type(body) is not dict:
            return "body", f"expected a JSON object, received {_json_type(body)}"
        model = body.get("model")
        if model is None:
            if not self.model_optional:
                return "body.model", f"missing (every request to {self.endpoint} must name its model)"
        elif type(model) is not str or not model:
            return "body.model", f"expected a non-empty string, received {_show(model)}"
        elif self.model is None:
            self.model = model
            self.model_line = line
        elif model != self.model:
            return (
                "body.model",
                f"expected {self.model!r} (the model of line {self.model_line}; a batch holds one model), "
                f"received {_show(model)}",
            )
        return None

    def embedding_problem(self, body: dict[str, Any]) -> str:
        count = count_embedding_inputs(body.get("input"))
        if count is None:
            return (
                "expected a string, a list of strings or a list of token lists, "
                f"received {_show(body.get('input'))}"
            )
        return f"{count:,} embedding inputs, more than the {self.emb_cap:,} one batch may hold"

    # -- shard files --------------------------------------------------------------------------
    def write(self, data: Any) -> None:
        self.file.write(data)
        self.sha.update(data)

    def flush(self, buf: list[bytes]) -> int:
        """Write the buffered lines; returns their size in bytes."""
        if not buf:
            return 0
        buf.append(b"")  # join then ends with a newline, without copying the block again
        data = b"\n".join(buf)
        buf.clear()
        self.write(data)
        return len(data)

    def open_shard(self) -> None:
        path = os.path.join(self.workdir, f"shard-{len(self.shards):05d}.jsonl")
        self.paths.append(path)
        self.file = open(path, "wb")  # noqa: SIM115 - closed by close_shard or cleanup

    def close_shard(self, buf: list[bytes], requests: int, nbytes: int, emb: int) -> None:
        self.flush(buf)
        self.file.close()
        self.file = None
        index = len(self.shards)
        self.shards.append(Shard(index, self.paths[index], requests, nbytes, emb))

    def cleanup(self) -> None:
        self.sha.close()
        if self.file is not None:
            self.file.close()
            self.file = None
        for path in self.paths:
            try:
                os.remove(path)
            except FileNotFoundError:
                pass

    # -- the hot loop -------------------------------------------------------------------------
    def run(self, batches: Iterable[tuple[list[Any], int, Any]]) -> None:
        loads = _loads
        ids: list[str] = []  # custom_ids accepted in the current batch
        endpoint = self.endpoint
        embeddings = self.embeddings
        req_cap, byte_cap, emb_cap = self.req_cap, self.byte_cap, self.emb_cap
        add_ids = self.add_ids
        # Until a model is seen, a sentinel no body matches, so the first line takes the slow path.
        model = None if self.model_optional else _UNSET
        buf: list[bytes] = []
        s_req = s_bytes = s_emb = 0  # what the open shard holds
        emb = 0
        line = 0
        written = 0  # requests accepted before the current batch
        opened = False
        for lines, head, region in batches:
            # Fast mode: the whole batch (a read chunk) fits in the open shard, so per line there is only
            # parsing, checking and collecting; sizes are counted once per batch.
            if (
                region is not None
                and opened
                and not embeddings
                and s_req + len(lines) <= req_cap
                and (not head or type(lines[0]) is bytes)
                and s_bytes + len(region) + (len(lines[0]) + 1 if head else 0) <= byte_cap
            ):
                for raw in lines:
                    line += 1
                    try:
                        obj = loads(raw)
                    except (ValueError, TypeError) as exc:
                        self.written = written + len(buf)
                        self.bad_raw(raw, line, exc)
                        continue
                    if (
                        type(obj) is not dict
                        or type(cid := obj.get("custom_id")) is not str
                        or not cid
                        or obj.get("method") != "POST"
                        or obj.get("url") != endpoint
                        or type(body := obj.get("body")) is not dict
                        or body.get("model") != model
                    ):
                        self.written = written + len(buf)
                        found = self.diagnose(obj, line)
                        if found is not None:
                            self.problem(line, *found)
                            continue
                        model = self.model if self.model is not None else model
                        cid = obj["custom_id"]
                    buf.append(raw)
                    ids.append(cid)
                add_ids(ids)
                n = len(buf)
                if n == len(lines):
                    if head:
                        self.write(buf[0] + b"\n")
                        s_bytes += len(buf[0]) + 1
                    self.write(region)
                    s_bytes += len(region)
                    buf.clear()
                else:
                    s_bytes += self.flush(buf)
                s_req += n
                written += n
                continue

            # Careful mode: a shard may fill up inside this batch; sizes are checked line by line.
            for raw in lines:
                line += 1
                try:
                    obj = loads(raw)
                except (ValueError, TypeError) as exc:
                    self.written = written
                    self.bad_raw(raw, line, exc)
                    continue
                if (
                    type(obj) is not dict
                    or type(cid := obj.get("custom_id")) is not str
                    or not cid
                    or obj.get("method") != "POST"
                    or obj.get("url") != endpoint
                    or type(body := obj.get("body")) is not dict
                    or body.get("model") != model
                ):
                    self.written = written
                    found = self.diagnose(obj, line)
                    if found is not None:
                        self.problem(line, *found)
                        continue
                    model = self.model if self.model is not None else model
                    cid = obj["custom_id"]
                    body = obj["body"]
                if embeddings:
                    emb = count_embedding_inputs(body.get("input")) or 0
                    if not 0 < emb <= emb_cap:
                        self.written = written
                        self.problem(line, "body.input", self.embedding_problem(body))
                        continue
                size = len(raw) + 1
                if not opened or s_req >= req_cap or s_bytes + size > byte_cap or s_emb + emb > emb_cap:
                    if size > byte_cap:
                        self.written = written
                        self.too_large(line, size)
                        continue
                    if opened:
                        self.close_shard(buf, s_req, s_bytes, s_emb)
                    self.open_shard()
                    opened = True
                    s_req = s_bytes = s_emb = 0
                buf.append(raw)
                s_req += 1
                s_bytes += size
                s_emb += emb
                written += 1
                ids.append(cid)
            add_ids(ids)
            self.flush(buf)
        self.written = written
        if opened:
            self.close_shard(buf, s_req, s_bytes, s_emb)
        self.emb_total = sum(s.embedding_inputs for s in self.shards)

    # -- duplicates ---------------------------------------------------------------------------
    def add_ids(self, ids: list[str]) -> None:
        """File a batch's custom_id hashes into the buckets (by top bits), with the loops in C: sorted, so
        each bucket's share is one slice found by bisection. Per line this is far cheaper than appending
        each hash to its bucket."""
        if not ids:
            return
        hashes = sorted(map(hash, ids))
        ids.clear()
        lo = 0
        for bucket, bound in zip(self.buckets[:-1], _BUCKET_BOUNDS, strict=True):
            hi = bisect.bisect_left(hashes, bound, lo)
            if hi > lo:
                bucket.extend(hashes[lo:hi])
                lo = hi
        if lo < len(hashes):
            self.buckets[-1].extend(hashes[lo:])

    def duplicate_hashes(self) -> set[int]:
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

    def report_duplicates(self, repeated: set[int]) -> list[Problem]:
        """Second pass over the shards: confirm repeated hashes with the ids themselves, name the lines."""
        first_line: dict[str, int] = {}
        found: list[Problem] = []
        skipped = self.skipped
        index = 0
        for shard in self.shards:
            with open(shard.path, "rb") as f:
                for raw in iter_jsonl_lines(f):
                    cid = _loads(raw)["custom_id"]
                    if hash(cid) in repeated:
                        line = index + 1 + bisect.bisect_right(skipped, index)
                        first = first_line.setdefault(cid, line)
                        if first != line:
                            self.total_problems += 1
                            if len(found) < MAX_PROBLEMS:
                                found.append(
                                    Problem(
                                        line,
                                        "custom_id",
                                        f"duplicate custom_id {_show(cid)} (first seen on line {first})",
                                    )
                                )
                    index += 1
        return found


def spool_requests(
    source: BinaryIO | Iterable[Any] | str | os.PathLike[str],
    *,
    endpoint: str,
    workdir: str | os.PathLike[str],
    source_name: str,
    limits: Limits = Limits(),  # noqa: B008 - frozen, so sharing the default is safe
    custom_id_prefix: str | None = None,
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
        ``f"{custom_id_prefix}-{position:06d}"`` (see the module docstring).
    :raises InvalidRequestsError: if any line is invalid or there are no requests; no file is left behind.
    """
    workdir = os.fspath(workdir)
    made_dir = not os.path.isdir(workdir)
    if made_dir:
        os.makedirs(workdir)
    spooler = _Spooler(endpoint, workdir, limits)
    opened = None
    try:
        if isinstance(source, (bytes, bytearray, memoryview)):
            raise TypeError(
                "Expected a binary file object, a path or an iterable of requests as `source` but received bytes"
            )
        if isinstance(source, (str, os.PathLike)):
            source = opened = open(source, "rb")  # noqa: SIM115 - closed below
        if hasattr(source, "read"):
            batches: Iterable[tuple[list[Any], int, Any]] = _read_line_batches(
                source, CHUNK_SIZE, spooler.byte_cap
            )
        else:
            batches = _item_batches(source, endpoint, custom_id_prefix)  # type: ignore[arg-type]
        spooler.run(batches)
        problems = spooler.problems
        repeated = spooler.duplicate_hashes()
        if repeated:
            problems = sorted(problems + spooler.report_duplicates(repeated), key=lambda p: p.line)
        if spooler.total_problems:
            raise InvalidRequestsError(source_name, problems[:MAX_PROBLEMS], spooler.total_problems)
        if not spooler.written:
            raise InvalidRequestsError(
                source_name, [Problem(0, None, "no requests (the input is empty or only blank lines)")], 1
            )
    except BaseException:
        spooler.cleanup()
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
        shards=spooler.shards,
        total_requests=spooler.written,
        model=spooler.model,
        fingerprint=spooler.sha.hexdigest(),
        embedding_inputs=spooler.emb_total,
    )
