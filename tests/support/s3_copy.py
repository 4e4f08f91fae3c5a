"""Copy a results folder from S3 (moto_server) to a local folder, so the local assertions check it unchanged."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def download_prefix(client: Any, bucket: str, prefix: str, dest: Path) -> Path:
    """Every object under ``prefix`` (temporary ones too, so a leftover is caught), copied into ``dest``.

    :param client: a boto3 S3 client.
    :param bucket: the bucket.
    :param prefix: the folder's key prefix, without a trailing slash.
    :param dest: a local folder, created if missing.
    :return: ``dest``.
    """
    dest.mkdir(parents=True, exist_ok=True)
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix.rstrip("/") + "/")
    for page in pages:
        for item in page.get("Contents", []):
            relative = item["Key"][len(prefix.rstrip("/")) + 1 :]
            assert "/" not in relative, f"Expected a flat results folder but found {item['Key']}"
            body = client.get_object(Bucket=bucket, Key=item["Key"])["Body"].read()
            (dest / relative).write_bytes(body)
    return dest
