"""Read landed batch results as one record per request, optionally joined back to the requests by ``custom_id``.

Downstream tasks otherwise parse ``output.jsonl`` and ``errors.jsonl`` by hand and join them to their input
themselves. :func:`read_results` streams both files (1 MiB reads, one line parsed at a time), so memory
stays flat in the number of results; the join keeps the requests on disk (see :mod:`.join`). No Airflow
import, unless a path names an Airflow connection. ``to_pandas()``, ``to_polars()`` and ``to_arrow()``
load everything into memory, by nature: iterate for large results.
"""

from __future__ import annotations

import importlib
import itertools
import weakref
from collections.abc import Iterable, Iterator
from typing import Any

import orjson

from airflow_provider_openai_batch import files
from airflow_provider_openai_batch.reader import sources
from airflow_provider_openai_batch.reader.join import LOOKUP_BATCH, RequestIndex
from airflow_provider_openai_batch.reader.shapes import embedding, text
from airflow_provider_openai_batch.requests_input.reading import iter_jsonl_lines
from airflow_provider_openai_batch.structured.validate import OutputSchema

__all__ = ["Results", "embedding", "read_results", "text"]

INCLUDE = ("output", "errors")
COLUMNS = ("custom_id", "status_code", "response", "error")
_NESTED = ("response", "error", "request", "parsed")
#: With ``schema=``: a record's ``status``.
OK, FAILED, INVALID_OUTPUT = "ok", "failed", "invalid_output"


def _record(line: Any, number: int, name: str) -> dict[str, Any]:
    """One output or error line as a record: the body on success, the error otherwise (never both)."""
    if not isinstance(line, dict):
        raise ValueError(
            f"Expected a JSON object on line {number} of {name} but received {type(line).__name__}"
        )
    response = line.get("response") or {}
    status = response.get("status_code")
    body = response.get("body")
    error = line.get("error")
    if error is None and (status is None or status >= 400):
        # A request the endpoint refused: the error file holds its response, with the error in the body.
        error = (body.get("error") if isinstance(body, dict) else None) or {
            "code": None,
            "message": f"HTTP {status}" if status is not None else "no response and no error",
        }
    return {
        "custom_id": line.get("custom_id"),
        "status_code": status,
        "response": None if error is not None else body,
        "error": error,
    }


def _lines(location: Any) -> Iterator[dict[str, Any]]:
    name = files.display(location)
    with files.open_binary(location, in_order=True) as fh:
        for number, raw in enumerate(iter_jsonl_lines(fh), start=1):
            if not raw.strip():
                continue
            yield _record(files.json_line(raw, number, name), number, name)


def _require(module: str, method: str, extra: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise ImportError(
            f"Results.{method}() needs {module}, which is not installed: "
            f"pip install 'airflow-provider-openai-batch[{extra}]'"
        ) from err


class Results:
    """The records of one landed result; iterate to stream them. Made by :func:`read_results`.

    Iterating again re-reads the files; the request index is built once and removed by :meth:`close`
    (also on exit from a ``with`` block, or when the object is garbage collected).
    """

    def __init__(
        self,
        files: sources.ResultFiles,
        requests: Any = None,
        *,
        include: Iterable[str] = INCLUDE,
        custom_id_prefix: str | None = None,
        schema: Any = None,
    ) -> None:
        self.files = files
        self.include = tuple(include)
        self._requests = requests
        self.schema = None if schema is None else OutputSchema(schema)
        if self.schema is not None and self.schema.needs_requests and requests is None:
            raise ValueError(
                "Expected `requests` with schema='auto' (each request's own schema is found through the join) "
                "but received none"
            )
        self._prefix = custom_id_prefix or files.custom_id_prefix
        self._index: RequestIndex | None = None
        self._cleanup: weakref.finalize[[], Results] | None = None

    @property
    def columns(self) -> tuple[str, ...]:
        joined = ("request",) if self._requests is not None else ()
        return COLUMNS + joined + (("status", "parsed") if self.schema is not None else ())

    def _request_index(self) -> RequestIndex:
        if self._index is None:
            self._index = RequestIndex(self._requests, custom_id_prefix=self._prefix)
            self._cleanup = weakref.finalize(self, self._index.close)
        return self._index

    def __iter__(self) -> Iterator[dict[str, Any]]:
        # A generator method: its frame holds `self`, so the index outlives a `read_results(...)` temporary.
        files = [*(self.files.output if "output" in self.include else ())]
        files += self.files.errors if "errors" in self.include else ()
        records: Iterator[dict[str, Any]] = itertools.chain.from_iterable(_lines(f) for f in files)
        if self._requests is not None:
            records = self._joined(records)
        if self.schema is None:
            yield from records
            return
        check = self.schema.check
        for record in records:
            if record["error"] is not None:
                record["status"], record["parsed"] = FAILED, None
            else:
                record["parsed"], error = check(record["response"], record.get("request"))
                if error is None:
                    record["status"] = OK
                else:
                    record["status"], record["error"] = INVALID_OUTPUT, error
            yield record

    def _joined(self, records: Iterator[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        index = self._request_index()
        # Joined a few hundred at a time: one index query per batch, a batch's records in memory at most.
        while batch := list(itertools.islice(records, LOOKUP_BATCH)):
            bodies = index.bodies(r["custom_id"] for r in batch if r["custom_id"] is not None)
            for record in batch:
                record["request"] = bodies.get(record["custom_id"])
                yield record

    def close(self) -> None:
        """Remove the temporary request index (a no-op without ``requests``)."""
        if self._cleanup is not None:
            self._cleanup()
        self._index = None

    def __enter__(self) -> Results:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _rows(self, json_columns: bool, flatten: bool = False) -> list[dict[str, Any]]:
        if flatten and self.schema is None:
            raise ValueError(
                "Expected `schema=` in read_results(...) to flatten the parsed answers but received none"
            )
        rows = []
        for record in self:
            parsed = record.get("parsed")
            if parsed is not None and not isinstance(parsed, dict):
                record["parsed"] = parsed = parsed.model_dump(mode="json")  # a Pydantic model
            if flatten:
                record = {k: record[k] for k in ("custom_id", "status_code", "status", "error")}
                record.update(_flat(parsed or {}))
            if json_columns:
                for key in _NESTED:
                    if record.get(key) is not None:
                        record[key] = orjson.dumps(record[key]).decode()
            rows.append(record)
        return rows

    def to_pandas(self, *, flatten: bool = False) -> Any:
        """A pandas DataFrame, one row per record; ``response``, ``error``, ``request`` and ``parsed`` hold dicts.

        :param flatten: with ``schema=``, one column per field of the parsed answers (a nested field as
            ``"outer.inner"``) beside ``custom_id``, ``status_code``, ``status`` and ``error``, instead of the
            bodies; a record without a valid answer has empty fields.
        :raises ImportError: when pandas is not installed (extra ``pandas``).
        """
        pd = _require("pandas", "to_pandas", "pandas")
        rows = self._rows(False, flatten)
        if flatten:
            return pd.DataFrame.from_records(rows)
        return pd.DataFrame.from_records(rows, columns=list(self.columns))

    def to_arrow(self, *, json_columns: bool = False, flatten: bool = False) -> Any:
        """A pyarrow Table, one row per record.

        :param json_columns: keep ``response``, ``error`` and ``request`` as JSON strings instead of structs
            (for bodies whose fields change type from one record to the next, which structs cannot hold).
        :param flatten: one column per parsed field, as in :meth:`to_pandas`.
        :raises ImportError: when pyarrow is not installed (extra ``pyarrow``).
        """
        pa = _require("pyarrow", "to_arrow", "pyarrow")
        rows = self._rows(json_columns, flatten)
        try:
            return pa.Table.from_pylist(rows) if rows else pa.table({c: [] for c in self.columns})
        except (pa.ArrowInvalid, pa.ArrowTypeError) as err:
            raise ValueError(
                f"Expected bodies Arrow can type as structs but received: {err}; pass json_columns=True"
            ) from err

    def to_polars(self, *, json_columns: bool = False, flatten: bool = False) -> Any:
        """A polars DataFrame, one row per record (nested bodies as structs; see ``to_arrow``'s ``json_columns``
        and ``to_pandas``'s ``flatten``).

        :raises ImportError: when polars is not installed (extra ``polars``).
        """
        pl = _require("polars", "to_polars", "polars")
        rows = self._rows(json_columns, flatten)
        if not rows:
            return pl.DataFrame({c: [] for c in self.columns})
        return pl.from_dicts(rows, infer_schema_length=None)


def _flat(value: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, item in value.items():
        if isinstance(item, dict) and item:
            flat.update(_flat(item, f"{prefix}{key}."))
        else:
            flat[prefix + key] = item
    return flat


def read_results(
    source: Any,
    requests: Any = None,
    *,
    include: Iterable[str] = INCLUDE,
    custom_id_prefix: str | None = None,
    schema: Any = None,
) -> Results:
    """Stream the results of a batch task, one record per request, from its output and error files.

    Each record is a dict: ``custom_id``; ``status_code`` (the HTTP status OpenAI got, None when the request
    never ran); ``response``, the response body, or None; ``error``, None on success, else the error
    (``{"code", "message"}`` for requests that did not run, the body's ``error`` for refused ones); and
    with ``requests``, ``request``, the original request body (None when no request has that id). Records
    come in file order (OpenAI's, not the input's): output first, then errors.

    With ``schema``, each answer is parsed and validated, and each record gains ``parsed`` (the answer as a
    model instance or a dict; None unless valid) and ``status``: ``"ok"``, ``"failed"`` (the request failed),
    or ``"invalid_output"``, with ``error`` then ``{"code": "invalid_output", "reason", "message", "errors"}``:
    ``reason`` is ``truncated``, ``refusal``, ``no_answer``, ``invalid_json``, ``schema_mismatch`` or
    ``no_schema``; ``errors`` lists each failing ``field`` with its ``message``. ``response`` is kept.

    :param source: a BatchResult dict (the operator's return value), a results folder (holding
        ``output.jsonl``, ``errors.jsonl`` when there are errors, and ``_manifest.json``; on object storage
        ``output-00000.jsonl``, ... when a task landed several files, as its manifest lists), or the path of
        one output file (a path ending in ``.jsonl``). Local paths, fsspec URLs, Airflow connection URLs
        (``s3://aws_conn@bucket/results/``) and ObjectStoragePath objects are accepted.
    :param requests: the input path (any of the above), or an iterable of requests (dicts, bare bodies or
        JSONL lines, as the operator takes them), to join by ``custom_id``.
    :param include: which files to read: ``("output", "errors")`` (the default), or one of them.
    :param custom_id_prefix: the operator's ``custom_id_prefix``, needed to join an iterable of bare bodies
        when ``source`` is an output file (a BatchResult or a results folder already carries it).
    :param schema: a Pydantic model class, a JSON schema dict, or ``"auto"`` (the schema each request's body
        asks for: ``response_format.json_schema.schema`` or ``text.format.schema``; needs ``requests``).
    :raises FileNotFoundError: when a folder has no ``_manifest.json`` (still landing) or a file is missing.
    """
    include = (include,) if isinstance(include, str) else tuple(include)
    if not include or any(i not in INCLUDE for i in include):
        raise ValueError(f"Expected `include` to hold some of {INCLUDE} but received {include!r}")
    return Results(
        sources.resolve(source), requests, include=include, custom_id_prefix=custom_id_prefix, schema=schema
    )
