"""What is wrong with an input, as the user reads it: each invalid line by number and field, the first
:data:`MAX_PROBLEMS` kept and all counted, raised as :class:`InvalidRequestsError` before anything is uploaded.
The checks that find the problems live in :mod:`.validation` and :mod:`.duplicates`.
"""

from __future__ import annotations

from array import array
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

MAX_PROBLEMS = 20
"""How many problems :class:`InvalidRequestsError` keeps (``total`` still counts them all)."""


@dataclass(frozen=True)
class Problem:
    """One invalid request line.

    :param line: 1-based physical line number in the input (blank lines count); for an iterable
        source, the item's 1-based position. 0 means the input as a whole.
    :param field: the offending field (``custom_id``, ``method``, ``url``, ``body``, ``body.model``,
        ``body.input``), or None when the line as a whole is bad (not UTF-8, not JSON, too large).
    :param message: what was expected and what was received.
    """

    line: int
    field: str | None
    message: str

    def __str__(self) -> str:
        where = "input" if self.line == 0 else f"line {self.line}"
        if self.field is not None:
            where += f", field {self.field!r}"
        return f"{where}: {self.message}"


class InvalidRequestsError(ValueError):
    """The requests did not pass validation; nothing was uploaded and no shard file was left behind.

    :param source: name of the input, as shown to the user (e.g. ``requests.jsonl`` or an S3 URL).
    :param problems: the first problems, in line order (at most :data:`MAX_PROBLEMS` are kept).
    :param total: how many invalid lines the input has in all.

    Constructed with only a message (as Airflow's exception deserialization does), it keeps that
    message and has no problems.
    """

    def __init__(self, source: str, problems: Iterable[Problem] | None = None, total: int | None = None):
        if problems is None and total is None:
            message = source
            problems = ()
        self.source = source
        self.problems: list[Problem] = list(problems or ())[:MAX_PROBLEMS]
        self.total = len(self.problems) if total is None else total
        if total is not None or self.problems:
            message = self._format()
        super().__init__(message)

    def _format(self) -> str:
        noun = "invalid request line" if self.total == 1 else "invalid request lines"
        head = f"{self.source}: {self.total} {noun} (showing {len(self.problems)}):"
        lines = [head, *(f"  {p}" for p in self.problems)]
        if self.total > len(self.problems):
            lines.append(f"  ... and {self.total - len(self.problems)} more")
        return "\n".join(lines)

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.source, self.problems, self.total))


def show(value: Any) -> str:
    """``repr`` of a received value, cut to 60 characters for messages."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


class ProblemLog:
    """The problems found so far: the first :data:`MAX_PROBLEMS`, how many in all, and which lines were skipped.

    ``skipped`` holds, for every line not spooled (blank or invalid), its position: how many requests were
    accepted before it. That maps a request's index back to its physical line number without keeping a
    number per request.
    """

    def __init__(self) -> None:
        self.first: list[Problem] = []
        self.total = 0
        self.skipped = array("q")

    def add(self, line: int, position: int, field: str | None, message: str) -> None:
        """Record an invalid line.

        :param line: its 1-based line number.
        :param position: how many requests were accepted before it.
        :param field: the offending field, or None for the line as a whole.
        :param message: what was expected and what was received.
        """
        self.total += 1
        if len(self.first) < MAX_PROBLEMS:
            self.first.append(Problem(line, field, message))
        self.skipped.append(position)

    def skip(self, position: int) -> None:
        """Record a blank line (tolerated, not a request) at ``position``."""
        self.skipped.append(position)
