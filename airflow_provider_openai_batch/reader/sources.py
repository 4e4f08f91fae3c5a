"""Where the results of a source are: a BatchResult dict, a landed results folder, or one output file.

A folder counts only with its manifest (landing writes it last); the files are opened through
:mod:`airflow_provider_openai_batch.files`, the one opener, which imports Airflow only for URLs that name an
Airflow connection.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from airflow_provider_openai_batch.files import (
    MANIFEST,
    OUTPUT,
    child,
    display,
    exists,
    is_storage_path,
    open_binary,
)


@dataclass
class ResultFiles:
    """The files of one result, resolved from what the user passed.

    :param output: the output files (none, one, or the numbered ones of object storage).
    :param errors: the error files (none when there were no error lines).
    :param custom_id_prefix: the prefix the operator generated ids with (from the BatchResult or manifest).
    """

    output: list[Any]
    errors: list[Any]
    custom_id_prefix: str | None = None


def resolve(source: Any) -> ResultFiles:
    """The output and error files of ``source``: a BatchResult dict, a results folder or an output file.

    A path ending in ``.jsonl`` is one output file, read alone. Anything else is a results folder, which must
    hold ``_manifest.json`` (the operator writes it last, so its absence means the landing is incomplete).
    """
    if isinstance(source, Mapping):
        if "output_paths" not in source:
            raise ValueError(
                "Expected a BatchResult dict with an `output_paths` key (as the operator returns) but received "
                f"one with keys {sorted(source)[:10]}"
            )
        return ResultFiles(
            list(source["output_paths"]),
            list(source.get("error_paths") or ()),
            source.get("custom_id_prefix"),
        )
    if not isinstance(source, (str, os.PathLike)) and not is_storage_path(source):
        raise TypeError(
            "Expected a BatchResult dict, a results folder or an output file path as `source` but received "
            f"{type(source).__name__}"
        )
    if display(source).rstrip("/").endswith(".jsonl"):
        return ResultFiles([source], [])
    manifest_path = child(source, MANIFEST)
    if not exists(manifest_path):
        raise FileNotFoundError(
            f"Expected a complete results folder at {display(source)} (with {MANIFEST}, written last) but found no "
            f"manifest: the results may still be landing. Pass the path of {OUTPUT} to read it anyway."
        )
    with open_binary(manifest_path) as fh:
        manifest = orjson.loads(fh.read())
    if not isinstance(manifest, Mapping) or not isinstance(manifest.get("output_paths"), list):
        raise ValueError(
            f"Expected {display(manifest_path)} to list the landed files in `output_paths` (as the operator "
            "writes it) but it does not; pass the path of an output file to read it alone"
        )
    # The manifest may name paths of another place (the folder was copied): the files of those names beside
    # it count.
    return ResultFiles(
        [child(source, _name(path)) for path in manifest["output_paths"]],
        [child(source, _name(path)) for path in manifest.get("error_paths") or ()],
        manifest.get("custom_id_prefix"),
    )


def _name(path: str) -> str:
    return display(path).rstrip("/").rpartition("/")[2]
