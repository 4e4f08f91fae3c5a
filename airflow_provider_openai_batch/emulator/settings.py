"""Runtime settings of the emulator: set by command-line flags, changed by ``POST /_emulator/config``."""

from __future__ import annotations

import dataclasses
import re
from typing import Any

DEFAULT_MAX_FILE_BYTES = 200 * 1024 * 1024


@dataclasses.dataclass
class Settings:
    """Knobs that shape timing and failures.

    :param time_scale: multiplies the ``24h`` completion window (0.001 makes it 86.4 s).
    :param rate: requests processed per second per batch; 0 means as fast as possible.
    :param validating_seconds: time a batch spends in ``validating`` before its file is checked.
    :param finalizing_seconds: time a batch spends in ``finalizing``.
    :param cancelling_seconds: time a cancelled batch spends in ``cancelling`` after it stops working.
    :param fail_custom_id_regex: requests whose ``custom_id`` matches fail with ``fail_status``.
    :param fail_status: HTTP status given to requests matched by ``fail_custom_id_regex``.
    :param embedding_dim: length of the fake embedding vectors.
    :param max_file_bytes: upload limit for ``purpose=batch`` files (the service allows 200 MB).
    :param max_requests: requests allowed in one input file (the service allows 50,000).
    """

    time_scale: float = 1.0
    rate: float = 2000.0
    validating_seconds: float = 0.2
    finalizing_seconds: float = 0.2
    cancelling_seconds: float = 0.2
    fail_custom_id_regex: str | None = None
    fail_status: int = 500
    embedding_dim: int = 8
    max_file_bytes: int = DEFAULT_MAX_FILE_BYTES
    max_requests: int = 50_000

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def update(self, changes: dict[str, Any]) -> None:
        """Apply ``changes`` after checking every key and value; nothing changes if one is wrong."""
        checked = {name: _check(name, value) for name, value in changes.items()}
        for name, value in checked.items():
            setattr(self, name, value)


_NUMBERS = {"time_scale", "rate", "validating_seconds", "finalizing_seconds", "cancelling_seconds"}
_INTEGERS = {"fail_status", "embedding_dim", "max_file_bytes", "max_requests"}


def _check(name: str, value: Any) -> Any:
    if name in _NUMBERS:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
            raise ValueError(f"Expected `{name}` to be a number >= 0 but received {value!r}")
        return float(value)
    if name in _INTEGERS:
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"Expected `{name}` to be an integer >= 1 but received {value!r}")
        return value
    if name == "fail_custom_id_regex":
        if value is None or value == "":
            return None
        if not isinstance(value, str):
            raise ValueError(f"Expected `{name}` to be a regex string or null but received {value!r}")
        try:
            re.compile(value)
        except re.error as exc:
            raise ValueError(f"Expected `{name}` to be a valid regex but received {value!r}: {exc}") from exc
        return value
    raise ValueError(f"Unknown setting {name!r}; expected one of {sorted(Settings.__dataclass_fields__)}")
