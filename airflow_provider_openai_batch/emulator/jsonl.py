"""Fast JSON encoding for JSONL files, with orjson when installed and the standard library otherwise."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

# Declared once so both implementations fit it (orjson also takes memoryview, json also bytearray).
loads: Callable[[bytes | str], Any]

try:
    import orjson

    def dumps(obj: Any) -> bytes:
        return orjson.dumps(obj)

    loads = orjson.loads
    JSONDecodeError: type[Exception] = orjson.JSONDecodeError
except ImportError:  # pragma: no cover - orjson ships with Airflow, this is a fallback

    def dumps(obj: Any) -> bytes:
        return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()

    loads = json.loads
    JSONDecodeError = ValueError
