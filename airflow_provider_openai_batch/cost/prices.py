"""The price table (USD per 1M tokens, per model, and the Batch API discount) and the cost of a usage.

A dated default ships in ``prices.json``; the ``[openai_batch] price_table`` option (a JSON object, or the
path or URL of a JSON file) is merged over it model by model. Prices change and differ by contract, so
no figure here is presented as truth: every cost dict says ``estimate: true`` and carries the table's
``as_of`` date and ``source``.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from airflow_provider_openai_batch.files import open_binary

CONFIG_SECTION = "openai_batch"
CONFIG_OPTION = "price_table"
DEFAULT_TABLE = Path(__file__).with_name("prices.json")
PRICE_KEYS = ("input", "cached_input", "output")
STALE_AFTER_DAYS = 180
# A snapshot's date: "-2024-07-18" (current names) or "-0125" (gpt-3.5 / gpt-4 era names).
_DATE_SUFFIX = re.compile(r"-(\d{4}-\d{2}-\d{2}|\d{4})$")


def _check(table: Any, where: str) -> dict[str, Any]:
    """``table`` as a checked price table; errors name the field and where the table came from."""
    if not isinstance(table, Mapping) or not isinstance(table.get("models"), Mapping):
        raise ValueError(
            f"Expected a JSON object with a `models` object in {where} but received {table!r:.200}"
        )
    discount = table.get("batch_discount", 0.5)
    if isinstance(discount, bool) or not isinstance(discount, (int, float)) or not 0 <= discount <= 1:
        raise ValueError(f"Expected `batch_discount` between 0 and 1 in {where} but received {discount!r}")
    for model, entry in table["models"].items():
        if not isinstance(entry, Mapping):
            raise ValueError(f"Expected an object for `models.{model}` in {where} but received {entry!r}")
        for key, value in entry.items():
            if key in PRICE_KEYS or key == "max_output_tokens":
                if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                    raise ValueError(
                        f"Expected a number >= 0 for `models.{model}.{key}` in {where} but received {value!r}"
                    )
    return dict(table)


def _configured() -> str | None:
    try:
        from airflow_provider_openai_batch.version_compat import conf
    except ImportError:  # used without Airflow: the shipped table
        return None
    value = conf.get(CONFIG_SECTION, CONFIG_OPTION, fallback=None)
    return value.strip() if isinstance(value, str) and value.strip() else None


def _parse(override: str | Mapping[str, Any], where: str) -> Any:
    if isinstance(override, Mapping):
        return override
    if override.lstrip().startswith("{"):
        try:
            return json.loads(override)
        except json.JSONDecodeError as err:
            raise ValueError(f"Expected valid JSON in {where} but received: {err}") from None
    try:
        with open_binary(override) as fh:
            return json.loads(fh.read())
    except FileNotFoundError:
        raise FileNotFoundError(
            f"Expected {where} to be a JSON object or the path of a JSON file, but no file is at {override}"
        ) from None
    except json.JSONDecodeError as err:
        raise ValueError(f"Expected a JSON file at {override} ({where}) but received: {err}") from None


def load_prices(
    override: str | Mapping[str, Any] | None = None, *, use_config: bool = True
) -> dict[str, Any]:
    """The price table: the shipped default, with the user's table merged over it model by model.

    :param override: a table (dict), JSON text, or the path/URL of a JSON file. Its ``models`` entries
        replace the default's fields for those models (others keep the default); its ``batch_discount``
        replaces the default's. Its ``as_of`` and ``source`` label the models it gives.
    :param use_config: when ``override`` is None, read it from ``[openai_batch] price_table``.
    :return: ``{"as_of", "source", "batch_discount", "models": {name: {"input", "cached_input", "output",
        "max_output_tokens", "as_of", "source"}}}``.
    :raises ValueError: naming the field of an override that is not a valid price table.
    """
    table = _check(json.loads(DEFAULT_TABLE.read_text()), str(DEFAULT_TABLE))
    label = {"as_of": table["as_of"], "source": table["source"]}
    table["models"] = {name: {**entry, **label} for name, entry in table["models"].items()}
    where = "the price table passed in"
    if override is None and use_config:
        override, where = _configured(), f"[{CONFIG_SECTION}] {CONFIG_OPTION}"
    if override is None:
        return table
    user = _check(_parse(override, where), where)
    user_label = {"as_of": user.get("as_of"), "source": user.get("source") or f"user price table ({where})"}
    for name, entry in user["models"].items():
        merged = table["models"][name] = {**table["models"].get(name, {}), **entry, **user_label}
        missing = [key for key in ("input", "output") if key not in merged]
        if missing:
            raise ValueError(
                f"Expected `models.{name}` in {where} to give {' and '.join(missing)} but it does not"
            )
    if "batch_discount" in user:
        table["batch_discount"] = user["batch_discount"]
    table["source"] = f"{user_label['source']}, over {table['source']}"
    return table


def lookup(model: str | None, prices: Mapping[str, Any]) -> tuple[str | None, dict[str, Any] | None]:
    """The table entry for ``model`` and its name: by exact name, else its family's (the name without a
    ``-YYYY-MM-DD`` or ``-MMDD`` snapshot date). Other suffixes (``-search-preview``, ``-audio``) are other
    models with other prices: never matched to a family."""
    if not model:
        return None, None
    models = prices["models"]
    for name in (model, _DATE_SUFFIX.sub("", model)):
        if name in models:
            return name, models[name]
    return None, None


def _age_days(as_of: Any) -> int | None:
    try:
        return (dt.date.today() - dt.date.fromisoformat(str(as_of))).days
    except ValueError:
        return None


def price_age(cost: Mapping[str, Any]) -> str | None:
    """A warning when the prices behind ``cost`` are more than :data:`STALE_AFTER_DAYS` old, else None.

    For the task log, once per task (the cost lines themselves do not repeat it).
    """
    age = _age_days(cost.get("as_of"))
    if age is None or age <= STALE_AFTER_DAYS:
        return None
    return (
        f"Cost estimates use prices as of {cost.get('as_of')}, {age} days old: set [{CONFIG_SECTION}] "
        f"{CONFIG_OPTION} to current ones"
    )


def _note(as_of: Any) -> str:
    note = "an estimate from list prices, not an invoice"
    age = _age_days(as_of)
    if age is None:
        return f"{note}; the price table gives no as_of date"
    if age > STALE_AFTER_DAYS:
        note += f"; the prices are {age} days old: set [{CONFIG_SECTION}] {CONFIG_OPTION} to current ones"
    return note


def _tokens(usage: Mapping[str, Any]) -> dict[str, int]:
    """Token counts from a BatchResult's usage, or an API usage object (Responses or Chat Completions)."""

    def first(*values: Any) -> int:
        return int(next((v for v in values if v is not None), 0))

    in_details = usage.get("input_tokens_details") or usage.get("prompt_tokens_details") or {}
    out_details = usage.get("output_tokens_details") or usage.get("completion_tokens_details") or {}
    input_tokens = first(usage.get("input_tokens"), usage.get("prompt_tokens"))
    return {
        "input": input_tokens,
        "cached_input": min(input_tokens, first(usage.get("cached_tokens"), in_details.get("cached_tokens"))),
        "output": first(usage.get("output_tokens"), usage.get("completion_tokens")),
        "reasoning": first(usage.get("reasoning_tokens"), out_details.get("reasoning_tokens")),
    }


def cost_of_usage(
    model: str | None, usage: Mapping[str, Any], prices: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """The estimated cost of ``usage`` on ``model`` at Batch API prices.

    Cached input tokens are part of ``input_tokens`` and priced at ``cached_input`` (``input`` when the
    table has none); reasoning tokens are part of ``output_tokens``.

    :param model: the model the batch ran (a dated snapshot falls back to its base name).
    :param usage: a BatchResult's ``usage`` (``input_tokens``, ``output_tokens``, ``cached_tokens``,
        ``reasoning_tokens``) or an API usage object.
    :param prices: a table from :func:`load_prices` (default: ``load_prices()``).
    :return: ``total_usd`` (None, with a ``reason``, when the model has no price), ``input_usd``,
        ``cached_input_usd``, ``output_usd``, ``tokens``, ``model``, ``priced_as``, ``batch_discount``,
        ``as_of``, ``source``, ``estimate: True`` and a ``note``.
    """
    prices = load_prices() if prices is None else prices
    name, entry = lookup(model, prices)
    label = entry or prices
    cost: dict[str, Any] = {
        "estimate": True,
        "model": model,
        "priced_as": name,
        "currency": "USD",
        "as_of": label.get("as_of"),
        "source": label.get("source"),
        "batch_discount": prices.get("batch_discount", 0.5),
        "tokens": _tokens(usage),
        "note": _note(label.get("as_of")),
    }
    if entry is None:
        return {
            **cost,
            "total_usd": None,
            "reason": f"model {model!r} is not in the price table: add it with [{CONFIG_SECTION}] {CONFIG_OPTION}",
        }
    tokens, factor = cost["tokens"], (1 - cost["batch_discount"]) / 1e6
    cached_price = entry.get("cached_input", entry.get("input", 0))
    parts = {
        "input_usd": (tokens["input"] - tokens["cached_input"]) * entry.get("input", 0) * factor,
        "cached_input_usd": tokens["cached_input"] * cached_price * factor,
        "output_usd": tokens["output"] * entry.get("output", 0) * factor,
    }
    total = sum(parts.values())
    return {**cost, **{k: round(v, 6) for k, v in parts.items()}, "total_usd": round(total, 6)}
