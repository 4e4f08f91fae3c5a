"""Reading inputs from, and landing results on, any storage Airflow can open (local paths and ObjectStoragePath URLs).

A small file (the manifest) is never written in place: it is written to a hidden temporary name beside its destination and
moved into place only when complete, so a crash midway leaves no file that looks finished (what a complete
results folder holds is :mod:`airflow_provider_openai_batch.files`'s contract). Every error names the URL it
was about.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO

from airflow.sdk import BaseHook, ObjectStoragePath

from airflow_provider_openai_batch.exceptions import (
    OpenAIBatchOutputOfAnotherTask,
    OpenAIBatchStorageConnectionNotFound,
    OpenAIBatchStorageError,
)
from airflow_provider_openai_batch.files import BLOCK_SIZE, MANIFEST, open_binary
from airflow_provider_openai_batch.version_compat import AirflowNotFoundException

#: What names a results folder's writer: the same task (any run of it) may rewrite its folder.
_WRITER_KEYS = ("dag_id", "task_id", "map_index")

log = logging.getLogger(__name__)


def to_path(url_or_path: str | Path | ObjectStoragePath) -> ObjectStoragePath:
    """An ObjectStoragePath for a URL (``s3://conn@bucket/key``) or a plain local path.

    :raises OpenAIBatchStorageConnectionNotFound: when the URL names a connection that does not exist (checked
        before the path is built, since building it already reaches for the connection's filesystem).
    """
    check_connections(url_or_path)
    if isinstance(url_or_path, ObjectStoragePath):
        return url_or_path
    text = str(url_or_path)
    if "://" not in text:
        text = "file://" + str(Path(text).resolve())
    return ObjectStoragePath(text)


def connection_of(url_or_path: Any) -> str | None:
    """The connection a storage URL names (``s3://conn_id@bucket/key``), as ObjectStoragePath reads it."""
    if isinstance(url_or_path, ObjectStoragePath):
        # Airflow 3.1 keeps it in storage_options only.
        return getattr(url_or_path, "conn_id", None) or url_or_path.storage_options.get("conn_id")
    scheme, _, rest = str(url_or_path).partition("://")
    userinfo, at, _ = rest.split("/", 1)[0].rpartition("@")
    return userinfo if rest and at and scheme != "file" else None


def bucket_and_key(path: ObjectStoragePath) -> tuple[str, str]:
    """The S3 bucket and key of an object path (Airflow 3.1 leaves ``conn_id@`` in front of its bucket)."""
    return str(path.bucket).rpartition("@")[2], str(path.key)


def check_connections(*urls: Any) -> None:
    """The connection named in each storage URL must exist: else the storage provider (the Amazon provider logs
    "Unable to find AWS Connection ID ... switching to empty") would read and write with the worker's own
    credentials. Checked before anything is read, uploaded or paid; ``None`` and local paths name none.

    :raises OpenAIBatchStorageConnectionNotFound: naming the URL and the connection id.
    """
    for url in urls:
        conn_id = connection_of(url) if url is not None else None
        if not conn_id:
            continue
        try:
            BaseHook.get_connection(conn_id)
        except AirflowNotFoundException:
            raise OpenAIBatchStorageConnectionNotFound(
                f"Expected Airflow connection {conn_id!r}, named in {url}, to exist but it does not; nothing "
                "was read, uploaded or paid. Without it the storage provider would use the worker's own "
                "credentials: create the connection, or fix the URL."
            ) from None


@contextmanager
def about(what: str, url: Any, *, keep: tuple[type[Exception], ...] = ()) -> Iterator[None]:
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
    with about("open the input", url_or_path, keep=(FileNotFoundError,)):
        return open_binary(to_path(url_or_path), what="an input file", in_order=True)


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
    with about("write results to", folder):
        probe = to_path(folder) / f".openai-batch-probe-{uuid.uuid4().hex[:12]}"
        with _open_write(probe) as out:
            out.write(b"probe\n")
        probe.unlink()


def write_json(data: Any, destination: ObjectStoragePath) -> None:
    temp = _temp_beside(destination)
    with about("write", destination):
        try:
            with _open_write(temp) as out:
                out.write(json.dumps(data, indent=2, sort_keys=True).encode())
            _move(temp, destination)
        except BaseException:
            _discard(temp)
            raise


def remove_if_exists(path: ObjectStoragePath) -> None:
    """Remove ``path`` if it is there; a failure to remove it raises (never leave a stale file behind silently)."""
    with about("remove", path):
        if path.exists():
            path.unlink()


def results_writer(identity: Any) -> dict[str, Any]:
    """The manifest's ``written_by``: the task (dag, task, map index) and the run that wrote the folder.

    :param identity: the task's identity (``dag_id``, ``task_id``, ``map_index``, ``run_id`` attributes).
    """
    return {key: getattr(identity, key) for key in (*_WRITER_KEYS, "run_id")}


def check_results_owner(
    folder: str | Path | ObjectStoragePath, writer: dict[str, Any], *, overwrite: bool
) -> None:
    """A folder whose manifest another task wrote (or a writer it does not name) is refused before paying: its
    results would be silently replaced. The same task's folder, or an empty one, passes.

    :param writer: this task, as :func:`results_writer` gives it.
    :param overwrite: ``overwrite_other_results``: replace another task's results, with a warning.
    :raises OpenAIBatchOutputOfAnotherTask: naming the folder and the task that wrote it.
    """
    with about("read the manifest in", folder):
        manifest = to_path(folder) / MANIFEST
        raw = manifest.read_bytes() if manifest.exists() else None
    if raw is None:
        return
    try:
        other = json.loads(raw).get("written_by")
    except (ValueError, AttributeError):
        other = None
    if isinstance(other, dict) and all(other.get(k) == writer[k] for k in _WRITER_KEYS):
        return
    who = (
        f"DAG {other.get('dag_id')!r}, task {other.get('task_id')!r} (map index {other.get('map_index')}, "
        f"run {other.get('run_id')!r})"
        if isinstance(other, dict)
        else "a writer it does not name"
    )
    if overwrite:
        log.warning("Replacing the results in %s written by %s (overwrite_other_results=True)", folder, who)
        return
    raise OpenAIBatchOutputOfAnotherTask(
        f"Expected output_path {folder} to be empty or to hold this task's own results but its {MANIFEST} was "
        f"written by {who}; nothing was uploaded or paid. Write to another folder, or pass "
        "overwrite_other_results=True to replace them."
    )


def landed_bytes(*paths: str | None) -> int | None:
    """The total size of the landed files (one ``stat`` each, for the landing metric); None if one cannot be read."""
    total = 0
    for path in paths:
        if not path:
            continue
        try:
            total += int(to_path(path).stat().st_size)
        except Exception:  # a metric is never worth failing a landed task
            return None
    return total
