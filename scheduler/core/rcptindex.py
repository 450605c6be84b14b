"""A compact in-memory index of recipient addresses for ``WHERE rcpt=...``.

The core keeps no addresses (a million would cost ~60 MB); a ``rcpt=`` filter would
have to read every control file. This index keeps, per pending recipient loaded, two
32-bit keys (:func:`spool.filters.address_keys`: the local part and the domain) and,
per message, its number: 8 bytes a recipient and 12 a message, in flat byte arrays
that the garbage collector never walks. A lookup is a C-speed ``bytearray.find`` of a
key; its hits are *candidates* only: the caller reads their control files to check
(a key may collide, a recipient may be delivered since, a file name may be reused).

Entries are never updated in place. A message that leaves leaves stale entries behind;
:meth:`RcptIndex.compact` drops the entries of messages no longer loaded, one segment
at a time, once the index has grown to twice its size after the last compaction.
"""

from __future__ import annotations

import sys
from array import array
from bisect import bisect_right
from collections.abc import Callable, Iterator

__all__ = ["SEGMENT", "RcptIndex"]

SEGMENT = 4096
"""Entries (recipients) per segment: the unit of compaction (~1 ms of work)."""


class _Segment:
    __slots__ = ("dom", "local", "nums", "starts")

    def __init__(self) -> None:
        self.local = bytearray()  # 4-byte keys, one per recipient
        self.dom = bytearray()
        self.starts = array("I")  # entry index where each message's entries start
        self.nums = array("Q")  # that message's number

    def __len__(self) -> int:
        return len(self.local) >> 2


class RcptIndex:
    """Address keys of pending recipients, by message number (see module doc)."""

    __slots__ = ("_cursor", "_limit", "_min", "_segs", "entries")

    def __init__(self, limit: int = 1 << 16) -> None:
        self._segs: list[_Segment] = [_Segment()]
        self.entries = 0
        self._min = self._limit = limit
        self._cursor = -1  # the next segment to compact, -1: no pass under way

    def add(self, number: int, local: bytes, dom: bytes) -> None:
        """One message's recipients' keys: ``array("I")`` bytes (native byte order)."""
        if not local:
            return
        seg = self._segs[-1]
        if len(seg) >= SEGMENT:
            seg = _Segment()
            self._segs.append(seg)
        seg.starts.append(len(seg))
        seg.nums.append(number)
        seg.local += local
        seg.dom += dom
        self.entries += len(local) >> 2

    def lookup(self, part: str, key: int) -> Iterator[int]:
        """Numbers of messages with a recipient whose ``part`` (``local`` or
        ``domain``) has ``key``; a number may come more than once."""
        kb = key.to_bytes(4, sys.byteorder)
        for seg in list(self._segs):
            buf = seg.local if part == "local" else seg.dom
            pos = buf.find(kb)
            while pos >= 0:
                if pos & 3:
                    pos = buf.find(kb, pos + 1)
                    continue
                yield seg.nums[bisect_right(seg.starts, pos >> 2) - 1]
                pos = buf.find(kb, pos + 4)

    @property
    def bytes_used(self) -> int:
        return sum(
            len(s.local) * 2 + s.starts.itemsize * len(s.starts) * 3 for s in self._segs
        )

    def compact(self, alive: Callable[[int], bool], budget: int = 4) -> bool:
        """Drop the entries of messages ``alive`` says are gone, in at most ``budget``
        segments; True while a pass is under way (call again later)."""
        if self._cursor < 0:
            if self.entries <= self._limit:
                return False
            self._cursor = 0
        segs = self._segs
        while budget > 0 and self._cursor < len(segs) - 1:  # the last one still fills
            segs[self._cursor] = self._filtered(segs[self._cursor], alive)
            self._cursor += 1
            budget -= 1
        if self._cursor < len(segs) - 1:
            return True
        # merge neighbours that shrank, drop empty ones
        merged: list[_Segment] = []
        for seg in segs[:-1]:
            if not len(seg):
                continue
            if merged and len(merged[-1]) + len(seg) <= SEGMENT:
                _append(merged[-1], seg)
            else:
                merged.append(seg)
        merged.append(segs[-1])
        self._segs = merged
        self.entries = sum(len(s) for s in merged)
        self._limit = max(self._min, 2 * self.entries)
        self._cursor = -1
        return False

    @staticmethod
    def _filtered(seg: _Segment, alive: Callable[[int], bool]) -> _Segment:
        out = _Segment()
        n = len(seg)
        starts, nums = seg.starts, seg.nums
        for i, number in enumerate(nums):
            if not alive(number):
                continue
            a = starts[i]
            b = starts[i + 1] if i + 1 < len(starts) else n
            out.starts.append(len(out))
            out.nums.append(number)
            out.local += seg.local[a * 4 : b * 4]
            out.dom += seg.dom[a * 4 : b * 4]
        return out


def _append(into: _Segment, seg: _Segment) -> None:
    base = len(into)
    into.starts.extend(base + s for s in seg.starts)
    into.nums.extend(seg.nums)
    into.local += seg.local
    into.dom += seg.dom
