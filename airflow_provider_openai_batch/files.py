"""The landed-folder contract, and the one way the provider opens a file to read it. No Airflow import at module level.

A results folder holds ``output.jsonl``, ``errors.jsonl`` (only when there are error lines) and
``_manifest.json``, written last: its presence means the folder is complete. Landing writes these names, the
reader reads them, and every read (an input, a landed file, a price table) goes through :func:`open_binary`.
Local paths and plain fsspec URLs (``s3://bucket/key``, ``file:///...``) need no Airflow; a URL naming an Airflow
connection (``s3://aws_conn@bucket/key``, as the operator writes them) needs Airflow's ``ObjectStoragePath`` to
find its credentials, so Airflow is imported for those only. Remote files are read and written in 5 MiB blocks.
"""

from __future__ import annotations

import os
from typing import Any, BinaryIO

import orjson

OUTPUT = "output.jsonl"
ERRORS = "errors.jsonl"
#: Written last: a folder without it is still landing (or its landing failed).
MANIFEST = "_manifest.json"
#: Few round trips and small buffers (fsspec's S3 default buffers 50 MiB per open file, and S3 multipart
#: parts need at least 5 MiB).
BLOCK_SIZE = 5 * 2**20


def is_storage_path(location: Any) -> bool:
    # ObjectStoragePath and universal_pathlib paths carry their filesystem; pathlib.Path does not.
    return hasattr(location, "fs") and hasattr(location, "protocol")


def display(location: Any) -> str:
    return os.fspath(location) if isinstance(location, os.PathLike) else str(location)


def _needs_airflow(url: str) -> bool:
    scheme, _, rest = url.partition("://")
    return scheme != "file" and "@" in rest.split("/", 1)[0]


def _object_storage_path(url: str) -> Any:
    """The ObjectStoragePath of a connection URL, once its connection is known to exist (:func:`.storage.to_path`)."""
    try:
        from airflow_provider_openai_batch.storage import to_path
    except ImportError as err:  # pragma: no cover - only without Airflow
        raise ImportError(
            f"Expected Airflow to be importable to open {url!r} (a URL naming a connection) but it is not; "
            "pass a plain fsspec URL or a local path instead"
        ) from err
    return to_path(url)


def local_path(location: Any) -> str | None:
    """The local path of ``location``, or None when it is remote."""
    if is_storage_path(location):
        return location.path if location.protocol in ("file", "local", "") else None
    text = display(location)
    if "://" not in text:
        return text
    if text.startswith("file://"):
        return text[len("file://") :]
    return None


def open_binary(location: Any, *, what: str = "a results file") -> BinaryIO:
    """Open a file for streaming binary reads.

    :param location: a local path, an fsspec URL, an Airflow connection URL or an ObjectStoragePath.
    :param what: what the file is, for the error when it is missing.
    :raises FileNotFoundError: naming the location when it does not exist.
    """
    missing = f"Expected {what} at {display(location)} but found none"
    local = local_path(location)
    if local is not None:
        try:
            return open(local, "rb")  # noqa: SIM115 - the caller closes it
        except FileNotFoundError:
            raise FileNotFoundError(missing) from None
    if is_storage_path(location):
        path = location
    elif _needs_airflow(display(location)):
        path = _object_storage_path(display(location))
    else:
        import fsspec

        fs, path_in_fs = fsspec.core.url_to_fs(display(location))
        if not fs.exists(path_in_fs):
            raise FileNotFoundError(missing)
        remote: BinaryIO = fs.open(path_in_fs, "rb", block_size=BLOCK_SIZE)
        return remote
    if not path.exists():
        raise FileNotFoundError(missing)
    stored: BinaryIO = path.open("rb", block_size=BLOCK_SIZE)
    return stored


def exists(location: Any) -> bool:
    local = local_path(location)
    if local is not None:
        return os.path.exists(local)
    if is_storage_path(location):
        return bool(location.exists())
    if _needs_airflow(display(location)):
        return bool(_object_storage_path(display(location)).exists())
    import fsspec

    fs, path_in_fs = fsspec.core.url_to_fs(display(location))
    return bool(fs.exists(path_in_fs))


def json_line(raw: bytes, number: int, name: str) -> Any:
    """One line of a JSONL file, parsed; a line that is not JSON is a ValueError naming the line and the file."""
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as err:
        raise ValueError(f"Expected a JSON object on line {number} of {name} but received: {err}") from None


def child(folder: Any, name: str) -> Any:
    """``name`` inside ``folder``, of the same kind (storage path, URL or local path)."""
    if is_storage_path(folder):
        return folder / name
    text = display(folder)
    if "://" in text:
        return text.rstrip("/") + "/" + name
    return os.path.join(text, name)
