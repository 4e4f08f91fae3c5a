"""Price table and cost_of_usage: labelled estimates, overrides merged per model, unknown models never crash."""

from __future__ import annotations

import datetime as dt
import json

import pytest

from airflow_provider_openai_batch.cost import cost_of_usage, load_prices, price_age
from airflow_provider_openai_batch.cost.prices import DEFAULT_TABLE

PRICES = {
    "as_of": "2026-11-30",
    "source": "test table",
    "batch_discount": 0.5,
    "models": {
        "m": {
            "input": 2.0,
            "cached_input": 0.5,
            "output": 8.0,
            "max_output_tokens": 1000,
            "as_of": "2026-11-30",
        },
        "no-cache-price": {"input": 1.0, "output": 1.0, "as_of": "2026-11-30"},
    },
}


def test_cost_prices_uncached_cached_and_output_tokens_at_the_batch_discount():
    usage = {
        "input_tokens": 1_000_000,
        "cached_tokens": 400_000,
        "output_tokens": 500_000,
        "reasoning_tokens": 7,
    }
    cost = cost_of_usage("m", usage, PRICES)
    assert cost["input_usd"] == pytest.approx(600_000 * 2.0 / 1e6 * 0.5)
    assert cost["cached_input_usd"] == pytest.approx(400_000 * 0.5 / 1e6 * 0.5)
    assert cost["output_usd"] == pytest.approx(500_000 * 8.0 / 1e6 * 0.5)
    assert cost["total_usd"] == pytest.approx(0.6 + 0.1 + 2.0)
    assert cost["tokens"] == {"input": 1_000_000, "cached_input": 400_000, "output": 500_000, "reasoning": 7}
    assert cost["estimate"] is True and cost["as_of"] == "2026-11-30" and cost["batch_discount"] == 0.5


def test_api_usage_shapes_and_dated_snapshots_are_understood():
    chat_usage = {
        "prompt_tokens": 100,
        "completion_tokens": 10,
        "prompt_tokens_details": {"cached_tokens": 100},
    }
    cost = cost_of_usage("m-2026-01-02", chat_usage, PRICES)
    assert cost["priced_as"] == "m"
    assert cost["total_usd"] == pytest.approx((100 * 0.5 + 10 * 8.0) / 1e6 * 0.5)
    # Without a cached price, cached tokens cost what input costs (never less than the truth).
    cost = cost_of_usage(
        "no-cache-price", {"input_tokens": 10, "cached_tokens": 10, "output_tokens": 0}, PRICES
    )
    assert cost["total_usd"] == pytest.approx(10 * 1.0 / 1e6 * 0.5)


@pytest.mark.parametrize("model", ["unknown-model", None, "ft:m:org::abc"])
def test_unknown_model_gives_no_total_and_a_reason(model):
    cost = cost_of_usage(model, {"input_tokens": 5}, PRICES)
    assert cost["total_usd"] is None
    assert "price_table" in cost["reason"]
    assert cost["estimate"] is True and cost["as_of"] == PRICES["as_of"] and cost["source"] == "test table"


def test_shipped_table_is_dated_sourced_and_complete():
    table = load_prices(use_config=False)
    dt.date.fromisoformat(table["as_of"])
    assert "not an invoice" in table["source"]
    assert 0 < table["batch_discount"] < 1
    for name, entry in table["models"].items():
        assert {"input", "output", "max_output_tokens"} <= set(entry), name
        assert entry.get("cached_input", entry["input"]) <= entry["input"], name
    cost = cost_of_usage("gpt-4o-mini", {"input_tokens": 1}, table)
    assert cost["as_of"] == table["as_of"] and "not an invoice" in cost["note"]


def test_old_prices_say_how_old_they_are():
    stale = {**PRICES, "models": {"m": {**PRICES["models"]["m"], "as_of": "2020-01-01"}}}
    assert "days old" in cost_of_usage("m", {}, stale)["note"]
    assert "days old" not in cost_of_usage("m", {}, {**PRICES, "models": {"m": {**PRICES["models"]["m"],
        "as_of": dt.date.today().isoformat()}}})["note"]  # fmt: skip


def test_override_merges_per_model_and_labels_what_it_gave(tmp_path):
    default = load_prices(use_config=False)
    override = {"as_of": "2026-12-01", "source": "our contract", "models": {"gpt-4o": {"output": 1.0}}}
    for given in (override, json.dumps(override), str(tmp_path / "p.json")):
        (tmp_path / "p.json").write_text(json.dumps(override))
        table = load_prices(given, use_config=False)
        gpt4o = table["models"]["gpt-4o"]
        assert gpt4o["output"] == 1.0 and gpt4o["input"] == default["models"]["gpt-4o"]["input"]
        assert gpt4o["as_of"] == "2026-12-01" and gpt4o["source"] == "our contract"
        assert table["models"]["gpt-4o-mini"] == default["models"]["gpt-4o-mini"]
        assert cost_of_usage("gpt-4o", {"output_tokens": 2_000_000}, table)["total_usd"] == pytest.approx(1.0)


@pytest.mark.parametrize(
    "override, message",
    [
        ('{"models": {"new": {"input": 1}}}', r"`models.new` .* give output"),
        ('{"models": {"gpt-4o": {"input": -1}}}', r"number >= 0 for `models.gpt-4o.input`"),
        ('{"models": {"gpt-4o": {"input": "cheap"}}}', r"received 'cheap'"),
        ('{"batch_discount": 2, "models": {}}', r"`batch_discount` between 0 and 1"),
        ('{"models": [1]}', r"a `models` object"),
        ("{not json", r"valid JSON"),
    ],
)
def test_bad_overrides_say_which_field(override, message):
    with pytest.raises(ValueError, match=message):
        load_prices(override, use_config=False)


def test_override_path_that_does_not_exist_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="no file is at .*missing.json"):
        load_prices(str(tmp_path / "missing.json"), use_config=False)


def test_provider_config_option_is_read(monkeypatch):
    pytest.importorskip("airflow.sdk")
    table = {
        "as_of": "2026-12-01",
        "source": "env",
        "batch_discount": 0.25,
        "models": {"x": {"input": 4, "output": 4}},
    }
    monkeypatch.setenv("AIRFLOW__OPENAI_BATCH__PRICE_TABLE", json.dumps(table))
    cost = cost_of_usage("x", {"input_tokens": 1_000_000}, load_prices())
    assert cost["total_usd"] == pytest.approx(3.0) and cost["source"] == "env"
    assert DEFAULT_TABLE.exists()


def test_the_option_read_is_the_one_the_provider_declares():
    from airflow_provider_openai_batch.cost.prices import CONFIG_OPTION, CONFIG_SECTION
    from airflow_provider_openai_batch.get_provider_info import get_provider_info

    option = get_provider_info()["config"][CONFIG_SECTION]["options"][CONFIG_OPTION]
    assert option["type"] == "string" and option["default"] == ""
    load_prices(option["example"], use_config=False)  # the documented example is a valid table


@pytest.mark.parametrize(
    ("model", "priced_as"),
    [
        ("gpt-4o-mini-2024-07-18", "gpt-4o-mini"),  # a dated snapshot: its family
        ("gpt-3.5-turbo-0125", "gpt-3.5-turbo"),  # the older -MMDD dates
        ("gpt-4o-2024-05-13", "gpt-4o-2024-05-13"),  # a snapshot the table lists has its own prices
        ("gpt-4o-mini", "gpt-4o-mini"),
        ("gpt-4o-mini-search-preview", None),  # another model, other prices: not its "family"
        ("my-fine-tune", None),
    ],
)
def test_the_shipped_table_prices_snapshots_as_their_family_and_says_which_entry(model, priced_as):
    prices = load_prices(use_config=False)
    cost = cost_of_usage(model, {"input_tokens": 1000, "output_tokens": 100}, prices)
    assert cost["priced_as"] == priced_as
    if priced_as is None:
        assert cost["total_usd"] is None and repr(model) in cost["reason"]
        assert "price_table" in cost["reason"]
    else:
        entry = prices["models"][priced_as]
        expected = (1000 * entry["input"] + 100 * entry["output"]) / 1e6 * (1 - prices["batch_discount"])
        assert cost["total_usd"] == pytest.approx(expected)
        assert cost["as_of"] == entry["as_of"]


def test_price_age_warns_only_about_old_prices():
    old = cost_of_usage(
        "m", {}, {**PRICES, "models": {"m": {**PRICES["models"]["m"], "as_of": "2020-01-01"}}}
    )
    assert price_age(old).startswith("Cost estimates use prices as of 2020-01-01, ")
    assert "[openai_batch] price_table" in price_age(old)
    fresh = {**PRICES["models"]["m"], "as_of": dt.date.today().isoformat()}
    assert price_age(cost_of_usage("m", {}, {**PRICES, "models": {"m": fresh}})) is None
