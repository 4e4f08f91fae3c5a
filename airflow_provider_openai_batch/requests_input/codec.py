"""JSON parsing and serialization for request lines: orjson when it is installed, else the standard library
made as strict as orjson (bytes must be UTF-8, no NaN or Infinity; compact output, non-ASCII kept). The other
modules look up :data:`loads` and :data:`dumps` here when a run starts, so a test can swap in the fallback.
"""

from __future__ import annotations

import json
from typing import Any

try:
    import orjson
except ImportError:  # pragma: no cover - the fallback functions have their own test
    orjson = None  # type: ignore[assignment]


def _stdlib_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


_stdlib_decoder = json.JSONDecoder(parse_constant=_stdlib_constant)


def stdlib_loads(raw: bytes) -> Any:
    """Parse one JSON line with the standard library, rejecting what orjson rejects.

    :param raw: the line, as bytes.
    """
    if type(raw) is not bytes:  # the stand-ins for unusable lines fail like they do with orjson
        raise TypeError(f"Expected bytes but received {type(raw).__name__}")
    # Decode explicitly: json.loads(bytes) would also guess UTF-16/32, which the Batch API does not accept.
    return _stdlib_decoder.decode(raw.decode("utf-8"))


def stdlib_dumps(obj: Any) -> bytes:
    """Serialize ``obj`` compactly as orjson does: no spaces, non-ASCII kept, NaN refused.

    :param obj: a JSON-serializable value.
    """
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode("utf-8")


if orjson is not None:
    loads = orjson.loads
    dumps = orjson.dumps
else:  # pragma: no cover - exercised by the stdlib fallback test
    loads = stdlib_loads
    dumps = stdlib_dumps
