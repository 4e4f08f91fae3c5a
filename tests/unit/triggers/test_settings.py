from __future__ import annotations

import pytest

from airflow_provider_openai_batch.get_provider_info import get_provider_info
from airflow_provider_openai_batch.triggers.settings import BoardSettings


def test_defaults_are_the_ones_declared_in_the_provider_info():
    options = get_provider_info()["config"]["openai_batch"]["options"]
    defaults = BoardSettings()
    for name in (
        "coalesce",
        "list_page_size",
        "max_list_pages",
        "summary_log_interval",
        "progress_log_interval",
    ):
        declared = options[name]
        value = getattr(defaults, name)
        parse = {"boolean": lambda s: s == "True", "integer": int, "float": float}[declared["type"]]
        assert parse(declared["default"]) == value, name


def test_settings_come_from_the_airflow_configuration(monkeypatch):
    monkeypatch.setenv("AIRFLOW__OPENAI_BATCH__COALESCE", "False")
    monkeypatch.setenv("AIRFLOW__OPENAI_BATCH__LIST_PAGE_SIZE", "20")
    monkeypatch.setenv("AIRFLOW__OPENAI_BATCH__MAX_LIST_PAGES", "7")
    monkeypatch.setenv("AIRFLOW__OPENAI_BATCH__SUMMARY_LOG_INTERVAL", "12.5")
    assert BoardSettings.from_conf() == BoardSettings(
        coalesce=False, list_page_size=20, max_list_pages=7, summary_log_interval=12.5
    )


def test_unset_options_fall_back_to_the_defaults():
    assert BoardSettings.from_conf() == BoardSettings()


@pytest.mark.parametrize("name, value", [("LIST_PAGE_SIZE", "101"), ("MAX_LIST_PAGES", "0")])
def test_out_of_range_values_are_rejected_with_the_option_named(monkeypatch, name, value):
    monkeypatch.setenv(f"AIRFLOW__OPENAI_BATCH__{name}", value)
    with pytest.raises(ValueError, match=f"Expected \\[openai_batch\\] {name.lower()}"):
        BoardSettings.from_conf()
