"""What a batch costs: a dated price table, the cost of a usage, an upper bound before submitting, a budget.

No Airflow import: the ``[openai_batch] price_table`` option is read through Airflow only when Airflow is
installed, and ``check_budget`` imports the provider's exception only to raise it.
"""

from __future__ import annotations

from airflow_provider_openai_batch.cost.estimate import (
    check_budget,
    describe,
    estimate_upper_bound,
    load_assumed_output,
)
from airflow_provider_openai_batch.cost.prices import cost_of_usage, load_prices, lookup, price_age
from airflow_provider_openai_batch.cost.tokens import approximate_tokens, token_counter

__all__ = [
    "approximate_tokens",
    "check_budget",
    "cost_of_usage",
    "describe",
    "estimate_upper_bound",
    "load_assumed_output",
    "load_prices",
    "lookup",
    "price_age",
    "token_counter",
]
