"""S3 as over a real network, for the benchmarks: a moto_server behind ``bench/latency_proxy.py``.

The proxy makes each request cost one round trip of ``delay`` seconds; ``direct`` reaches moto without it (to
set up and check, untimed), and ``connection`` is the Airflow ``aws`` connection that goes through the proxy.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class S3:
    direct: Any  # a boto3 client straight to moto
    proxy_url: str
    procs: list[subprocess.Popen[Any]] = field(default_factory=list)

    @property
    def pids(self) -> dict[str, int]:
        return {"moto": self.procs[0].pid, "proxy": self.procs[1].pid}

    def connection(self) -> str:
        """The Airflow ``aws`` connection (JSON) through the proxy."""
        return json.dumps(
            {
                "conn_type": "aws",
                "login": "testing",
                "password": "testing",
                "extra": {"endpoint_url": self.proxy_url, "region_name": "us-east-1"},
            }
        )

    def client(self) -> Any:
        """A boto3 client through the proxy."""
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.proxy_url,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
            region_name="us-east-1",
        )

    def close(self) -> None:
        for proc in self.procs:
            proc.kill()
            proc.wait()


def start_s3(bucket: str, delay: float) -> S3:
    """Start moto_server and the proxy in front of it, with ``bucket`` made."""
    import boto3

    moto = shutil.which("moto_server", path=str(Path(sys.executable).parent)) or "moto_server"
    port = 47000 + os.getpid() % 1000
    procs: list[subprocess.Popen[Any]] = [
        subprocess.Popen(
            [moto, "-H", "127.0.0.1", "-p", str(port)], stderr=subprocess.DEVNULL, stdout=subprocess.DEVNULL
        )
    ]
    try:
        time.sleep(3)
        proxy = subprocess.Popen(
            [
                sys.executable,
                str(ROOT / "bench" / "latency_proxy.py"),
                "--target",
                f"127.0.0.1:{port}",
                "--delay",
                str(delay),
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        procs.append(proxy)
        line = proxy.stdout.readline().strip()  # type: ignore[union-attr]
        assert line.startswith("PROXY_URL="), line
        direct = boto3.client(
            "s3",
            endpoint_url=f"http://127.0.0.1:{port}",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
            region_name="us-east-1",
        )
        direct.create_bucket(Bucket=bucket)
    except BaseException:
        for proc in procs:
            proc.kill()
        raise
    return S3(direct, line.partition("=")[2], procs)
