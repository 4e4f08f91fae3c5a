"""Streaming ``multipart/form-data`` reader: the file part goes straight to disk, chunk by chunk."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import Request

from .errors import APIError

MAX_FIELD_BYTES = 64 * 1024


@dataclasses.dataclass
class Upload:
    """The parsed form: plain fields, and the file part's name, size and temporary path."""

    fields: dict[str, str]
    filename: str | None
    size: int
    path: Path


async def read_upload(request: Request, tmp_path: Path, batch_limit: int) -> Upload:
    """Parse the request body as it arrives, writing the ``file`` part to ``tmp_path``.

    Memory use is one network chunk, whatever the file size. Once a ``purpose=batch`` file passes
    ``batch_limit`` bytes the rest is counted but not written, so the caller can answer 413.
    """
    content_type, params = parse_options_header(request.headers.get("content-type", ""))
    boundary = params.get(b"boundary")
    if content_type != b"multipart/form-data" or not boundary:
        raise APIError(400, "Expected a multipart/form-data body with a boundary.", param="file")

    upload = Upload(fields={}, filename=None, size=0, path=tmp_path)
    part: dict[str, Any] = {}
    header: dict[str, bytes] = {"field": b"", "value": b""}
    # A local file written in network-sized chunks: cheaper inline than a thread hop per chunk.
    sink = open(tmp_path, "wb")  # noqa: ASYNC230, SIM115 - closed in the finally below

    def on_part_begin() -> None:
        part.clear()
        part.update(headers={}, name=None, filename=None, data=bytearray(), is_file=False)

    def on_header_field(data: bytes, start: int, end: int) -> None:
        header["field"] += data[start:end]

    def on_header_value(data: bytes, start: int, end: int) -> None:
        header["value"] += data[start:end]

    def on_header_end() -> None:
        part["headers"][header["field"].lower()] = header["value"]
        header["field"], header["value"] = b"", b""

    def on_headers_finished() -> None:
        _, options = parse_options_header(part["headers"].get(b"content-disposition", b""))
        part["name"] = options.get(b"name", b"").decode()
        filename = options.get(b"filename")
        part["is_file"] = filename is not None
        if filename is not None:
            upload.filename = filename.decode(errors="replace")

    def on_part_data(data: bytes, start: int, end: int) -> None:
        if part["is_file"]:
            upload.size += end - start
            if upload.size <= batch_limit or upload.fields.get("purpose") != "batch":
                sink.write(data[start:end])
        else:
            part["data"] += data[start:end]
            if len(part["data"]) > MAX_FIELD_BYTES:
                raise APIError(400, f"Form field {part['name']!r} is too long.", param=part["name"])

    def on_part_end() -> None:
        if not part["is_file"]:
            upload.fields[part["name"]] = part["data"].decode(errors="replace")

    callbacks: Any = {
        "on_part_begin": on_part_begin,
        "on_part_data": on_part_data,
        "on_part_end": on_part_end,
        "on_header_field": on_header_field,
        "on_header_value": on_header_value,
        "on_header_end": on_header_end,
        "on_headers_finished": on_headers_finished,
    }
    parser = MultipartParser(boundary, callbacks)
    try:
        async for chunk in request.stream():
            parser.write(chunk)
        parser.finalize()
    except APIError:
        raise
    except Exception as exc:
        raise APIError(400, f"Could not parse the multipart body: {exc}", param="file") from exc
    finally:
        sink.close()
    return upload
