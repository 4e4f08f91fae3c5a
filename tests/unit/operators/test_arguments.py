"""The operator's argument checks: a bad argument fails when the DAG is parsed, with a message that says what was
expected and what was received, instead of failing a task hours later (or, worse, paying for a batch first).

``submit.check_arguments`` is what ``OpenAIBatchOperator.__init__`` calls; both are exercised, since a check
the constructor stopped calling would leave the first group passing. The metadata limits apply after templates
render (``metadata`` is a templated field), so they are checked by ``tags.check_user_metadata`` at create time.
"""

from __future__ import annotations

import pytest

from airflow_provider_openai_batch.batch_input import Limits
from airflow_provider_openai_batch.lifecycle import submit
from airflow_provider_openai_batch.lifecycle.tags import MAX_KEY_CHARS, MAX_VALUE_CHARS, check_user_metadata
from airflow_provider_openai_batch.operators.openai_batch import OpenAIBatchOperator

GOOD = {
    "input_path": "in.jsonl",
    "requests": None,
    "on_timeout": "cancel",
    "on_input_change": "resubmit",
    "ratio": 0.0,
    "in_flight": None,
}

# (the bad argument, as check_arguments names it → as the operator names it, its value, what the message says)
BAD = [
    (
        "on_timeout",
        "on_timeout",
        "never",
        ["Expected `on_timeout` to be 'cancel' or 'keep'", "received 'never'"],
    ),
    ("on_timeout", "on_timeout", "CANCEL", ["Expected `on_timeout`", "received 'CANCEL'"]),
    (
        "on_input_change",
        "on_input_change",
        "ignore",
        ["Expected `on_input_change` to be 'resubmit' or 'fail'", "received 'ignore'"],
    ),
    ("ratio", "max_failed_ratio", 1.5, ["Expected `max_failed_ratio` between 0 and 1", "received 1.5"]),
    ("ratio", "max_failed_ratio", -0.1, ["Expected `max_failed_ratio` between 0 and 1", "received -0.1"]),
    ("in_flight", "max_shards_in_flight", 0, ["Expected `max_shards_in_flight` >= 1 or None", "received 0"]),
    (
        "in_flight",
        "max_shards_in_flight",
        -3,
        ["Expected `max_shards_in_flight` >= 1 or None", "received -3"],
    ),
]


@pytest.mark.parametrize(
    ("name", "operator_name", "value", "says"), BAD, ids=[f"{b[1]}={b[2]!r}" for b in BAD]
)
def test_check_arguments_names_what_was_expected_and_received(name, operator_name, value, says):
    with pytest.raises(ValueError) as info:
        submit.check_arguments(**{**GOOD, name: value})
    for fragment in says:
        assert fragment in str(info.value)


@pytest.mark.parametrize(
    ("name", "operator_name", "value", "says"), BAD, ids=[f"{b[1]}={b[2]!r}" for b in BAD]
)
def test_the_operator_refuses_the_same_arguments_when_constructed(name, operator_name, value, says):
    with pytest.raises(ValueError) as info:
        OpenAIBatchOperator(task_id="t", output_path="out", input_path="in.jsonl", **{operator_name: value})
    for fragment in says:
        assert fragment in str(info.value)


@pytest.mark.parametrize(
    ("input_path", "requests"), [(None, None), ("in.jsonl", [])], ids=["neither", "both"]
)
def test_exactly_one_source_of_requests(input_path, requests):
    with pytest.raises(ValueError, match="exactly one of `input_path` or `requests`"):
        submit.check_arguments(**{**GOOD, "input_path": input_path, "requests": requests})
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
