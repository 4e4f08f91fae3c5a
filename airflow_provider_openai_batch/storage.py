"""Reading inputs from, and landing results on, any storage Airflow can open (local paths and ObjectStoragePath URLs).

A result file is never written in place: it is streamed to a hidden temporary name beside its destination and
moved into place only when complete, so a crash midway leaves no file that looks finished. ``_manifest.json``
is written last; its presence marks a complete results folder.
"""

from __future__ import annotations

import json
import shutil
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any, BinaryIO

from airflow.sdk import ObjectStoragePath

# 5 MiB parts keep an S3 multipart upload's buffer small (the fsspec default buffers 50 MiB per open file).
BLOCK_SIZE = 5 * 2**20
COPY_CHUNK = 2**20
MANIFEST = "_manifest.json"


def to_path(url_or_path: str | Path | ObjectStoragePath) -> ObjectStoragePath:
    """An ObjectStoragePath for a URL (``s3://conn@bucket/key``) or a plain local path."""
    if isinstance(url_or_path, ObjectStoragePath):
        return url_or_path
    text = str(url_or_path)
    if "://" not in text:
        text = "file://" + str(Path(text).resolve())
    return ObjectStoragePath(text)


def open_input(url_or_path: str | Path) -> BinaryIO:
    """Open an input for streaming reads; raises FileNotFoundError naming the path."""
    path = to_path(url_or_path)
    if not path.exists():
        raise FileNotFoundError(f"Input file not found: {url_or_path}")
    if path.protocol == "file":
        return open(path.path, "rb")  # noqa: SIM115 - the caller closes it
    return path.open("rb", block_size=BLOCK_SIZE)


def _open_write(path: ObjectStoragePath) -> BinaryIO:
    if path.protocol == "file":
        Path(path.path).parent.mkdir(parents=True, exist_ok=True)
        return open(path.path, "wb")  # noqa: SIM115
    return path.open("wb", block_size=BLOCK_SIZE)


def _move(src: ObjectStoragePath, dst: ObjectStoragePath) -> None:
    if src.protocol == "file":
        Path(src.path).replace(dst.path)
    else:
        src.fs.mv(src.path, dst.path)


def _remove(path: ObjectStoragePath) -> None:
    try:
        if path.exists():
            path.unlink()
    except Exception:  # best effort: the temporary name is hidden and never mistaken for a result
        pass


def write_concatenated(sources: Iterable[str | Path], destination: ObjectStoragePath) -> None:
    """Stream the local files ``sources`` one after another into ``destination``, atomically."""
    temp = destination.parent / f".{destination.name}.partial-{uuid.uuid4().hex[:12]}"
    try:
        with _open_write(temp) as out:
            for source in sources:
                with open(source, "rb") as src:
                    shutil.copyfileobj(src, out, COPY_CHUNK)
        _move(temp, destination)
    except BaseException:
        _remove(temp)
        raise


def write_json(data: Any, destination: ObjectStoragePath) -> None:
    temp = destination.parent / f".{destination.name}.partial-{uuid.uuid4().hex[:12]}"
    try:
        with _open_write(temp) as out:
            out.write(json.dumps(data, indent=2, sort_keys=True).encode())
        _move(temp, destination)
    except BaseException:
        _remove(temp)
        raise


def remove_if_exists(path: ObjectStoragePath) -> None:
    _remove(path)
