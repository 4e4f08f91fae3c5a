"""estimate_upper_bound over spooled shards, and check_budget refusing what exceeds max_cost_usd."""

from __future__ import annotations

import json

import pytest

from airflow_provider_openai_batch.cost import (
    approximate_tokens,
    check_budget,
    describe,
    estimate_upper_bound,
)
from airflow_provider_openai_batch.cost.estimate import IMAGE_TOKENS, MESSAGE_OVERHEAD, REQUEST_OVERHEAD
from airflow_provider_openai_batch.exceptions import OpenAIBatchCostExceeded
from airflow_provider_openai_batch.requests_input.shards import Shard

PRICES = {
    "as_of": "2026-11-30",
    "source": "test table",
    "batch_discount": 0.5,
    "models": {
        "m": {"input": 2.0, "output": 8.0, "max_output_tokens": 1000, "as_of": "2026-11-30"},
        "emb": {"input": 0.1, "output": 0.0, "max_output_tokens": 0, "as_of": "2026-11-30"},
        "no-max": {"input": 1.0, "output": 1.0, "as_of": "2026-11-30"},
    },
}
CHAT = "/v1/chat/completions"


def shard(path, bodies, url=CHAT):
    lines = [{"custom_id": f"c{i}", "method": "POST", "url": url, "body": b} for i, b in enumerate(bodies)]
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return str(path)


def estimate(paths, endpoint=CHAT, model="m"):
    return estimate_upper_bound(paths, endpoint=endpoint, model=model, prices=PRICES, tokenizer="approximate")


def chat(content, **limits):
    return {
        "model": "m",
        "messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": content}],
        **limits,
    }


def test_output_is_bounded_by_each_requests_limit_times_n_and_input_is_counted(tmp_path):
    a = shard(
        tmp_path / "a.jsonl", [chat("hello there", max_tokens=10), chat("hi", max_completion_tokens=20, n=3)]
    )
    b = Shard(1, shard(tmp_path / "b.jsonl", [chat("ok", max_completion_tokens=5)]), 1, 0, 0)
    result = estimate([a, b])
    assert result["requests"] == 3
    assert result["output_tokens"] == 10 + 20 * 3 + 5
    per_request = REQUEST_OVERHEAD + 2 * MESSAGE_OVERHEAD + approximate_tokens("be brief")
    expected_input = 3 * per_request + sum(approximate_tokens(t) for t in ("hello there", "hi", "ok"))
    assert result["input_tokens"] == expected_input
    assert result["total_usd"] == pytest.approx((expected_input * 2.0 + 75 * 8.0) / 1e6 * 0.5)
    assert result["estimate"] is True and result["as_of"] == "2026-11-30"
    assert result["input_tokens_exact"] is False and any("approximation" in n for n in result["notes"])
    # Approximated input is no bound (digit runs count low): the estimate says so, and why.
    assert result["upper_bound"] is False
    assert result["not_a_bound_because"] == [
        "input tokens approximated, tiktoken not used: approximation requested"
    ]


def test_requests_without_a_limit_use_the_models_maximum_and_say_so(tmp_path):
    path = shard(tmp_path / "a.jsonl", [chat("x"), chat("y", max_tokens=7)])
    result = estimate([path])
    assert result["output_tokens"] == 1000 + 7
    assert result["requests_without_output_limit"] == 1
    assert any("1 request(s) set no max_completion_tokens/max_tokens/max_output_tokens: each counted "
               "at 1,000 output tokens, the model's max_output_tokens" in n for n in result["notes"])  # fmt: skip
    line = describe(result)
    assert (
        "1 request(s) without max_completion_tokens/max_tokens/max_output_tokens at 1000 output tokens"
        in line
    )
    unbounded = estimate([path], model="no-max")
    assert unbounded["output_tokens"] == 7 and unbounded["upper_bound"] is False
    assert any("NOT an upper bound" in n for n in unbounded["notes"])


def test_an_assumed_output_per_model_replaces_the_maximum_and_the_estimate_says_it_is_no_bound(
    tmp_path, monkeypatch
):
    path = shard(tmp_path / "a.jsonl", [chat("x"), chat("y"), chat("z", max_tokens=7)])
    given = estimate_upper_bound(
        [path], endpoint=CHAT, model="m", prices=PRICES, tokenizer="approximate", assumed_output={"m": 50}
    )
    assert given["output_tokens"] == 2 * 50 + 7 and given["upper_bound"] is False
    assert "2 request(s) without max_completion_tokens/max_tokens/max_output_tokens counted at an assumed 50 " \
        "output tokens" in given["not_a_bound_because"]  # fmt: skip
    assert "at 50 output tokens each ([openai_batch] assumed_output_tokens)" in describe(given)
    # From the provider configuration, "*" for any model not named; a bad figure names the model.
    monkeypatch.setenv("AIRFLOW__OPENAI_BATCH__ASSUMED_OUTPUT_TOKENS", '{"other": 9, "*": 20}')
    configured = estimate([path])
    assert configured["output_tokens"] == 2 * 20 + 7
    assert configured["output_without_limit_from"] == "[openai_batch] assumed_output_tokens"
    monkeypatch.setenv("AIRFLOW__OPENAI_BATCH__ASSUMED_OUTPUT_TOKENS", '{"m": "lots"}')
    with pytest.raises(
        ValueError, match="whole number >= 0 for 'm' in \\[openai_batch\\] assumed_output_tokens"
    ):
        estimate([path])


def test_responses_api_counts_instructions_input_items_tools_and_max_output_tokens(tmp_path):
    tools = [{"type": "function", "name": "lookup", "parameters": {"type": "object"}}]
    body = {"model": "m", "instructions": "abcd" * 5, "input": [{"role": "user", "content": [
        {"type": "input_text", "text": "efgh" * 3}, {"type": "input_image", "image_url": "data:..."}]}],
        "tools": tools, "max_output_tokens": 50}  # fmt: skip
    result = estimate([shard(tmp_path / "r.jsonl", [body], "/v1/responses")], "/v1/responses")
    tools_tokens = approximate_tokens(json.dumps(tools, separators=(",", ":")))
    assert result["input_tokens"] == REQUEST_OVERHEAD + MESSAGE_OVERHEAD + 5 + 3 + IMAGE_TOKENS + tools_tokens
    assert result["output_tokens"] == 50 and result["image_parts"] == 1


def test_embeddings_have_no_output_and_token_arrays_count_exactly(tmp_path):
    bodies = [{"model": "emb", "input": ["abcdabcd", "ab"]}, {"model": "emb", "input": [[1, 2, 3], [4, 5]]}]
    result = estimate([shard(tmp_path / "e.jsonl", bodies, "/v1/embeddings")], "/v1/embeddings", "emb")
    assert result["input_tokens"] == 2 + 1 + 5
    assert result["output_tokens"] == 0 and result["requests_without_output_limit"] == 0


def test_file_parts_are_not_counted_and_the_estimate_says_it_is_no_bound(tmp_path):
    content = [{"type": "text", "text": "read this"}, {"type": "file", "file": {"file_id": "file-1"}}]
    result = estimate([shard(tmp_path / "f.jsonl", [chat(content, max_tokens=1)])])
    assert result["uncounted_parts"] == 1 and result["upper_bound"] is False


def test_unpriced_model_and_unsupported_endpoint_give_no_total(tmp_path):
    path = shard(tmp_path / "a.jsonl", [chat("x", max_tokens=1)])
    assert estimate([path], model="other")["total_usd"] is None
    images = estimate([path], endpoint="/v1/images/generations")
    assert images["total_usd"] is None and "not estimated" in images["reason"]


def test_check_budget_passes_under_and_refuses_over_with_the_estimate(tmp_path):
    result = estimate([shard(tmp_path / "a.jsonl", [chat("x", max_tokens=1_000_000)])])  # $4.00 of output
    check_budget(result, 5)
    check_budget(result, None)
    with pytest.raises(OpenAIBatchCostExceeded) as raised:
        check_budget(result, 3.5)
    message = str(raised.value)
    assert "max_cost_usd=$3.50" in message and "$4.00" in message and "Nothing was uploaded" in message
    assert "raise max_cost_usd" in message and "[openai_batch] price_table" in message
    assert "the estimate (not an upper bound) is $4.00" in message
    assert raised.value.estimate["total_usd"] == result["total_usd"]


def test_check_budget_says_why_requests_without_a_limit_cost_so_much(tmp_path):
    result = estimate([shard(tmp_path / "a.jsonl", [chat("x")] * 1000)])  # 1,000 x 1,000 tokens: $4.00
    with pytest.raises(OpenAIBatchCostExceeded) as raised:
        check_budget(result, 1)
    message = str(raised.value)
    assert "1000 request(s) set no max_completion_tokens / max_tokens / max_output_tokens" in message
    assert "each counts at 1000 output tokens (the model's max_output_tokens)" in message
    assert "[openai_batch] assumed_output_tokens" in message


def test_check_budget_refuses_when_nothing_can_be_checked_and_bad_budgets(tmp_path):
    result = estimate([shard(tmp_path / "a.jsonl", [chat("x", max_tokens=1)])], model="other")
    with pytest.raises(OpenAIBatchCostExceeded, match="received none"):
        check_budget(result, 10)
    with pytest.raises(ValueError, match="received -1"):
        check_budget(result, -1)


def test_describe_names_the_figure_its_kind_how_it_was_made_and_date(tmp_path):
    path = shard(tmp_path / "a.jsonl", [chat("x", max_tokens=1_000_000)])
    line = describe(estimate([path]))
    assert (
        line.startswith("$4.00 (estimate, not an upper bound: input tokens approximated")
        and "2026-11-30" in line
    )
    assert "every request at its output limit" in line
    exact = estimate_upper_bound([path], endpoint=CHAT, model="m", prices=PRICES, tokenizer="approximate")
    exact.update(upper_bound=True, not_a_bound_because=[], input_tokens_method="tiktoken o200k_base")
    assert describe(exact).startswith("$4.00 (upper bound; input by tiktoken o200k_base, every request")
    assert "days old" not in line  # the price age is said once per task, not on every cost line
    assert describe({"total_usd": None, "reason": "why"}) == "no cost estimate: why"
