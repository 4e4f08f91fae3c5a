"""A cost estimate of spooled requests, computed before anything is uploaded, and the budget check.

The estimate assumes every request writes its full output limit (``max_completion_tokens``, ``max_tokens``
or ``max_output_tokens``) and that no input is cached. A request that sets no limit counts at the model's
maximum output from the price table, unless ``[openai_batch] assumed_output_tokens`` gives a typical
figure for the model. Input tokens are counted from the request text (see :mod:`.tokens`), plus a few
tokens per message; images count at a fixed figure. The estimate is an upper bound only when every part of
it is: tiktoken counted the input, every output was bounded by a limit or the model's maximum, and no
file or audio part went uncounted; otherwise it says ``upper_bound: false`` and why.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import orjson

from airflow_provider_openai_batch.cost.prices import (
    CONFIG_OPTION,
    CONFIG_SECTION,
    cost_of_usage,
    load_prices,
    lookup,
)
from airflow_provider_openai_batch.cost.tokens import token_counter
from airflow_provider_openai_batch.files import open_binary
from airflow_provider_openai_batch.requests_input.reading import iter_jsonl_lines

CHAT, RESPONSES, COMPLETIONS = "/v1/chat/completions", "/v1/responses", "/v1/completions"
EMBEDDINGS, MODERATIONS = "/v1/embeddings", "/v1/moderations"
ESTIMATED_ENDPOINTS = (CHAT, RESPONSES, COMPLETIONS, EMBEDDINGS, MODERATIONS)
NO_OUTPUT_ENDPOINTS = (EMBEDDINGS, MODERATIONS)
OUTPUT_LIMIT_KEYS = ("max_completion_tokens", "max_tokens", "max_output_tokens")
# Chat formatting around each message and before the reply (OpenAI's cookbook counts 3 + 1 for a name, and 3).
MESSAGE_OVERHEAD = 4
REQUEST_OVERHEAD = 3
# An image at high detail on gpt-4o-class models costs at most 85 + 8 tiles x 170 tokens.
IMAGE_TOKENS = 1445
# /v1/completions writes at most 16 tokens when max_tokens is not set (the API's default).
COMPLETIONS_DEFAULT_MAX_TOKENS = 16
#: Typical output per request, by model, for requests that set no output limit (config, JSON object).
ASSUMED_OUTPUT_OPTION = "assumed_output_tokens"
_SCHEMA_KEYS = ("tools", "functions", "response_format", "text")
_IMAGE_PARTS = frozenset({"image_url", "input_image"})
_OPAQUE_PARTS = frozenset({"file", "input_file", "input_audio", "audio"})
_SKIP_KEYS = frozenset({"type", "role", "id", "call_id", "status", "detail"})


class _Tally:
    __slots__ = ("texts", "tokens", "images", "opaque")

    def __init__(self) -> None:
        self.texts: list[str] = []
        self.tokens = self.images = self.opaque = 0

    def walk(self, value: Any) -> None:
        """Collect the text of a message, input or prompt: strings, token-id arrays and content parts."""
        if isinstance(value, str):
            self.texts.append(value)
        elif isinstance(value, list):
            if value and isinstance(value[0], int):
                self.tokens += len(value)
            else:
                for item in value:
                    self.walk(item)
        elif isinstance(value, dict):
            kind = value.get("type")
            if kind in _IMAGE_PARTS:
                self.images += 1
            elif kind in _OPAQUE_PARTS:
                self.opaque += 1
            else:
                for key, item in value.items():
                    if key not in _SKIP_KEYS:
                        self.walk(item)


def _tally(body: Mapping[str, Any], endpoint: str) -> _Tally:
    tally = _Tally()
    if endpoint == CHAT:
        messages = body.get("messages") or []
        tally.tokens += REQUEST_OVERHEAD + MESSAGE_OVERHEAD * len(messages)
        tally.walk(messages)
    elif endpoint == RESPONSES:
        items = body.get("input")
        tally.tokens += REQUEST_OVERHEAD + MESSAGE_OVERHEAD * (len(items) if isinstance(items, list) else 1)
        tally.walk(items)
        tally.walk(body.get("instructions"))
    elif endpoint == COMPLETIONS:
        tally.walk(body.get("prompt"))
        tally.walk(body.get("suffix"))
    else:
        tally.walk(body.get("input"))
    if endpoint in (CHAT, RESPONSES):
        # Tool and schema definitions are sent to the model too; their JSON text is a fair measure.
        tally.texts.extend(orjson.dumps(body[key]).decode() for key in _SCHEMA_KEYS if body.get(key))
    return tally


def prompt_tokens(body: Mapping[str, Any], endpoint: str, count: Callable[[str], int]) -> int:
    """The input tokens of one request body as the estimate counts them (images at their fixed figure).

    The one count of prompt tokens: the cost bound, shards cut under an enqueued-token limit and the
    emulator's batch queue all use it, so they agree on what fits.

    :param body: the request's ``body``.
    :param endpoint: the batch endpoint.
    :param count: a token counter's ``count`` (see :func:`.tokens.token_counter`).
    """
    return _prompt_tokens(_tally(body, endpoint), count)


def _prompt_tokens(tally: _Tally, count: Callable[[str], int]) -> int:
    return tally.tokens + tally.images * IMAGE_TOKENS + sum(map(count, tally.texts))


def _output_limit(body: Mapping[str, Any], endpoint: str) -> int | None:
    limit = next((body[k] for k in OUTPUT_LIMIT_KEYS if isinstance(body.get(k), int)), None)
    if limit is None and endpoint == COMPLETIONS:
        limit = COMPLETIONS_DEFAULT_MAX_TOKENS
    return limit


def _choices(body: Mapping[str, Any]) -> int:
    # n answers (and best_of candidates on completions) are each billed as output.
    values = [body.get("n"), body.get("best_of")]
    return max([v for v in values if isinstance(v, int) and v > 0] or [1])


def load_assumed_output(override: str | Mapping[str, Any] | None = None) -> dict[str, int]:
    """Typical output tokens per request by model (``"*"``: any other model), for requests with no limit.

    :param override: a mapping or JSON text; None reads ``[openai_batch] assumed_output_tokens`` (empty
        when Airflow is not installed or the option is unset).
    :raises ValueError: naming the model whose figure is not a whole number >= 0.
    """
    where = "the assumed output passed in"
    if override is None:
        where = f"[{CONFIG_SECTION}] {ASSUMED_OUTPUT_OPTION}"
        try:
            from airflow_provider_openai_batch.version_compat import conf
        except ImportError:
            return {}
        override = (conf.get(CONFIG_SECTION, ASSUMED_OUTPUT_OPTION, fallback="") or "").strip()
    if isinstance(override, str):
        if not override:
            return {}
        try:
            override = json.loads(override)
        except json.JSONDecodeError as err:
            raise ValueError(f"Expected a JSON object in {where} but received: {err}") from None
    if not isinstance(override, Mapping):
        raise ValueError(
            f"Expected a JSON object of model to tokens in {where} but received {override!r:.200}"
        )
    for name, tokens in override.items():
        if isinstance(tokens, bool) or not isinstance(tokens, int) or tokens < 0:
            raise ValueError(f"Expected a whole number >= 0 for {name!r} in {where} but received {tokens!r}")
    return dict(override)


def _assumed_for(model: str | None, assumed: Mapping[str, int]) -> int | None:
    name = lookup(model, {"models": assumed})[0]
    return assumed[name] if name is not None else assumed.get("*")


def estimate_upper_bound(
    shard_paths: Iterable[Any],
    *,
    endpoint: str,
    model: str | None,
    prices: Mapping[str, Any] | None = None,
    tokenizer: str = "auto",
    assumed_output: Mapping[str, int] | None = None,
) -> dict[str, Any]:
    """Stream the spooled request files and estimate, as an upper bound where it can, what the batch costs.

    :param shard_paths: the JSONL files to submit (paths or URLs, or ``Shard`` objects from ``spool_requests``).
    :param endpoint: the batch endpoint; images, videos and other endpoints are not estimated
        (``total_usd: None`` with a ``reason``).
    :param model: the model the requests name.
    :param prices: a table from :func:`load_prices` (default: ``load_prices()``).
    :param tokenizer: ``"auto"``, ``"tiktoken"`` or ``"approximate"`` (see :func:`token_counter`).
    :param assumed_output: typical output tokens by model for requests that set no limit (default:
        :func:`load_assumed_output`); without a figure for the model they count at its maximum output.
    :return: :func:`cost_of_usage`'s dict for the estimated usage, plus ``upper_bound`` (True only when
        every part is bounded), ``not_a_bound_because`` (why not, in words), ``requests``, ``input_tokens``,
        ``output_tokens``, ``input_tokens_method``, ``input_tokens_exact``, ``requests_without_output_limit``,
        ``output_tokens_per_request_without_limit`` and where that figure came from
        (``output_without_limit_from``), ``image_parts``, ``uncounted_parts``, ``notes`` (what the figures
        assume) and ``seconds`` (streaming and counting, after the table and tokenizer are loaded).
    """
    prices = load_prices() if prices is None else prices
    entry = lookup(model, prices)[1] or {}
    assumed = _assumed_for(model, load_assumed_output() if assumed_output is None else assumed_output)
    default_limit: int | None
    if assumed is not None:
        default_limit, limit_from = assumed, f"[{CONFIG_SECTION}] {ASSUMED_OUTPUT_OPTION}"
    else:
        default_limit, limit_from = entry.get("max_output_tokens"), "the model's max_output_tokens"
    counter = token_counter(model, tokenizer)
    started = time.perf_counter()
    count = counter.count
    requests = input_tokens = output_tokens = images = opaque = no_limit = unbounded = 0
    for shard in shard_paths if endpoint in ESTIMATED_ENDPOINTS else ():
        path = getattr(shard, "path", shard)
        with open_binary(path) as fh:
            for number, line in enumerate(iter_jsonl_lines(fh), start=1):
                if not line.strip():
                    continue
                try:
                    body = orjson.loads(line).get("body") or {}
                except (orjson.JSONDecodeError, AttributeError):
                    raise ValueError(f"Expected a request object on line {number} of {path}") from None
                tally = _tally(body, endpoint)
                requests += 1
                images += tally.images
                opaque += tally.opaque
                input_tokens += _prompt_tokens(tally, count)
                if endpoint in NO_OUTPUT_ENDPOINTS:
                    continue
                limit = _output_limit(body, endpoint)
                if limit is None:
                    no_limit += 1
                    limit = default_limit
                    if limit is None:
                        unbounded += 1
                        continue
                output_tokens += limit * _choices(body)
    cost = cost_of_usage(model, {"input_tokens": input_tokens, "output_tokens": output_tokens}, prices)
    if endpoint not in ESTIMATED_ENDPOINTS:
        cost.update(
            total_usd=None, reason=f"endpoint {endpoint} is not estimated (only {ESTIMATED_ENDPOINTS})"
        )
    limits = "/".join(OUTPUT_LIMIT_KEYS)
    notes = ["assumes no cached input and that every request writes its full output limit"]
    not_bound: list[str] = []
    if not counter.exact:
        notes.append(
            f"input tokens by {counter.method} ({counter.reason}): close for English prose, "
            "low for digit runs and dense punctuation"
        )
        not_bound.append(f"input tokens approximated, tiktoken not used: {counter.reason}")
    if no_limit and default_limit is not None:
        notes.append(
            f"{no_limit} request(s) set no {limits}: each counted at {default_limit:,} output tokens, "
            f"{limit_from}"
        )
        if assumed is not None:
            not_bound.append(
                f"{no_limit} request(s) without {limits} counted at an assumed {assumed:,} output tokens"
            )
    if unbounded:
        notes.append(
            f"the price table has no max_output_tokens for {model!r}, so the output of those {unbounded} "
            f"request(s) is not counted: this is NOT an upper bound (add it with [{CONFIG_SECTION}] {CONFIG_OPTION})"
        )
        not_bound.append(f"the output of {unbounded} request(s) without {limits} is not counted")
    if images:
        notes.append(
            f"{images} image part(s) counted at {IMAGE_TOKENS} tokens each (gpt-4o-class high detail)"
        )
    if opaque:
        notes.append(f"{opaque} file or audio part(s) are not counted: this is NOT an upper bound")
        not_bound.append(f"{opaque} file or audio part(s) not counted")
    return {
        **cost,
        "upper_bound": not not_bound,
        "not_a_bound_because": not_bound,
        "endpoint": endpoint,
        "requests": requests,
        "input_tokens": input_tokens,
        "output_tokens": output_tokens,
        "input_tokens_method": counter.method,
        "input_tokens_exact": counter.exact,
        "requests_without_output_limit": no_limit,
        "output_tokens_per_request_without_limit": default_limit if no_limit else None,
        "output_without_limit_from": limit_from if no_limit else None,
        "image_parts": images,
        "uncounted_parts": opaque,
        "notes": notes,
        "seconds": round(time.perf_counter() - started, 3),
    }


def _usd(value: float) -> str:
    return f"${value:,.2f}" if value >= 1 else f"${value:.6f}"


def describe(cost: Mapping[str, Any]) -> str:
    """One line for the task log: the figure, what kind of figure it is and how it was made.

    The price table's age is not repeated here: :func:`~.prices.price_age` says it, once per task.
    """
    if cost.get("total_usd") is None:
        return f"no cost estimate: {cost.get('reason')}"
    prices = (
        f"{cost.get('model')} at {cost.get('priced_as')} prices as of {cost.get('as_of')}, "
        f"batch discount {cost.get('batch_discount', 0):.0%}"
    )
    if "upper_bound" not in cost:  # the cost of a usage OpenAI reported
        return f"{_usd(cost['total_usd'])} (estimate, {prices})"
    how = [f"input by {cost.get('input_tokens_method')}"]
    if cost.get("requests_without_output_limit"):
        how.append(
            f"{cost['requests_without_output_limit']} request(s) without {'/'.join(OUTPUT_LIMIT_KEYS)} "
            f"at {cost.get('output_tokens_per_request_without_limit')} output tokens each "
            f"({cost.get('output_without_limit_from')})"
        )
    else:
        how.append("every request at its output limit")
    kind = (
        "upper bound"
        if cost["upper_bound"]
        else f"estimate, not an upper bound: {'; '.join(cost.get('not_a_bound_because') or ())}"
    )
    return f"{_usd(cost['total_usd'])} ({kind}; {', '.join(how)}; {prices})"


def check_budget(estimate: Mapping[str, Any], max_cost_usd: float | None) -> None:
    """Refuse a batch whose upper-bound estimate exceeds ``max_cost_usd``.

    :param estimate: the dict from :func:`estimate_upper_bound`.
    :param max_cost_usd: the budget in USD; None turns the check off.
    :raises OpenAIBatchCostExceeded: when the estimate exceeds the budget, or when there is no estimate to
        check (a model without a price): a budget that cannot be checked is not silently ignored.
    """
    if max_cost_usd is None:
        return
    if isinstance(max_cost_usd, bool) or not isinstance(max_cost_usd, (int, float)) or max_cost_usd < 0:
        raise ValueError(f"Expected `max_cost_usd` to be a number >= 0 or None but received {max_cost_usd!r}")
    from airflow_provider_openai_batch.exceptions import OpenAIBatchCostExceeded

    total = estimate.get("total_usd")
    if total is None:
        raise OpenAIBatchCostExceeded(
            f"Expected a cost estimate to check max_cost_usd={_usd(max_cost_usd)} against but received none "
            f"({estimate.get('reason')}). Nothing was uploaded. Add the model's prices with "
            f"[{CONFIG_SECTION}] {CONFIG_OPTION}, or set max_cost_usd=None to submit without a budget.",
            dict(estimate),
        )
    if total <= max_cost_usd:
        return
    kind = "upper-bound estimate" if estimate.get("upper_bound") else "estimate (not an upper bound)"
    without = int(estimate.get("requests_without_output_limit") or 0)
    unlimited = (
        f" {without} request(s) set no max_completion_tokens / max_tokens / max_output_tokens, so each counts at "
        f"{estimate.get('output_tokens_per_request_without_limit')} output tokens "
        f"({estimate.get('output_without_limit_from')}): set a limit on the requests, or a typical output for "
        f"the model with [{CONFIG_SECTION}] {ASSUMED_OUTPUT_OPTION}."
        if without
        else ""
    )
    raise OpenAIBatchCostExceeded(
        f"Expected an estimated cost of at most max_cost_usd={_usd(max_cost_usd)} but the {kind} "
        f"is {_usd(total)} for {estimate.get('requests')} request(s) to {estimate.get('model')} (input "
        f"{estimate.get('input_tokens'):,} tokens by {estimate.get('input_tokens_method')}, output at most "
        f"{estimate.get('output_tokens'):,} tokens; prices as of {estimate.get('as_of')}). Nothing was uploaded."
        f"{unlimited} To go ahead: raise max_cost_usd, lower the requests' max_completion_tokens / max_tokens / "
        "max_output_tokens, or submit fewer requests; prices come from "
        f"[{CONFIG_SECTION}] {CONFIG_OPTION}.",
        dict(estimate),
    )
