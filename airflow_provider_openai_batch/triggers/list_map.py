"""What the status board knows about the order of ``GET /batches``, and the cheapest reads it implies (pure).

The list is newest first and only ever grows at the top: a batch is never removed and never moves relative
to the batches older than it. So a stretch of the list, once read, stays true for good: the page
``after=X`` returns the same ids forever (only their statuses change). :class:`ListMap` keeps one such
stretch, from the newest id read from the top (``head``) down to the deepest one read (``tail``), numbered
by an ordinal that grows towards older batches. :meth:`ListMap.plan` covers the watched batches inside the
stretch with the fewest reads: a page anchored just above each run of batches that fit in one page, a
retrieve for a batch alone; batches outside the stretch are found by reading down from the top
(:meth:`ListMap.learn_top`) and then below the tail (:meth:`ListMap.learn_after`). A batch is only ever
judged "not in the list" or "deeper than the page cap" after a read of that whole range, never from a
read that skipped it, so a trigger that registers while a refresh runs is never misjudged.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Window:
    """One list page ``after=anchor`` (the top page for None) expected to hold ``expected``, newest first."""

    anchor: str | None
    expected: tuple[str, ...]


@dataclass(frozen=True)
class Plan:
    """The reads of one refresh for the batches whose place is known; ``unknown`` need discovery."""

    windows: tuple[Window, ...]
    retrieves: tuple[str, ...]
    unknown: tuple[str, ...]

    @property
    def calls(self) -> int:
        return len(self.windows) + len(self.retrieves)


@dataclass
class ListMap:
    """A contiguous stretch of the batch list, from ``head`` (newest read) to ``tail`` (oldest read).

    :param page_size: items per list page (``limit``).
    :param max_pages: how deep, in pages below the head, the map reaches; older batches are retrieved.
    """

    page_size: int = 100
    max_pages: int = 100
    _ord: dict[str, int] = field(default_factory=dict)
    _ids: dict[int, str] = field(default_factory=dict)
    head: int = 0
    tail: int = -1
    #: The tail is the oldest batch of the whole list.
    end_reached: bool = False
    #: Proven older than the map's reach: a read from the top to ``max_pages`` did not hold them.
    deep: set[str] = field(default_factory=set)
    #: Proven absent: the whole list was read and they were not in it (listed elsewhere, or not at all).
    unlisted: set[str] = field(default_factory=set)
    resets: int = 0

    def __len__(self) -> int:
        return len(self._ord)

    def __contains__(self, batch_id: object) -> bool:
        return batch_id in self._ord

    @property
    def tail_id(self) -> str | None:
        return self._ids.get(self.tail)

    def position(self, batch_id: str) -> int | None:
        """Items newer than ``batch_id`` as of the last read from the top (None when not in the map)."""
        o = self._ord.get(batch_id)
        return None if o is None else o - self.head

    # -- planning ------------------------------------------------------------------------------------

    def plan(self, batch_ids: Iterable[str]) -> Plan:
        """Fewest reads for ``batch_ids``: greedy pages over the known ones, retrieves for the rest."""
        known: list[tuple[int, str]] = []
        retrieves: list[str] = []
        unknown: list[str] = []
        for batch_id in batch_ids:
            o = self._ord.get(batch_id)
            if o is not None:
                known.append((o, batch_id))
            elif batch_id in self.deep or batch_id in self.unlisted:
                retrieves.append(batch_id)
            else:
                unknown.append(batch_id)
        known.sort()
        ords = [o for o, _ in known]
        windows: list[Window] = []
        i = 0
        while i < len(known):
            # Starting a page just above the first uncovered batch covers the most of them: the fewest
            # pages cover every batch (interval covering), and a page holding one batch is a retrieve.
            o = ords[i]
            j = bisect.bisect_right(ords, o + self.page_size - 1, lo=i)
            if j - i >= 2:
                # Above the head nothing is known: read the top page, which still holds the head unless a
                # page's worth of batches was created since (those left out are retrieved).
                windows.append(
                    Window(self._ids.get(o - 1) if o > self.head else None, tuple(b for _, b in known[i:j]))
                )
                i = j
            else:
                retrieves.append(known[i][1])  # alone in its page: a page would cost the same
                i += 1
        return Plan(tuple(windows), tuple(retrieves), tuple(unknown))

    def should_discover(self, pages_read: int, unknown_left: int) -> bool:
        """Read one more page looking for ``unknown_left`` batches after ``pages_read`` this refresh?

        A page is worth reading while it could still save a retrieve: stop once the pages spent plus this
        one reach the retrieves left (so discovery never costs more than twice retrieving, and a single
        unknown batch is just retrieved), or when the map reaches its depth cap or the end of the list.
        """
        if pages_read + 1 >= unknown_left:
            return False
        return self.tail - self.head + 1 < self.max_pages * self.page_size or not self._ord

    # -- learning ------------------------------------------------------------------------------------

    def learn_top(self, ids: Sequence[str], has_more: bool) -> bool:
        """Learn consecutive pages read from the top of the list; True if they joined the known stretch.

        When they do not reach the head (more batches were created since the last read than were read
        now), the stretch cannot be placed relative to them and the map starts over from them.
        """
        joined = next((i for i, b in enumerate(ids) if b in self._ord), None)
        if joined is None:
            self.reset()
            self._extend(0, ids)
            self.head, self.tail = 0, len(ids) - 1
            self.end_reached = not has_more
            return False
        base = self._ord[ids[joined]] - joined
        if not self._consistent(base, ids):
            self.reset()
            return self.learn_top(ids, has_more)
        self._extend(base, ids)
        self.head = min(self.head, base)
        self._trim()
        return True

    def learn_after(self, anchor: str, ids: Sequence[str], has_more: bool) -> bool:
        """Learn a page read ``after=anchor``; False (and the map starts over) if it contradicts the map."""
        o = self._ord.get(anchor)
        if o is None:
            return False
        if not self._consistent(o + 1, ids):
            self.reset()
            return False
        self._extend(o + 1, ids)
        if not has_more and o + len(ids) >= self.tail:
            self.end_reached = True
        self._trim()
        return True

    def judge_missing(self, batch_ids: Iterable[str], read_from_top: bool) -> None:
        """After a refresh that read from the top down to the tail, file the batches it did not find.

        Only ids watched before the refresh started may be passed: they existed during the whole read.
        """
        if not read_from_top:
            return
        for batch_id in batch_ids:
            if batch_id in self._ord:
                continue
            if self.end_reached:
                self.unlisted.add(batch_id)
            elif self.tail - self.head + 1 >= self.max_pages * self.page_size:
                self.deep.add(batch_id)

    def forget(self, batch_ids: Iterable[str]) -> None:
        """No longer watched: drop the judgements (the map itself stays, it is about the list)."""
        for batch_id in batch_ids:
            self.deep.discard(batch_id)
            self.unlisted.discard(batch_id)

    # -- internals -----------------------------------------------------------------------------------

    def _consistent(self, base: int, ids: Sequence[str]) -> bool:
        for i, batch_id in enumerate(ids):
            o = self._ord.get(batch_id)
            if o is not None and o != base + i:
                return False
            if o is None and self.head <= base + i <= self.tail:
                return False  # a batch appeared inside a stretch that cannot change
        return True

    def _extend(self, base: int, ids: Sequence[str]) -> None:
        for i, batch_id in enumerate(ids):
            self._ord[batch_id] = base + i
            self._ids[base + i] = batch_id
        if ids:
            self.tail = max(self.tail, base + len(ids) - 1)

    def _trim(self) -> None:
        """Keep the map within ``max_pages`` below the head: memory stays bounded as the list grows."""
        limit = self.head + self.max_pages * self.page_size - 1
        if self.tail <= limit:
            return
        for o in range(limit + 1, self.tail + 1):
            batch_id = self._ids.pop(o, None)
            if batch_id is not None:
                self._ord.pop(batch_id, None)
        self.tail, self.end_reached = limit, False

    def reset(self) -> None:
        """Forget the stretch (a read contradicted it); the judgements stay true of the list."""
        self.resets += bool(self._ord)
        self._ord.clear()
        self._ids.clear()
        self.head, self.tail, self.end_reached = 0, -1, False
