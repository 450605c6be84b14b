"""The agenda: when each thread should next be looked at (SCHED-REF 4.2, S15/S16 fixed).

A min-heap keyed by time with lazy invalidation: rescheduling an item pushes a new entry and
bumps the item's ``agenda_seq``; stale entries are dropped when they reach the top. Every due
item is returned, so a far-future thread never blocks due ones behind it (S15).
"""

from __future__ import annotations

import heapq
import itertools
from typing import Generic, Protocol, TypeVar

__all__ = ["Agenda", "Schedulable"]


class Schedulable(Protocol):
    agenda_seq: int


T = TypeVar("T", bound=Schedulable)


class Agenda(Generic[T]):
    __slots__ = ("_counter", "_heap")

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, T]] = []
        self._counter = itertools.count(1)

    def __len__(self) -> int:
        return len(self._heap)

    def schedule(self, item: T, when: float) -> None:
        """(Re)schedule ``item`` at ``when``; an earlier entry for it is forgotten."""
        seq = next(self._counter)
        item.agenda_seq = seq
        heapq.heappush(self._heap, (when, seq, item))

    @staticmethod
    def cancel(item: T) -> None:
        item.agenda_seq = 0

    def _drop_stale(self) -> None:
        heap = self._heap
        while heap and heap[0][2].agenda_seq != heap[0][1]:
            heapq.heappop(heap)

    def next_time(self) -> float | None:
        self._drop_stale()
        return self._heap[0][0] if self._heap else None

    def pop_due(self, now: float) -> list[T]:
        """Every item due at ``now``, earliest first; they are no longer scheduled."""
        heap = self._heap
        due: list[T] = []
        while heap and heap[0][0] <= now:
            _when, seq, item = heapq.heappop(heap)
            if item.agenda_seq == seq:
                item.agenda_seq = 0
                due.append(item)
        return due

    def compact(self) -> None:
        """Drop stale entries (call when the heap grows much larger than the live set)."""
        self._heap = [e for e in self._heap if e[2].agenda_seq == e[1]]
        heapq.heapify(self._heap)
