"""`make dist`, the README's install path until a release exists: a wheel that Airflow finds as a provider."""

from __future__ import annotations

import subprocess
import zipfile

import pytest

from tests.system.support import REPO

pytestmark = pytest.mark.system


def test_make_dist_builds_a_wheel_with_the_provider_entry_point_and_the_price_table(tmp_path):
    done = subprocess.run(
        ["make", "-s", "dist", f"DIST={tmp_path}"], cwd=REPO, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stdout + done.stderr
    (wheel,) = tmp_path.glob("airflow_provider_openai_batch-*-py3-none-any.whl")
    assert str(wheel) in done.stdout
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        (entry_points,) = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
        text = archive.read(entry_points).decode()
    assert "[apache_airflow_provider]" in text
    assert "provider_info = airflow_provider_openai_batch.get_provider_info:get_provider_info" in text
    assert "airflow_provider_openai_batch/cost/prices.json" in names
    assert "airflow_provider_openai_batch/py.typed" in names
