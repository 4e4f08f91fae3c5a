"""Validation of request lines: each must be valid UTF-8 and a JSON object with ``custom_id`` a non-empty
string, ``method == "POST"``, ``url`` equal to the batch endpoint and ``body`` an object, and must fit in one
input file. ``body.model`` must be a non-empty string, the same on every line: the first line that names a
model sets it (on :data:`MODEL_OPTIONAL_ENDPOINTS` it may be left out, but lines that name one must agree).
On ``/v1/embeddings``, ``body.input`` must hold from one to a shard's limit of embedding inputs. Problems are all
counted, the first :data:`.problems.MAX_PROBLEMS` kept, each named by line number and field.

Lines from a file first take the fast check of :mod:`.fast_check` (msgspec decodes only the checked fields, a
whole chunk at once once the model is known). A line that does not pass it is parsed in full (orjson) and diagnosed
field by field, as iterable sources always are, so the problems named are the same. Counting prompt tokens needs
the whole body, so it takes the full parse.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import msgspec

from airflow_provider_openai_batch.requests_input import codec
from airflow_provider_openai_batch.requests_input.fast_check import ChunkFit, head_decoder
from airflow_provider_openai_batch.requests_input.problems import ProblemLog, show
from airflow_provider_openai_batch.requests_input.reading import BOM, Batch, TooLong, Unusable
from airflow_provider_openai_batch.requests_input.shards import Limits
from airflow_provider_openai_batch.structured.formats import strict_problems, strict_schema_of

MODEL_OPTIONAL_ENDPOINTS = frozenset({"/v1/moderations"})
"""Endpoints whose request body may leave out ``model``."""

EMBEDDINGS_ENDPOINT = "/v1/embeddings"
#: Endpoints whose bodies may ask for structured output (``response_format`` / ``text.format``).
STRUCTURED_ENDPOINTS = frozenset({"/v1/chat/completions", "/v1/responses"})

# Until a model is seen, the accept check compares body.model with this, which no body matches, so the
# first line naming a model is diagnosed, and sets it.
_UNSET: Any = object()


def count_embedding_inputs(body_input: Any) -> int | None:
    """How many embedding inputs ``body.input`` holds, or None if it is not a valid input.

    A string is one input, a list of token ids (ints) is one input, a list of strings or of token
    lists is one input per element.

    :param body_input: the ``input`` of an embeddings request body.
    """
    if type(body_input) is str:
        return 1
    if type(body_input) is list and body_input:
        return 1 if type(body_input[0]) is int else len(body_input)
    return None


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


class RequestChecker:
    """Checks the lines of one input, batch after batch in input order, for one endpoint.

    Carries from batch to batch the line number, the count of accepted requests and the input's model.

    :param endpoint: the batch endpoint, e.g. ``/v1/chat/completions``; every ``url`` must equal it.
    :param limits: the per-file limits (a line must fit in one file; embedding inputs in one shard).
    :param problems: where invalid and blank lines are recorded.
    """

    def __init__(
        self,
        endpoint: str,
        limits: Limits,
        problems: ProblemLog,
        token_limits: Mapping[str, int] | None = None,
    ) -> None:
        self.endpoint = endpoint
        self.limits = limits
        self.problems = problems
        self.byte_cap = limits.shard_bytes
        self.emb_cap = limits.shard_embedding_inputs
        self.embeddings = endpoint == EMBEDDINGS_ENDPOINT
        self.model_optional = endpoint in MODEL_OPTIONAL_ENDPOINTS
        self.structured = endpoint in STRUCTURED_ENDPOINTS
        self._strict_verdicts: dict[bytes, str | None] = {}  # one check per distinct strict schema
        self.model: str | None = None
        self.model_line = 0
        self.line = 0  # lines checked so far
        self.accepted = 0  # requests accepted so far
        self.token_limit = limits.enqueued_tokens
        # model -> enqueued-token limit ("*": any model); the input's limit is picked once its model is known.
        self.token_limits = dict(token_limits or {})
        self._count: Any = None  # the prompt-token counter, made once the model is known
        self._head_decoder = head_decoder(self.embeddings)
        self._fast: ChunkFit | None = None  # the whole-chunk check of the input's model

    def check_read(
        self, batch: Batch, check_size: bool, utf8: bool
    ) -> tuple[list[Any], list[str], list[int] | None, list[int] | None, bool]:
        """:meth:`check` for a batch read from a file, plus whether its region was accepted whole.

        Once the model is known, the region of a chunk of UTF-8 lines is first decoded at once against a type
        that only valid requests fit, without splitting it into lines. If every line fits, the last value is
        True and the accepted lines returned are only the head's (the region is written as read); else the
        lines are split and checked one by one, which names each problem.
        """
        fast = None if check_size or not utf8 else self._chunk_fit()
        if fast is None:
            return (*self.check(batch.lines(), check_size, utf8), False)
        head = batch.head
        accepted, ids, _, _ = self.check(head, check_size, utf8) if head else ([], [], None, None)
        fit = fast.ids(batch.region, batch.count, self._strict_problem)
        if fit is None:
            more = self.check(batch.region_lines(), check_size, utf8)
            return accepted + more[0], ids + more[1], None, None, False
        self.line += len(fit)
        self.accepted += len(fit)
        return accepted, ids + fit, None, None, True

    def _chunk_fit(self) -> ChunkFit | None:
        """The whole-chunk check, once the model is known (None before, or where lines need the whole body:
        embedding inputs and prompt tokens are counted per line)."""
        if self.model is None or self.embeddings or self.token_limit is not None or self.token_limits:
            return None
        if self._fast is None or self._fast.model != self.model:
            self._fast = ChunkFit(self.endpoint, self.model, self.model_optional, self.structured)
        return self._fast

    def check(
        self, lines: list[Any], check_size: bool = True, utf8: bool = False
    ) -> tuple[list[Any], list[str], list[int] | None, list[int] | None]:
        """Check the next lines; returns the accepted lines, their ``custom_id`` values, on
        ``/v1/embeddings`` their embedding input counts (else None), and their prompt tokens when an
        enqueued-token limit is set (else None).

        :param lines: raw lines without their newline: bytes, or :class:`TooLong`/:class:`Unusable`.
        :param check_size: False when the caller knows that no line in ``lines`` is too large for a file.
        :param utf8: True when the caller knows that every bytes line is valid UTF-8 (it checked the
            chunk they came from): they are then decoded for the checked fields only (see the module).
        """
        loads = codec.loads
        endpoint = self.endpoint
        problems = self.problems
        embeddings = self.embeddings
        byte_cap, emb_cap = self.byte_cap, self.emb_cap
        per_line_limits = embeddings or check_size
        model = self.model if self.model is not None else (None if self.model_optional else _UNSET)
        accepted: list[Any] = []
        ids: list[str] = []
        embs: list[int] = []
        toks: list[int] = []
        token_limit = self.token_limit
        emb = 0
        base = self.accepted
        line = self.line
        structured = self.structured
        # Lines known to be UTF-8 are first decoded for the checked fields only; counting prompt tokens
        # needs the whole body, so it takes the full parse.
        head = self._head_decoder.decode if utf8 and token_limit is None and not self.token_limits else None
        for raw in lines:
            line += 1
            req: Any = None
            if head is not None:
                try:
                    req = head(raw)
                except (msgspec.DecodeError, msgspec.ValidationError, RecursionError, TypeError):
                    pass  # diagnosed by the full parse below
                if req is not None and not (
                    type(cid := req.custom_id) is str
                    and cid
                    and req.method == "POST"
                    and req.url == endpoint
                    and req.body is not None
                    and req.body.model == model
                ):
                    req = None
            if req is not None:  # accepted so far, without a full parse
                body: Any = None
                rf, text = req.body.response_format, req.body.text
                body_input = req.body.input if embeddings else None
            else:
                try:
                    obj = loads(raw)
                except (ValueError, TypeError) as exc:
                    self._bad_raw(raw, line, base + len(ids), exc)
                    continue
                # The accept check: a line passing it is valid; one failing it is diagnosed.
                if (
                    type(obj) is not dict
                    or type(cid := obj.get("custom_id")) is not str
                    or not cid
                    or obj.get("method") != "POST"
                    or obj.get("url") != endpoint
                    or type(body := obj.get("body")) is not dict
                    or body.get("model") != model
                ):
                    found = self._diagnose(obj, line)
                    if found is not None:
                        problems.add(line, base + len(ids), *found)
                        continue
                    model = self.model if self.model is not None else model
                    cid = obj["custom_id"]
                    body = obj["body"]
                rf, text = body.get("response_format"), body.get("text")
                body_input = body.get("input") if embeddings else None
            # A body may ask for strict structured output: its schema is then checked.
            if structured and (text is not None or (type(rf) is dict and rf.get("type") == "json_schema")):
                found = self._strict_problem({"response_format": rf, "text": text})
                if found is not None:
                    problems.add(line, base + len(ids), *found)
                    continue
            if per_line_limits:
                if embeddings:
                    emb = count_embedding_inputs(body_input) or 0
                    if not 0 < emb <= emb_cap:
                        problems.add(line, base + len(ids), "body.input", self._embedding_problem(body_input))
                        continue
                if check_size and len(raw) >= byte_cap:
                    problems.add(line, base + len(ids), None, self._too_large(len(raw) + 1))
                    continue
                if embeddings:
                    embs.append(emb)
            if token_limit is None and self.token_limits:
                token_limit = self.token_limit = self.token_limits.get(
                    self.model or "", self.token_limits.get("*")
                )
                self.token_limits = {}
            if token_limit is not None:
                tok = self._prompt_tokens(body)
                if tok > token_limit:
                    problems.add(
                        line,
                        base + len(ids),
                        "body",
                        f"Expected a request within the enqueued-token limit of {self.model}'s batch queue "
                        f"({token_limit:,} tokens) but received one of {tok:,} prompt tokens: it could never run",
                    )
                    if embeddings:
                        embs.pop()
                    continue
                toks.append(tok)
            accepted.append(raw)
            ids.append(cid)
        self.line = line
        self.accepted = base + len(ids)
        return accepted, ids, embs if embeddings else None, toks if token_limit is not None else None

    def _prompt_tokens(self, body: dict[str, Any]) -> int:
        """A request's prompt tokens, counted as the cost estimate counts them."""
        from airflow_provider_openai_batch.cost.estimate import prompt_tokens
        from airflow_provider_openai_batch.cost.tokens import token_counter

        if self._count is None:
            self._count = token_counter(self.model).count
        return prompt_tokens(body, self.endpoint, self._count)

    def _bad_raw(self, raw: Any, line: int, position: int, exc: Exception) -> None:
        """A line that did not parse: blank, too long, unusable, not UTF-8, or not JSON."""
        if isinstance(raw, TooLong):
            self.problems.add(line, position, None, self._too_large(int(raw) + 1))
        elif isinstance(raw, Unusable):
            self.problems.add(line, position, raw.field, raw.message)
        elif not raw.strip():
            self.problems.skip(position)
        else:
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError as err:
                self.problems.add(line, position, None, f"not valid UTF-8 ({err.reason} at byte {err.start})")
                return
            message = str(exc)
            if line == 1 and raw.startswith(BOM):
                message = "UTF-8 byte order mark inside the line"
            self.problems.add(line, position, None, f"not valid JSON ({message})")

    def _strict_problem(self, body: dict[str, Any]) -> tuple[str, str] | None:
        """The first thing OpenAI's strict mode would refuse in the body's schema, as (field, message)."""
        asked = strict_schema_of(body)
        if asked is None:
            return None
        field, schema = asked
        key = codec.dumps(schema) if isinstance(schema, dict) else repr(schema).encode()
        if key not in self._strict_verdicts:
            found = strict_problems(schema)
            self._strict_verdicts[key] = (
                f"OpenAI would reject this schema in strict mode: {found[0]}"
                + (f" (and {len(found) - 1} more)" if len(found) > 1 else "")
                if found
                else None
            )
        message = self._strict_verdicts[key]
        return None if message is None else (field, message)

    def _too_large(self, size: int) -> str:
        return (
            f"line is {size:,} bytes, more than the {self.byte_cap:,} bytes a batch input file may hold "
            f"(max_bytes {self.limits.max_bytes:,} x safety_margin {self.limits.safety_margin})"
        )

    def _diagnose(self, obj: Any, line: int) -> tuple[str | None, str] | None:
        """Find the first problem of a parsed line the accept check did not pass; None if it is valid.

        Sets the input's model from the first line that names one.
        """
        if type(obj) is not dict:
            return None, f"expected a JSON object, received {_json_type(obj)}"
        if "custom_id" not in obj:
            return "custom_id", "missing"
        cid = obj["custom_id"]
        if type(cid) is not str or not cid:
            return "custom_id", f"expected a non-empty string, received {show(cid)}"
        if "method" not in obj:
            return "method", "missing"
        if obj["method"] != "POST":
            return "method", f"expected 'POST', received {show(obj['method'])}"
        if "url" not in obj:
            return "url", f"missing (expected {self.endpoint!r})"
        if obj["url"] != self.endpoint:
            return "url", f"expected {self.endpoint!r} (the batch endpoint), received {show(obj['url'])}"
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
            return "body.model", f"expected a non-empty string, received {show(model)}"
        elif self.model is None:
            self.model = model
            self.model_line = line
        elif model != self.model:
            return (
                "body.model",
                f"expected {self.model!r} (the model of line {self.model_line}; a batch holds one model), "
                f"received {show(model)}",
            )
        return None

    def _embedding_problem(self, body_input: Any) -> str:
        count = count_embedding_inputs(body_input)
        if count is None:
            return (
                f"expected a string, a list of strings or a list of token lists, received {show(body_input)}"
            )
        return f"{count:,} embedding inputs, more than the {self.emb_cap:,} one batch may hold"
