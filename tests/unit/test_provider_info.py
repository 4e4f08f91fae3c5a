"""The provider registers with Airflow: schema-valid provider info, and `airflow providers list` shows it."""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from importlib.metadata import entry_points
from pathlib import Path

import jsonschema

from airflow_provider_openai_batch.get_provider_info import get_provider_info


def test_provider_info_validates_against_airflows_schema():
    import airflow

    schema = json.loads((Path(airflow.__file__).parent / "provider_info.schema.json").read_text())
    jsonschema.validate(get_provider_info(), schema)


def test_every_class_named_in_provider_info_imports():
    info = get_provider_info()
    paths = [c["hook-class-name"] for c in info["connection-types"]]
    paths += info["extra-links"] + [d["class-name"] for d in info["task-decorators"]]
    for dotted in paths:
        module, _, name = dotted.rpartition(".")
        assert getattr(importlib.import_module(module), name)
    for section in ("hooks", "operators", "triggers"):
        for item in info[section]:
            for module in item["python-modules"]:
                importlib.import_module(module)


def test_connection_type_does_not_collide_with_the_openai_provider():
    assert [c["connection-type"] for c in get_provider_info()["connection-types"]] == ["openai_batch"]


def test_entry_point_is_installed():
    names = {ep.value for ep in entry_points(group="apache_airflow_provider")}
    assert "airflow_provider_openai_batch.get_provider_info:get_provider_info" in names


def test_airflow_providers_list_shows_the_provider(tmp_path):
    env = {**os.environ, "AIRFLOW_HOME": str(tmp_path)}
    airflow = Path(sys.executable).with_name("airflow")
    out = subprocess.run(
        [str(airflow), "providers", "list", "--output", "json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    providers = {p["package_name"]: p for p in json.loads(out.stdout[out.stdout.index("[") :])}
    assert "airflow-provider-openai-batch" in providers
    assert providers["airflow-provider-openai-batch"]["version"] == "0.1.0"
