"""One definition of the settings: flags, config route, test helpers and docs all follow the model."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import pytest

from airflow_provider_openai_batch.emulator.__main__ import build_parser
from airflow_provider_openai_batch.emulator.settings import (
    Settings,
    SettingsError,
    flag_name,
    parse_settings,
    settings_as_flags,
    settings_from_args,
)
from airflow_provider_openai_batch.emulator.testing import TEST_SETTINGS, start_emulator

DOCS = Path(__file__).resolve().parents[2] / "docs" / "emulator.md"


def _other_value(name: str):
    """A valid value different from the field's default, chosen by the field's type."""
    default = Settings.model_fields[name].default
    if name == "enqueued_token_limits":
        return {"gpt-4o-mini": 2_000_000, "*": 90_000}
    if isinstance(default, bool):
        return not default
    if isinstance(default, float):
        return default + 1.5
    if isinstance(default, int):
        return default + 1
    return r"-bad$"


def _setting_flags(parser) -> dict[str, object]:
    return {
        action.option_strings[0]: action
        for action in parser._actions
        if action.dest in Settings.model_fields and action.option_strings
    }


def test_every_setting_has_its_flag_with_type_default_and_help():
    parser = build_parser()
    flags = _setting_flags(parser)
    assert sorted(flags) == sorted(flag_name(name) for name in Settings.model_fields)
    assert settings_from_args(parser.parse_args([])) == Settings()  # unset flags take the model's defaults
    help_text = " ".join(parser.format_help().split())
    for name, field in Settings.model_fields.items():
        assert " ".join(field.description.split()) in help_text, name
        value = _other_value(name)
        parsed = settings_from_args(parser.parse_args(settings_as_flags({name: value})))
        assert getattr(parsed, name) == value and type(getattr(parsed, name)) is type(value)


def test_flags_round_trip_through_the_command_line():
    values = {name: _other_value(name) for name in Settings.model_fields}
    parsed = settings_from_args(build_parser().parse_args(settings_as_flags(values)))
    assert parsed == Settings(**values)
    assert (
        settings_from_args(build_parser().parse_args(settings_as_flags({"fail_custom_id_regex": None})))
        == Settings()
    )


@pytest.mark.parametrize(
    ("values", "named"),
    [
        ({"rate": -1}, "rate"),
        ({"embedding_dim": 0}, "embedding_dim"),
        ({"embedding_dim": 2.5}, "embedding_dim"),
        ({"time_scale": True}, "time_scale"),
        ({"fail_status": 200}, "fail_status"),
        ({"fail_custom_id_regex": "("}, "fail_custom_id_regex"),
        ({"colour": "blue"}, "colour"),
        ({"enqueued_token_limits": {"gpt-4o": 0}}, "enqueued_token_limits"),
        ({"enqueued_token_limits": {"gpt-4o": "9"}}, "enqueued_token_limits"),
    ],
)
def test_bad_settings_name_the_field_and_the_value(values, named):
    with pytest.raises(SettingsError, match=re.escape(named)):
        parse_settings(values)
    with pytest.raises(SettingsError):
        settings_as_flags(values)


def test_start_emulator_rejects_an_unknown_setting_before_starting(tmp_path):
    with pytest.raises(SettingsError, match="Unknown setting 'ratee'"):
        start_emulator(tmp_path, settings={"ratee": 1})


def test_config_route_validates_with_the_model_and_changes_nothing_on_error(emulator):
    assert emulator.config() == Settings(**TEST_SETTINGS).model_dump()  # after the fixture's reset
    http = httpx.Client(base_url=emulator.root_url)
    before = emulator.config()
    response = http.post("/_emulator/config", json={"rate": 5, "embedding_dim": 0})
    assert response.status_code == 400
    assert "embedding_dim" in response.json()["error"]["message"] and emulator.config() == before
    changed = emulator.configure(**{name: _other_value(name) for name in Settings.model_fields})
    assert changed == {name: _other_value(name) for name in Settings.model_fields} == emulator.config()
    assert emulator.configure(fail_custom_id_regex=None)["fail_custom_id_regex"] is None


def test_docs_flag_table_lists_exactly_the_flags():
    text = DOCS.read_text()
    table = text[text.index("### Flags") : text.index("## What it does")]
    rows = [line for line in table.splitlines() if line.startswith("| `--")]
    documented = {flag for row in rows for flag in re.findall(r"`(--[a-z-]+)", row.split(" | ")[0])}
    parser_flags = {option for action in build_parser()._actions for option in action.option_strings}
    assert documented == parser_flags - {"-h", "--help"}
    for name, field in Settings.model_fields.items():
        row = next(row for row in rows if row.startswith(f"| `{flag_name(name)} "))
        shown = (
            {"none"} if field.default is None else {str(field.default), str(field.default).removesuffix(".0")}
        )
        assert any(f"| `{text}` |" in row or f"| {text} |" in row for text in shown), (name, row)


def test_configure_says_which_setting_it_rejected(emulator):
    with pytest.raises(
        httpx.HTTPStatusError, match=r"400.*Expected `embedding_dim` to be greater than or equal to 1"
    ):
        emulator.configure(embedding_dim=0)
