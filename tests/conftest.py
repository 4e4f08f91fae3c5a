"""Test harness: a throwaway Airflow home, a real S3 endpoint (moto_server) and the bundled OpenAI emulator.

Airflow reads its configuration at import time, so the environment is set here, before any test module imports it.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
_HOME = Path(tempfile.mkdtemp(prefix="openai-batch-airflow-"))
DAGS_FOLDER = _HOME / "dags"
DAGS_FOLDER.mkdir()
# dag.test() only runs DAGs it can find in a bundle: the example DAGs and the test DAGs are copied into it.
for dag_file in [
    *sorted((REPO / "example_dags").glob("*.py")),
    *sorted((REPO / "tests" / "dags").glob("*.py")),
]:
    shutil.copy(dag_file, DAGS_FOLDER / dag_file.name)

os.environ.update(
    {
        "AIRFLOW_HOME": str(_HOME),
        "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS_FOLDER),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{_HOME / 'airflow.db'}",
        "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
    }
)

S3_BUCKET = "openai-batch-test"
AWS_CONN_ID = "aws_test"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def airflow_db():
    """A freshly migrated metadata DB for the session (dag.test() needs one)."""
    from airflow.utils.db import resetdb

    resetdb()
    yield _HOME


@pytest.fixture(scope="session")
def moto_s3():
    """A real S3 endpoint on loopback, and an Airflow `aws` connection pointing at it, with one bucket."""
    port = free_port()
    moto = shutil.which("moto_server", path=str(Path(sys.executable).parent)) or "moto_server"
    proc = subprocess.Popen(
        [moto, "-H", "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    endpoint = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            break
        except OSError:
            if time.monotonic() > deadline or proc.poll() is not None:
                proc.kill()
                raise RuntimeError("moto_server did not start") from None
            time.sleep(0.1)
    conn = {
        "conn_type": "aws",
        "login": "testing",
        "password": "testing",
        "extra": {"endpoint_url": endpoint, "region_name": "us-east-1"},
    }
    os.environ[f"AIRFLOW_CONN_{AWS_CONN_ID.upper()}"] = json.dumps(conn)
    import boto3

    s3 = boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        region_name="us-east-1",
    )
    s3.create_bucket(Bucket=S3_BUCKET)
    yield {"endpoint": endpoint, "bucket": S3_BUCKET, "conn_id": AWS_CONN_ID, "client": s3}
    proc.terminate()
    proc.wait(10)
