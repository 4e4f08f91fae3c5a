"""The emulator's runtime settings, defined once in :class:`Settings`.

The command-line flags (name, type, default, help), the ``/_emulator/config`` route and the test helpers'
``settings=`` all derive from the model's fields, so a new setting is one new field and nothing else.
"""

from __future__ import annotations

import argparse
import json
import re
import types
import typing
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

DEFAULT_MAX_FILE_BYTES = 200 * 1024 * 1024


class SettingsError(ValueError):
    """A setting name or value the model rejects; the message names the field and the value received."""


class Settings(BaseModel):
    """Knobs that shape timing and failures. Immutable: a change makes a new object, so a running batch
    keeps the settings it was created with."""

    # strict: a JSON ``true`` is not the number 1, and ``"5"`` is not an integer.
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    time_scale: float = Field(
        1.0, ge=0, description="multiplies the 24h completion window: 0.001 makes it 86.4 s"
    )
    rate: float = Field(
        2000.0, ge=0, description="requests processed per second per batch; 0 = as fast as possible"
    )
    validating_seconds: float = Field(
        0.2, ge=0, description="time in `validating` before the file is checked"
    )
    finalizing_seconds: float = Field(0.2, ge=0, description="time in `finalizing`")
    cancelling_seconds: float = Field(0.2, ge=0, description="time in `cancelling` after the work stopped")
    fail_custom_id_regex: str | None = Field(
        None, description="requests whose custom_id matches (re.search) fail with fail_status"
    )
    fail_status: int = Field(500, ge=400, le=599, description="HTTP status of those failures")
    embedding_dim: int = Field(
        8, ge=1, description="length of fake embedding vectors (a request's `dimensions` wins)"
    )
    max_file_bytes: int = Field(
        DEFAULT_MAX_FILE_BYTES, ge=1, description="size limit of purpose=batch uploads (413 above it)"
    )
    max_requests: int = Field(50_000, ge=1, description="requests allowed per input file")
    final_newline: bool = Field(
        True, description="end output and error files with a newline (false: the last line has none)"
    )
    # Answer faults (emulator/structured.py): the request completes, its answer is unusable.
    invalid_json_custom_id_regex: str | None = Field(
        None, description="requests whose custom_id matches get a structured answer that is not JSON"
    )
    schema_mismatch_custom_id_regex: str | None = Field(
        None,
        description="requests whose custom_id matches get JSON without the schema's first required field",
    )
    truncated_custom_id_regex: str | None = Field(
        None, description="requests whose custom_id matches get half an answer, cut at the token limit"
    )
    refusal_custom_id_regex: str | None = Field(
        None, description="requests whose custom_id matches get a refusal instead of an answer"
    )
    enqueued_token_limits: dict[str, int] | None = Field(
        None,
        description="the organisation's batch queue: JSON map model -> prompt tokens of its batches that may be "
        'validating, in progress or finalizing at once ("*": any other model); a batch over it fails with '
        "token_limit_exceeded; none: no limit",
    )

    @field_validator(
        "fail_custom_id_regex",
        "invalid_json_custom_id_regex",
        "schema_mismatch_custom_id_regex",
        "truncated_custom_id_regex",
        "refusal_custom_id_regex",
    )
    @classmethod
    def _compiles(cls, value: str | None) -> str | None:
        if not value:
            return None  # "" clears the regex, which is how a flag or a form says "none"
        try:
            re.compile(value)
        except re.error as exc:
            raise ValueError(f"Expected a valid regex but received {value!r}: {exc}") from exc
        return value

    @field_validator("enqueued_token_limits")
    @classmethod
    def _positive_limits(cls, value: dict[str, int] | None) -> dict[str, int] | None:
        if not value:
            return None  # {} and null both say "no limit"
        bad = {model: tokens for model, tokens in value.items() if tokens < 1}
        if bad:
            raise ValueError(f"Expected a positive token limit per model but received {bad!r}")
        return value

    def token_limit(self, model: str | None) -> int | None:
        """The enqueued-token limit of ``model``'s batch queue, or None when it has none."""
        limits = self.enqueued_token_limits or {}
        return limits.get(model or "", limits.get("*"))

    def changed(self, changes: Mapping[str, Any]) -> Settings:
        """A copy with ``changes`` applied, validated as a whole (nothing changes when one is wrong).

        :param changes: setting names (the field names) and their new values.
        :raises SettingsError: on an unknown name or a value the field does not accept.
        """
        return parse_settings({**self.model_dump(), **changes})


def parse_settings(values: Mapping[str, Any]) -> Settings:
    """Validate ``values`` into :class:`Settings`; unset names keep their defaults.

    :param values: setting names and values, as JSON or the command line gives them.
    :raises SettingsError: naming each wrong field and the value received.
    """
    try:
        return Settings.model_validate(dict(values))
    except ValidationError as exc:
        raise SettingsError("; ".join(_describe(error) for error in exc.errors())) from None


def _describe(error: Any) -> str:
    name = ".".join(str(part) for part in error["loc"])
    if error["type"] == "extra_forbidden":
        return f"Unknown setting {name!r}; expected one of {sorted(Settings.model_fields)}"
    if error["type"] == "value_error":
        return f"`{name}`: {error['ctx']['error']}"
    expected = error["msg"].removeprefix("Input should be ")
    return f"Expected `{name}` to be {expected} but received {error['input']!r}"


def flag_name(name: str) -> str:
    """The command-line flag of a setting: ``time_scale`` is ``--time-scale``."""
    return "--" + name.replace("_", "-")


def _flag_type(name: str) -> Any:
    annotation = Settings.model_fields[name].annotation
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        annotation = next(arg for arg in typing.get_args(annotation) if arg is not type(None))
    if typing.get_origin(annotation) is dict:
        return _json_flag  # a map is given as one JSON object
    if annotation not in (bool, int, float, str) or not isinstance(annotation, type):
        raise TypeError(
            f"Expected setting {name!r} to be bool, int, float, str or a dict but it is {annotation!r}"
        )
    return annotation


def _json_flag(text: str) -> Any:
    try:
        return json.loads(text) if text else None
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"Expected a JSON object but received {text!r}") from exc


def add_setting_flags(parser: argparse.ArgumentParser) -> None:
    """Add one flag per setting to ``parser``, with the field's type, default and description.

    :param parser: the emulator's argument parser.
    """
    group = parser.add_argument_group("settings (also changeable at runtime through POST /_emulator/config)")
    for name, field in Settings.model_fields.items():
        kind = _flag_type(name)
        shown = "none" if field.default is None else field.default
        help_text = f"{field.description} (default: {shown})".replace("%", "%%")
        # default=SUPPRESS: an unset flag stays absent, so the model, not argparse, supplies every default.
        options: dict[str, Any] = {"dest": name, "default": argparse.SUPPRESS, "help": help_text}
        if kind is bool:
            options["action"] = argparse.BooleanOptionalAction
        elif kind is _json_flag:
            options.update(type=kind, metavar="JSON")
        else:
            options.update(type=kind, metavar=kind.__name__.upper())
        group.add_argument(flag_name(name), **options)


def settings_from_args(args: argparse.Namespace) -> Settings:
    """The settings given by the flags that :func:`add_setting_flags` added.

    :param args: the parsed command line.
    :raises SettingsError: when a flag's value is out of range or invalid.
    """
    return parse_settings(
        {name: getattr(args, name) for name in Settings.model_fields if hasattr(args, name)}
    )


def settings_as_flags(values: Mapping[str, Any]) -> list[str]:
    """The command-line flags that start an emulator with ``values`` (validated first).

    :param values: setting names and values, e.g. ``{"rate": 500, "fail_custom_id_regex": None}``.
    :raises SettingsError: on an unknown name or a bad value, before any process starts.
    """
    checked = parse_settings(values)
    flags: list[str] = []
    for name in values:
        value = getattr(checked, name)
        if isinstance(value, bool):
            flags.append(flag_name(name) if value else "--no-" + flag_name(name)[2:])
        elif isinstance(value, dict):
            flags.append(f"{flag_name(name)}={json.dumps(value)}")
        else:
            # One token with "=": a value such as the regex "-bad$" is not taken for a flag.
            flags.append(f"{flag_name(name)}={'' if value is None else value}")
    return flags
