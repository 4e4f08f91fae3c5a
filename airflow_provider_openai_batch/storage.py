"""Reading inputs from, and landing results on, any storage Airflow can open (local paths and ObjectStoragePath URLs).

A result file is never written in place: it is streamed to a hidden temporary name beside its destination and
moved into place only when complete, so a crash midway leaves no file that looks finished (what a complete
results folder holds is :mod:`airflow_provider_openai_batch.files`'s contract). Every error names the URL it
was about.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO

from airflow.sdk import ObjectStoragePath

from airflow_provider_openai_batch.exceptions import OpenAIBatchStorageError
from airflow_provider_openai_batch.files import BLOCK_SIZE, open_binary

COPY_CHUNK = 2**20


def to_path(url_or_path: str | Path | ObjectStoragePath) -> ObjectStoragePath:
    """An ObjectStoragePath for a URL (``s3://conn@bucket/key``) or a plain local path."""
    if isinstance(url_or_path, ObjectStoragePath):
        return url_or_path
    text = str(url_or_path)
    if "://" not in text:
        text = "file://" + str(Path(text).resolve())
    return ObjectStoragePath(text)


@contextmanager
def _about(what: str, url: Any, *, keep: tuple[type[Exception], ...] = ()) -> Iterator[None]:
    """Re-raise a storage failure as one that names the URL (the underlying error stays as the cause).

    :param keep: exceptions that pass unchanged (they already name the URL).
    """
    try:
        yield
    except OpenAIBatchStorageError:
        raise
    except Exception as err:
        if isinstance(err, keep):
            raise
        raise OpenAIBatchStorageError(f"Could not {what} {url}: {type(err).__name__}: {err}") from err


def open_input(url_or_path: str | Path) -> BinaryIO:
    """Open an input for streaming reads; raises FileNotFoundError naming the path."""
    with _about("open the input", url_or_path, keep=(FileNotFoundError,)):
        return open_binary(to_path(url_or_path), what="an input file")


def _open_write(path: ObjectStoragePath) -> BinaryIO:
    if path.protocol == "file":
        Path(path.path).parent.mkdir(parents=True, exist_ok=True)
        return open(path.path, "wb")  # noqa: SIM115
    remote: BinaryIO = path.open("wb", block_size=BLOCK_SIZE)
    return remote


def _move(src: ObjectStoragePath, dst: ObjectStoragePath) -> None:
    if src.protocol == "file":
        Path(src.path).replace(dst.path)
    else:
        src.fs.mv(src.path, dst.path)


def _discard(path: ObjectStoragePath) -> None:
    try:
        if path.exists():
            path.unlink()
    except Exception:  # best effort: the temporary name is hidden and never mistaken for a result
        pass


def _temp_beside(destination: ObjectStoragePath) -> ObjectStoragePath:
    return destination.parent / f".{destination.name}.partial-{uuid.uuid4().hex[:12]}"


def check_writable(folder: str | Path | ObjectStoragePath) -> None:
    """Prove results can land in ``folder`` (write and remove a small probe) before anything is paid for."""
    with _about("write results to", folder):
        probe = to_path(folder) / f".openai-batch-probe-{uuid.uuid4().hex[:12]}"
        with _open_write(probe) as out:
            out.write(b"probe\n")
        probe.unlink()


def write_concatenated(sources: Iterable[str | Path], destination: ObjectStoragePath) -> int:
    """Stream the local JSONL files ``sources`` one after another into ``destination``, atomically.

    Parts are joined on line boundaries: a part whose last line lacks its newline gets one, so two records are
    never glued together. Returns the number of lines written.
    """
    temp = _temp_beside(destination)
    lines = 0
    with _about("write", destination):
        try:
            with _open_write(temp) as out:
                for source in sources:
                    lines += _copy_lines(source, out)
            _move(temp, destination)
        except BaseException:
            _discard(temp)
            raise
    return lines


def _copy_lines(source: str | Path, out: BinaryIO) -> int:
    lines, last = 0, b"\n"
    with open(source, "rb") as src:
        while chunk := src.read(COPY_CHUNK):
            out.write(chunk)
            lines += chunk.count(b"\n")
            last = chunk[-1:]
    if last != b"\n":
        out.write(b"\n")
        lines += 1
    return lines


def write_json(data: Any, destination: ObjectStoragePath) -> None:
    temp = _temp_beside(destination)
    with _about("write", destination):
        try:
            with _open_write(temp) as out:
                out.write(json.dumps(data, indent=2, sort_keys=True).encode())
            _move(temp, destination)
        except BaseException:
            _discard(temp)
            raise


def remove_if_exists(path: ObjectStoragePath) -> None:
    """Remove ``path`` if it is there; a failure to remove it raises (never leave a stale file behind silently)."""
    with _about("remove", path):
        if path.exists():
            path.unlink()
