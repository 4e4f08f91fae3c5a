"""Where landed results are, and how to open them: local paths, fsspec URLs, and Airflow connection URLs.

Plain URLs (``s3://bucket/key``, ``gs://...``, ``file:///...``) are opened with fsspec. A URL naming an
Airflow connection (``s3://aws_conn@bucket/key``, as the operator writes them) needs Airflow's
``ObjectStoragePath`` to find its credentials, so Airflow is imported for those only: reading local or
plain-URL results works without Airflow.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, BinaryIO

import orjson

OUTPUT = "output.jsonl"
ERRORS = "errors.jsonl"
MANIFEST = "_manifest.json"
# Remote reads in 5 MiB blocks: few round trips, small buffers (the fsspec default for S3 is 50 MiB).
BLOCK_SIZE = 5 * 2**20


@dataclass
class ResultFiles:
    """The files of one result, resolved from what the user passed.

    :param output: the output file, or None when there is none.
    :param errors: the error file, or None when there is none.
    :param custom_id_prefix: the prefix the operator generated ids with (from the BatchResult or manifest).
    """

    output: Any
    errors: Any
    custom_id_prefix: str | None = None


def is_storage_path(location: Any) -> bool:
    # ObjectStoragePath and universal_pathlib paths carry their filesystem; pathlib.Path does not.
    return hasattr(location, "fs") and hasattr(location, "protocol")


def display(location: Any) -> str:
    return os.fspath(location) if isinstance(location, os.PathLike) else str(location)


def _needs_airflow(url: str) -> bool:
    scheme, _, rest = url.partition("://")
    return scheme != "file" and "@" in rest.split("/", 1)[0]


def _object_storage_path(url: str) -> Any:
    try:
        from airflow.sdk import ObjectStoragePath
    except ImportError as err:  # pragma: no cover - only without Airflow
        raise ImportError(
            f"Expected Airflow to be importable to open {url!r} (a URL naming a connection) but it is not; "
            "pass a plain fsspec URL or a local path instead"
        ) from err
    return ObjectStoragePath(url)


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


def open_binary(location: Any) -> BinaryIO:
    """Open a file for streaming binary reads.

    :param location: a local path, an fsspec URL, an Airflow connection URL or an ObjectStoragePath.
    :raises FileNotFoundError: naming the location when it does not exist.
    """
    local = local_path(location)
    if local is not None:
        try:
            return open(local, "rb")  # noqa: SIM115 - the caller closes it
        except FileNotFoundError:
            raise FileNotFoundError(
                f"Expected a results file at {display(location)} but found none"
            ) from None
    if is_storage_path(location):
        path = location
    elif _needs_airflow(display(location)):
        path = _object_storage_path(display(location))
    else:
        import fsspec

        fs, path_in_fs = fsspec.core.url_to_fs(display(location))
        if not fs.exists(path_in_fs):
            raise FileNotFoundError(f"Expected a results file at {display(location)} but found none")
        remote: BinaryIO = fs.open(path_in_fs, "rb", block_size=BLOCK_SIZE)
        return remote
    if not path.exists():
        raise FileNotFoundError(f"Expected a results file at {display(location)} but found none")
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


def child(folder: Any, name: str) -> Any:
    if is_storage_path(folder):
        return folder / name
    text = display(folder)
    if "://" in text:
        return text.rstrip("/") + "/" + name
    return os.path.join(text, name)


def resolve(source: Any) -> ResultFiles:
    """The output and error files of ``source``: a BatchResult dict, a results folder or an output file.

    A path ending in ``.jsonl`` is one output file, read alone. Anything else is a results folder, which must
    hold ``_manifest.json`` (the operator writes it last, so its absence means the landing is incomplete).
    """
    if isinstance(source, Mapping):
        if "output_path" not in source:
            raise ValueError(
                "Expected a BatchResult dict with an `output_path` key (as the operator returns) but received "
                f"one with keys {sorted(source)[:10]}"
            )
        return ResultFiles(
            source.get("output_path"), source.get("error_path"), source.get("custom_id_prefix")
        )
    if not isinstance(source, (str, os.PathLike)) and not is_storage_path(source):
        raise TypeError(
            "Expected a BatchResult dict, a results folder or an output file path as `source` but received "
            f"{type(source).__name__}"
        )
    if display(source).rstrip("/").endswith(".jsonl"):
        return ResultFiles(source, None)
    manifest_path = child(source, MANIFEST)
    if not exists(manifest_path):
        raise FileNotFoundError(
            f"Expected a complete results folder at {display(source)} (with {MANIFEST}, written last) but found no "
            f"manifest: the results may still be landing. Pass the path of {OUTPUT} to read it anyway."
        )
    with open_binary(manifest_path) as fh:
        manifest = orjson.loads(fh.read())
    errors = child(source, ERRORS)
    # The manifest may name paths of another place (the folder was copied): the files beside it count.
    has_errors = bool(manifest.get("error_path")) if "error_path" in manifest else exists(errors)
    return ResultFiles(
        child(source, OUTPUT), errors if has_errors else None, manifest.get("custom_id_prefix")
    )
