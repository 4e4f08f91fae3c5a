"""The operator's argument checks: a bad argument fails when the DAG is parsed, with a message that says what was
expected and what was received, instead of failing a task hours later (or, worse, paying for a batch first).

``plan.Policy`` and ``submit.Job`` check their own fields when built, and ``OpenAIBatchOperator.__init__`` builds
both; each check is exercised on its own object and through the constructor, since a check the constructor
stopped reaching would leave the first group passing. The metadata limits apply after templates render
(``metadata`` is a templated field), so they are checked by ``tags.check_user_metadata`` at create time.
"""

from __future__ import annotations

import pytest

from airflow_provider_openai_batch.batch_input import Limits
from airflow_provider_openai_batch.lifecycle import plan, submit
from airflow_provider_openai_batch.lifecycle.tags import MAX_KEY_CHARS, MAX_VALUE_CHARS, check_user_metadata
from airflow_provider_openai_batch.operators.openai_batch import OpenAIBatchOperator

# (the operator's argument, its value, what the message says): the policy's own checks
BAD_POLICY = [
    ("on_timeout", "never", ["Expected `on_timeout` to be 'cancel' or 'keep'", "received 'never'"]),
    ("on_timeout", "CANCEL", ["Expected `on_timeout`", "received 'CANCEL'"]),
    ("max_failed_ratio", 1.5, ["Expected `max_failed_ratio` between 0 and 1", "received 1.5"]),
    ("max_failed_ratio", -0.1, ["Expected `max_failed_ratio` between 0 and 1", "received -0.1"]),
    ("max_shards_in_flight", 0, ["Expected `max_shards_in_flight` >= 1 or None", "received 0"]),
    ("max_shards_in_flight", -3, ["Expected `max_shards_in_flight` >= 1 or None", "received -3"]),
]
# ... and the operator's own (the ledger's policy for a changed input)
BAD = [
    *BAD_POLICY,
    (
        "on_input_change",
        "ignore",
        ["Expected `on_input_change` to be 'resubmit' or 'fail'", "received 'ignore'"],
    ),
]


@pytest.mark.parametrize(("name", "value", "says"), BAD_POLICY, ids=[f"{b[0]}={b[1]!r}" for b in BAD_POLICY])
def test_the_policy_names_what_was_expected_and_received(name, value, says):
    with pytest.raises(ValueError) as info:
        plan.Policy(**{name: value})
    for fragment in says:
        assert fragment in str(info.value)


@pytest.mark.parametrize(("name", "value", "says"), BAD, ids=[f"{b[0]}={b[1]!r}" for b in BAD])
def test_the_operator_refuses_the_same_arguments_when_constructed(name, value, says):
    with pytest.raises(ValueError) as info:
        OpenAIBatchOperator(task_id="t", output_path="out", input_path="in.jsonl", **{name: value})
    for fragment in says:
        assert fragment in str(info.value)


@pytest.mark.parametrize(
    ("input_path", "requests"), [(None, None), ("in.jsonl", [])], ids=["neither", "both"]
)
def test_exactly_one_source_of_requests(input_path, requests):
    with pytest.raises(ValueError, match="exactly one of `input_path` or `requests`"):
        submit.Job(task_id="t", endpoint="/v1/chat/completions", input_path=input_path, requests=requests)
    with pytest.raises(ValueError, match="exactly one of `input_path` or `requests`"):
        OpenAIBatchOperator(task_id="t", output_path="out", input_path=input_path, requests=requests)


@pytest.mark.parametrize(
    "arguments",
    [
        {"on_timeout": "keep", "on_input_change": "fail"},
        {"max_failed_ratio": 0.0, "max_shards_in_flight": 1},
        {"max_failed_ratio": 1.0, "max_shards_in_flight": None},
    ],
    ids=["keep-fail", "ratio-0-one-in-flight", "ratio-1-all-in-flight"],
)
def test_the_bounds_themselves_are_accepted(arguments):
    operator = OpenAIBatchOperator(task_id="t", output_path="out", input_path="in.jsonl", **arguments)
    for name, value in arguments.items():
        assert getattr(operator, name) == value


def test_templated_arguments_are_kept_as_given_for_rendering():
    # Reshaping a templated argument in __init__ breaks templating; the checks leave them alone.
    metadata = {"partition": "{{ ds }}"}
    operator = OpenAIBatchOperator(
        task_id="t",
        output_path="out/{{ ds }}",
        requests=lambda: [],
        metadata=metadata,
        custom_id_prefix="p-{{ ds }}",
    )
    assert operator.metadata is metadata and operator.output_path == "out/{{ ds }}"
    assert operator.input_path is None and operator.custom_id_prefix == "p-{{ ds }}"


@pytest.mark.parametrize(
    ("limits", "says"),
    [
        ({"max_requests": 0}, "Expected a positive int for `max_requests` but received 0"),
        ({"max_bytes": 1.5}, "Expected a positive int for `max_bytes` but received 1.5"),
        ({"safety_margin": 0}, "Expected `safety_margin` in (0, 1] but received 0"),
        ({"safety_margin": 1.2}, "Expected `safety_margin` in (0, 1] but received 1.2"),
    ],
)
def test_bad_limits_fail_before_the_operator_is_built(limits, says):
    with pytest.raises(ValueError) as info:
        OpenAIBatchOperator(task_id="t", output_path="out", input_path="in.jsonl", limits=Limits(**limits))
    assert says in str(info.value)


# ------------------------------------------------------------------------------ metadata, once rendered
def test_metadata_keys_and_values_up_to_the_limits_are_kept_as_strings():
    metadata = {"k" * MAX_KEY_CHARS: "v" * MAX_VALUE_CHARS, "count": 5}
    assert check_user_metadata(metadata) == {"k" * MAX_KEY_CHARS: "v" * MAX_VALUE_CHARS, "count": "5"}
    assert check_user_metadata(None) == {}


@pytest.mark.parametrize(
    ("key", "value", "lengths"),
    [
        ("k" * (MAX_KEY_CHARS + 1), "v", f"has {MAX_KEY_CHARS + 1} and its value 1"),
        ("k", "v" * (MAX_VALUE_CHARS + 1), f"has 1 and its value {MAX_VALUE_CHARS + 1}"),
    ],
    ids=["key", "value"],
)
def test_metadata_past_the_api_limits_names_the_key_and_its_lengths(key, value, lengths):
    with pytest.raises(ValueError) as info:
        check_user_metadata({"fine": "x", key: value})
    message = str(info.value)
    assert (
        f"Expected `metadata` keys of at most {MAX_KEY_CHARS} and values of at most {MAX_VALUE_CHARS}"
        in message
    )
    assert repr(key) in message and lengths in message
