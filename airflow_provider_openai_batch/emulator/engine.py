"""Batch lifecycle: one worker thread per batch validates the input file, then processes it line by line.

Input is read and output written one line at a time, so memory stays flat whatever the file size. After
validation a batch joins its model's batch queue (:class:`~.store.Store` keeps the admitted prompt tokens):
over the setting ``enqueued_token_limits`` it fails, unbilled, as OpenAI's does with ``token_limit_exceeded``.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from typing import Any, BinaryIO

from ..cost.estimate import EMBEDDINGS, prompt_tokens
from ..cost.tokens import token_counter
from ..requests_input.validation import count_embedding_inputs
from . import responses, structured
from .errors import error_body
from .jsonl import dumps, loads
from .settings import Settings
from .store import THIRTY_DAYS, BatchRecord, Store

log = logging.getLogger(__name__)
MAX_REPORTED_ERRORS = 100
MAX_EMBEDDING_INPUTS = 50_000
#: The organisation the queue-full message names (OpenAI names the caller's).
ORGANIZATION = "org-emulator"


def _error(code: str, message: str, line: int | None, param: str | None = None) -> dict[str, Any]:
    return {"code": code, "line": line, "message": message, "param": param}


def count_prompt_tokens(source: BinaryIO, endpoint: str, model: str | None) -> int:
    """The prompt tokens of a validated input file, counted as the provider's cost estimate counts them."""
    count = token_counter(model).count
    source.seek(0)
    return sum(prompt_tokens(_parse(raw).get("body") or {}, endpoint, count) for raw in source if raw.strip())


def queue_full_error(model: str | None, limit: int) -> dict[str, Any]:
    """The ``errors.data`` item of a batch over its model's enqueued-token limit, worded as OpenAI's."""
    return _error(
        "token_limit_exceeded",
        f"Enqueued token limit reached for {model} in organization {ORGANIZATION}. Limit: {limit:,} enqueued "
        "tokens. Please try again once some in_progress batches have been completed.",
        None,
    )


def validate_file(
    source: BinaryIO, endpoint: str, max_requests: int
) -> tuple[list[dict[str, Any]], int, str | None]:
    """Check the whole file as the service does before it starts. Returns (errors, requests, model).

    :param source: the input file, open for reading in binary mode, at its start.
    :param endpoint: the batch's endpoint, which every line's ``url`` must equal.
    :param max_requests: the number of requests allowed.
    """
    errors: list[dict[str, Any]] = []
    seen: set[str] = set()
    models: set[str] = set()
    count = embedding_inputs = 0
    for lineno, raw in enumerate(source, 1):
        if len(errors) >= MAX_REPORTED_ERRORS:
            break
        if not raw.strip():
            continue
        count += 1
        if count == max_requests + 1:
            errors.append(
                _error("too_many_tasks", f"The input file has more than {max_requests} requests.", lineno)
            )
        try:
            request = loads(raw)
        except ValueError:
            request = None
        if not isinstance(request, dict):
            errors.append(_error("invalid_json_line", "This line is not parseable as valid JSON.", lineno))
            continue
        custom_id = request.get("custom_id")
        if not isinstance(custom_id, str) or not custom_id:
            errors.append(
                _error(
                    "missing_required_parameter",
                    "Missing required parameter: 'custom_id'.",
                    lineno,
                    "custom_id",
                )
            )
        elif custom_id in seen:
            errors.append(
                _error(
                    "duplicate_custom_id",
                    f"The custom_id '{custom_id}' is used more than once in the file.",
                    lineno,
                    "custom_id",
                )
            )
        else:
            seen.add(custom_id)
        if request.get("method") != "POST":
            errors.append(
                _error(
                    "invalid_method",
                    f"The request method must be 'POST', got {request.get('method')!r}.",
                    lineno,
                    "method",
                )
            )
        if request.get("url") != endpoint:
            errors.append(
                _error(
                    "url_mismatch",
                    f"The url {request.get('url')!r} does not match the batch endpoint '{endpoint}'.",
                    lineno,
                    "url",
                )
            )
        body = request.get("body")
        if not isinstance(body, dict):
            errors.append(
                _error("missing_required_parameter", "Missing required parameter: 'body'.", lineno, "body")
            )
            continue
        if endpoint == EMBEDDINGS:
            embedding_inputs += count_embedding_inputs(body.get("input")) or 0
            if embedding_inputs > MAX_EMBEDDING_INPUTS and not any(
                e["code"] == "too_many_embedding_inputs" for e in errors
            ):
                errors.append(
                    _error(
                        "too_many_embedding_inputs",
                        f"The input file has more than {MAX_EMBEDDING_INPUTS} embedding inputs across its "
                        "requests.",
                        lineno,
                        "body.input",
                    )
                )
        model = body.get("model")
        if isinstance(model, str):
            models.add(model)
            if len(models) == 2:
                errors.append(
                    _error(
                        "model_mismatch",
                        f"All requests in a batch must use the same model; line {lineno} uses '{model}'.",
                        lineno,
                        "body.model",
                    )
                )
    if count == 0 and not errors:
        errors.append(_error("empty_file", "The input file is empty.", None))
    return errors, count, (sorted(models)[0] if len(models) == 1 else None)


class BatchWorker(threading.Thread):
    """Runs one batch from ``validating`` to a terminal state."""

    def __init__(self, store: Store, batch: BatchRecord, settings: Settings) -> None:
        super().__init__(name=f"emulator-{batch.id}", daemon=True)
        self.store = store
        self.batch = batch
        self.settings = settings
        # Opened now, in the create call: the batch keeps its input even if the file is deleted while it runs.
        self.input = open(store.get_file(batch.input_file_id).path, "rb")  # noqa: SIM115 - closed by run()
        self.tmp_paths = {kind: store.data_dir / f".{batch.id}.{kind}.tmp" for kind in ("output", "error")}

    def run(self) -> None:
        try:
            self._run()
        except Exception:
            log.exception("batch %s crashed", self.batch.id)
            self._set(status="failed", failed_at=_now())
            with self.batch.lock:
                self.batch.errors = [_error("internal_error", "The emulator crashed; see its log.", None)]
        finally:
            self.input.close()
            for path in self.tmp_paths.values():
                path.unlink(missing_ok=True)

    def _set(self, **changes: Any) -> bool:
        """Apply a state change unless the batch was reset; returns False after a reset."""
        with self.batch.lock:
            if self.batch.stop_requested:
                return False
            if self.batch.cancel_requested and changes.get("status") in ("in_progress", "finalizing"):
                changes.pop("status")  # a cancel that arrived meanwhile keeps the batch in `cancelling`
            for name, value in changes.items():
                setattr(self.batch, name, value)
            return True

    def _pause(self, seconds: float) -> None:
        if seconds > 0:
            self.batch.wake.wait(seconds)

    def _linger(self, seconds: float) -> None:
        """Sleep even though ``wake`` is set (a cancel sets it), but stop at once on reset."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline and not self.batch.stop_requested:
            time.sleep(0.02)

    def _run(self) -> None:
        batch = self.batch
        self._pause(self.settings.validating_seconds)
        if batch.stop_requested:
            return
        if not batch.cancel_requested:
            errors, count, model = validate_file(self.input, batch.endpoint, self.settings.max_requests)
            if not errors:
                errors = self._enqueue(model)
            if errors:
                self._set(status="failed", failed_at=_now(), errors=errors)
                return
            if not self._set(model=model, total=count, status="in_progress", in_progress_at=_now()):
                return
        stop_code, lines = self._process()
        if batch.total == 0:  # cancelled before validation counted the requests
            self._set(total=lines)
        if stop_code is None:
            if not self._set(status="finalizing", finalizing_at=_now()):
                return
            self._pause(self.settings.finalizing_seconds)
        if stop_code == "batch_cancelled":
            self._linger(self.settings.cancelling_seconds)
        files = self._register_files()
        if files is None:
            return
        now = _now()
        final = {
            None: {"status": "completed", "completed_at": now},
            "batch_cancelled": {"status": "cancelled", "cancelled_at": now},
            "batch_expired": {"status": "expired", "expired_at": now},
        }[stop_code]
        self._set(**files, **final)

    def _enqueue(self, model: str | None) -> list[dict[str, Any]]:
        """Join the model's batch queue, or the error of a queue too full to take this batch (not billed)."""
        limit = self.settings.token_limit(model)
        if limit is None:
            return []
        tokens = count_prompt_tokens(self.input, self.batch.endpoint, model)
        if self.store.enqueue(self.batch, model, tokens, limit):
            return []
        with self.batch.lock:
            self.batch.unbilled = True
        return [queue_full_error(model, limit)]

    def _stop_code(self) -> str | None:
        batch = self.batch
        if batch.cancel_requested or batch.stop_requested:
            return "batch_cancelled"
        if batch.expire_requested or time.time() >= batch.deadline:
            return "batch_expired"
        return None

    def _process(self) -> tuple[str | None, int]:
        """Answer every line, or after a cancel/expiry write the rest as error lines.

        Returns the stop code (None when every line was answered) and the number of requests.
        """
        batch, settings = self.batch, self.settings
        stop_code = self._stop_code()
        regex = re.compile(settings.fail_custom_id_regex) if settings.fail_custom_id_regex else None
        created = batch.in_progress_at or _now()
        started, done, lines = time.monotonic(), 0, 0
        self.input.seek(0)
        with open(self.tmp_paths["output"], "wb") as out, open(self.tmp_paths["error"], "wb") as err:
            for raw in self.input:
                if not raw.strip():
                    continue
                lines += 1
                request = _parse(raw)
                custom_id = request.get("custom_id")
                if stop_code is None:
                    stop_code = self._stop_code()
                if stop_code is not None:
                    if batch.stop_requested:
                        return stop_code, lines
                    err.write(_stopped_line(custom_id, stop_code) + b"\n")
                    continue
                ok, line = self._answer(request, regex, created)
                (out if ok else err).write(line + b"\n")
                done += 1
                if settings.rate > 0:
                    ahead = started + done / settings.rate - time.monotonic()
                    if ahead > 0.002:
                        self._pause(ahead)
        if not settings.final_newline:  # as some real files end: a last line with no newline
            for path in (self.tmp_paths["output"], self.tmp_paths["error"]):
                with open(path, "rb+") as fh:
                    if fh.seek(0, 2):
                        fh.truncate(fh.tell() - 1)
        return stop_code, lines

    def _answer(
        self, request: dict[str, Any], regex: re.Pattern[str] | None, created: int
    ) -> tuple[bool, bytes]:
        batch = self.batch
        custom_id = str(request.get("custom_id"))
        body = request.get("body")
        if not isinstance(body, dict):
            body = {}
        seed = responses.digest(batch.id + custom_id, {}).hex()
        status = body.get("x_emulator_status")
        if not (isinstance(status, int) and status >= 400):
            status = self.settings.fail_status if regex is not None and regex.search(custom_id) else 200
        if status == 200:
            result, (tokens_in, cached, tokens_out, reasoning) = responses.respond(
                batch.endpoint,
                custom_id,
                body,
                created=created,
                embedding_dim=self.settings.embedding_dim,
                answer_fault=structured.fault_for(self.settings, custom_id),
            )
            batch.input_tokens += tokens_in
            batch.cached_tokens += cached
            batch.output_tokens += tokens_out
            batch.reasoning_tokens += reasoning
            batch.completed += 1
        else:
            result = error_body(status, f"Emulated HTTP {status} for custom_id '{custom_id}'.")
            batch.failed += 1
        line = {
            "id": "batch_req_" + seed[:32],
            "custom_id": custom_id,
            "response": {"status_code": status, "request_id": "req_" + seed[32:64], "body": result},
            "error": None,
        }
        return status == 200, dumps(line)

    def _register_files(self) -> dict[str, str] | None:
        """Turn the non-empty temporary files into ``batch_output`` files; None if the batch was reset."""
        batch = self.batch
        expires = batch.output_expires_seconds or THIRTY_DAYS
        ids: dict[str, str] = {}
        with batch.lock:
            if batch.stop_requested:
                return None
            for kind, path in self.tmp_paths.items():
                if path.stat().st_size:
                    record = self.store.add_file(path, f"{batch.id}_{kind}.jsonl", "batch_output", expires)
                    ids[f"{kind}_file_id"] = record.id
        return ids


def _parse(raw: bytes) -> dict[str, Any]:
    try:
        request = loads(raw)
    except ValueError:
        return {}
    return request if isinstance(request, dict) else {}


def _stopped_line(custom_id: Any, code: str) -> bytes:
    reason = "cancelled" if code == "batch_cancelled" else "expired"
    return dumps(
        {
            "id": "batch_req_" + responses.digest(str(custom_id), {}).hex()[:32],
            "custom_id": custom_id,
            "response": None,
            "error": {
                "code": code,
                "message": f"This request could not be executed before the batch {reason}.",
            },
        }
    )


def _now() -> int:
    return int(time.time())
