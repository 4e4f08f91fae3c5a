"""Which settings are secrets, and how a message is scrubbed of them."""

from __future__ import annotations

import pytest

from airflow_provider_openai_batch.hooks.secrets import client_kwargs_secrets, scrub, scrub_value, secrets_of

KEY = "sk-proj-AbCdEfGhIjKlMnOpQrStUvWxYz0123456789"


def test_the_key_and_credential_named_headers_and_query_values_are_secrets():
    found = secrets_of(
        KEY,
        {"Authorization": "Bearer gw-0123456789", "X-Gateway-Key": "gk-abcdefgh", "X-Team": "analytics"},
        {"api-key": "azure-query-key", "api-version": "2024-10-21"},
    )
    assert found == (KEY, "Bearer gw-0123456789", "gw-0123456789", "gk-abcdefgh", "azure-query-key")


def test_short_values_are_not_secrets_and_nothing_is_no_secret():
    assert secrets_of("abcd", {"X-Token": "1234"}) == ()
    assert client_kwargs_secrets({"base_url": "http://x"}) == ()
    assert client_kwargs_secrets({"api_key": KEY, "default_headers": {"api-key": "k" * 8}}) == (KEY, "k" * 8)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (f"Incorrect API key provided: {KEY}.", "Incorrect API key provided: ***."),
        (f"key={KEY}&key={KEY}", "key=***&key=***"),
        # a key cut short, or only its middle: any 12 characters of it go
        (f"Bad key {KEY[:20]}...", "Bad key ***..."),
        (f"[{KEY[10:30]}]", "[***]"),
        # what OpenAI itself shows (its first 8 and last 4 characters) is kept: it helps find the key
        (
            f"Incorrect API key provided: {KEY[:8]}******{KEY[-4:]}.",
            f"Incorrect API key provided: {KEY[:8]}******{KEY[-4:]}.",
        ),
        ("nothing secret here", "nothing secret here"),
        ("", ""),
    ],
)
def test_scrub(text, expected):
    assert scrub(text, (KEY,)) == expected


def test_a_short_secret_is_scrubbed_only_whole():
    assert scrub("token gk-abcdefgh and gk-abcd", ("gk-abcdefgh",)) == "token *** and gk-abcd"


def test_scrub_value_reaches_every_string_of_a_json_body():
    body = {"error": {"message": f"bad {KEY}", "param": None, "details": [KEY, 3], KEY: "as a key"}}
    assert scrub_value(body, (KEY,)) == {
        "error": {"message": "bad ***", "param": None, "details": ["***", 3], "***": "as a key"}
    }
