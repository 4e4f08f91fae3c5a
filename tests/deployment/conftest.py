"""One deployment for the whole ``tests/deployment`` session (``make test-deploy``): its scenarios use dates of
their own and leave every process running as they found it, so they share it rather than pay its start-up
(a minute or more on a loaded 2-core machine) each. ``make test`` does not collect this folder
(``norecursedirs`` in pyproject.toml).
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.deployment.cluster import STARTUP_TIMEOUT, Cluster, airflow_env
from tests.deployment.services import Postgres, Redis
from tests.system.support import free_port

DAG_FILE = Path(__file__).parent / "dags" / "openai_batch_deploy.py"
DAG_ID = "openai_batch_deploy"


@pytest.fixture(scope="session")
def cluster(request: pytest.FixtureRequest, moto_s3, openai_emulator_server) -> Iterator[Cluster]:
    # Outside pytest's own temporary tree, which keeps only the last three sessions of anyone on the machine:
    # removed when every test passed, kept (and named at the end) when one failed.
    root = Path(tempfile.mkdtemp(prefix="openai-batch-deployment-"))
    dags = root / "dags"
    dags.mkdir()
    shutil.copy(DAG_FILE, dags / DAG_FILE.name)
    (dags / DAG_FILE.name).chmod(0o444)
    dags.chmod(0o555)
    postgres, redis = Postgres(), Redis(root / "redis")
    aws_conn = {
        "conn_type": "aws",
        "login": "testing",
        "password": "testing",
        "extra": {"endpoint_url": moto_s3["endpoint"], "region_name": "us-east-1"},
    }
    api_port = free_port()
    env = airflow_env(
        dags,
        postgres,
        redis,
        api_port,
        openai_emulator_server.base_url,
        aws_conn,
        f"s3://{moto_s3['conn_id']}@{moto_s3['bucket']}/deploy",
    )
    deployment = Cluster(root, dags, env, postgres, redis, api_port)
    try:
        postgres.init()
        postgres.start()
        redis.start()
        deployment.cli("db", "migrate")
        deployment.start_all()
        deployment.wait_until(
            f"the dag-processor to serialize {DAG_ID}",
            lambda: deployment.query("SELECT 1 FROM serialized_dag WHERE dag_id = %s", DAG_ID),
            STARTUP_TIMEOUT,
        )
        yield deployment
    finally:
        deployment.stop()
        redis.stop()
        postgres.stop()
        if postgres.log.exists():
            shutil.copy(postgres.log, root / "postgres.log")  # kept with the processes' output
        postgres.remove()
        if request.session.testsfailed:
            print(f"\nThe deployment's folders and logs are kept in {root}")
        else:
            dags.chmod(0o755)
            shutil.rmtree(root, ignore_errors=True)
