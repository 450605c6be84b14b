"""A compact in-memory index of recipient addresses for ``WHERE rcpt=...``.

The core keeps no addresses as objects (a million would cost ~60 MB); without an
index a ``rcpt=`` filter would read every control file. This index keeps, per pending
recipient loaded:

* two 32-bit keys (:func:`spool.filters.address_keys`: the local part and the domain),
  8 bytes, for globs with a literal local part or domain (``rcpt=ann@*``): a C-speed
  ``bytearray.find`` of the key (:meth:`RcptIndex.lookup`);
* its address itself, lower case, one line each, zlib-compressed per segment of
  :data:`SEGMENT` recipients once the segment is full (a few bytes per recipient), for
  every other glob and substring (``rcpt=*ann*``, ``rcpt~ann``):
  :meth:`RcptIndex.search` decompresses one segment at a time and finds the lines with
  ``bytes.find`` of the pattern's longest literal part, or a ``re.M`` bytes regex when
  that part is common in the segment, then tests each line with the term itself.

Per message it keeps its number and, in a segment where some message has more than
one recipient, where its entries start: 8 or 12 bytes in flat byte arrays that the garbage collector never walks. All hits are
*candidates* only: the caller reads their control files to check (a key may collide, a
recipient may be delivered since, a file name may be reused).

Entries are never updated in place. A message that leaves leaves stale entries behind;
:meth:`RcptIndex.compact` drops the entries of messages no longer loaded, one segment
at a time, once the index has grown to twice its size after the last compaction.
"""

from __future__ import annotations

import re
import sys
import zlib
from array import array
from bisect import bisect_right
from collections.abc import Callable, Iterator

from spool.filters import Term, text_search

__all__ = ["SEGMENT", "RcptIndex"]

SEGMENT = 4096
"""Entries (recipients) per segment: the unit of compaction and of compression
(~0.3 ms to compress, ~0.2 ms to decompress ~100 KB of addresses)."""
TEXT_LIMIT = 1 << 18
"""A segment is sealed (compressed) at this many bytes of addresses even if it holds
fewer than :data:`SEGMENT` recipients (long addresses)."""
LEVEL = 1  # zlib: 5-6x on typical addresses, 3x faster than the default level
COMMON = 64
"""Occurrences of the literal part in one segment above which a regex over the whole
segment is cheaper than a line-by-line look at each occurrence."""


class _Segment:
    """Entries (recipients) ``0..len-1``: key ``i`` is ``local[4i:4i+4]``, address
    ``i`` the text's line ``i``; message ``j`` (number ``nums[j]``) has the entries
    from ``starts[j]`` on (``starts`` None: one entry each, entry ``j``)."""

    __slots__ = ("dom", "local", "nums", "starts", "text", "z")

    def __init__(self) -> None:
        self.local = bytearray()  # 4-byte keys, one per recipient
        self.dom = bytearray()
        self.starts: array[int] | None = None  # None while every message has one
        self.nums = array("Q")  # message numbers
        self.text = bytearray()  # the addresses, each ending in b"\n" (open segment)
        self.z: bytes | None = None  # the text compressed (a sealed segment)

    def __len__(self) -> int:
        return len(self.local) >> 2

    def put(
        self, number: int, local: bytes | bytearray, dom: bytes | bytearray, text: bytes
    ) -> None:
        starts = self.starts
        if starts is None and len(local) != 4:
            starts = self.starts = array("I", range(len(self.nums)))
        if starts is not None:
            starts.append(len(self))
        self.nums.append(number)
        self.local += local
        self.dom += dom
        self.text += text

    def message(self, entry: int) -> int:
        """The index of the message that has ``entry``."""
        starts = self.starts
        return entry if starts is None else bisect_right(starts, entry) - 1

    def bounds(self, j: int) -> tuple[int, int]:
        """Message ``j``'s entries, ``[a, b)``."""
        starts = self.starts
        if starts is None:
            return j, j + 1
        return starts[j], starts[j + 1] if j + 1 < len(starts) else len(self)

    def plain(self) -> bytes:
        return zlib.decompress(self.z) if self.z is not None else bytes(self.text)

    def seal(self) -> None:
        if self.z is None:
            self.z = zlib.compress(self.text, LEVEL)
            self.text = bytearray()

    def full(self) -> bool:
        return len(self) >= SEGMENT or len(self.text) >= TEXT_LIMIT


class RcptIndex:
    """Address keys and addresses of pending recipients, by message number (see
    module doc)."""

    __slots__ = ("_carry", "_cursor", "_limit", "_min", "_segs", "entries")

    def __init__(self, limit: int = 1 << 16) -> None:
        self._segs: list[_Segment] = [_Segment()]
        self.entries = 0
        self._min = self._limit = limit
        self._cursor = -1  # the next segment to compact, -1: no pass under way
        self._carry: _Segment | None = None  # the open segment that gathers, before it

    def add(self, number: int, local: bytes, dom: bytes, text: bytes) -> None:
        """One message's recipients: keys as ``array("I")`` bytes (native byte order)
        and the addresses, lower case, each ending in a newline (as
        :func:`spool.filters.control_keys` gives them)."""
        if not local:
            return
        seg = self._segs[-1]
        if seg.full():
            seg.seal()
            seg = _Segment()
            self._segs.append(seg)
        seg.put(number, local, dom, text)
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
                yield seg.nums[seg.message(pos >> 2)]
                pos = buf.find(kb, pos + 4)

    def count(self, part: str, key: int) -> int:
        """About how many recipients :meth:`lookup` would find (C speed; may count
        a few more: a key's bytes across two keys)."""
        kb = key.to_bytes(4, sys.byteorder)
        return sum(
            (s.local if part == "local" else s.dom).count(kb) for s in list(self._segs)
        )

    def search(self, term: Term) -> Iterator[int | None]:
        """Numbers of messages with a recipient address that ``term`` (``rcpt=`` glob
        or ``rcpt~`` text) matches, as the index holds them; None after each segment
        (the caller may yield to its loop: a segment is well under a millisecond of
        work unless most of its lines match). A number may come more than once."""
        literal, regex = text_search(term)
        for seg in list(self._segs):
            if len(seg):
                yield from _hits(seg, seg.plain(), term, literal, regex)
            yield None

    @property
    def bytes_used(self) -> int:
        return sum(
            len(s.local) * 2
            + len(s.text)
            + len(s.z or b"")
            + 8 * len(s.nums)
            + 4 * len(s.starts or ())
            for s in self._segs
        )

    def compact(self, alive: Callable[[int], bool], budget: int = 4) -> bool:
        """Drop the entries of messages ``alive`` says are gone, in at most ``budget``
        segments; True while a pass is under way (call again later). What is left of
        neighbours is gathered into one segment until it is full, then sealed (a step
        is ~1 ms a segment: decompress, copy, compress)."""
        if self._cursor < 0:
            if self.entries <= self._limit:
                return False
            self._cursor = 0
            self._carry = None
        segs = self._segs
        while budget > 0 and self._cursor < len(segs) - 1:  # the last one still fills
            budget -= 1
            cur = self._cursor
            out = self._filtered(segs[cur], alive)
            carry = self._carry
            if carry is not None and _fits(carry, out):
                _extend(carry, out)  # in place: a search holds no offsets past its end
                del segs[cur]
            elif not len(out):
                del segs[cur]
            else:
                if carry is not None:
                    carry.seal()
                segs[cur] = self._carry = out
                self._cursor = cur + 1
        if self._cursor < len(segs) - 1:
            return True
        if self._carry is not None:
            self._carry.seal()
        self._carry = None
        self.entries = sum(len(s) for s in segs)
        self._limit = max(self._min, 2 * self.entries)
        self._cursor = -1
        return False

    @staticmethod
    def _filtered(seg: _Segment, alive: Callable[[int], bool]) -> _Segment:
        """A new open segment of ``seg``'s live messages."""
        out = _Segment()
        lines = seg.plain().splitlines(keepends=True)
        local, dom = seg.local, seg.dom
        for j, number in enumerate(seg.nums):
            if alive(number):
                a, b = seg.bounds(j)
                text = b"".join(lines[a:b])
                out.put(number, local[a * 4 : b * 4], dom[a * 4 : b * 4], text)
        return out


def _fits(into: _Segment, seg: _Segment) -> bool:
    return (
        len(into) + len(seg) <= SEGMENT and len(into.text) + len(seg.text) <= TEXT_LIMIT
    )


def _extend(into: _Segment, seg: _Segment) -> None:
    """Append an open segment to another open one."""
    if into.starts is not None or seg.starts is not None:
        if into.starts is None:
            into.starts = array("I", range(len(into.nums)))
        base = len(into)
        more = seg.starts if seg.starts is not None else range(len(seg.nums))
        into.starts.extend(base + s for s in more)
    into.nums.extend(seg.nums)
    into.local += seg.local
    into.dom += seg.dom
    into.text += seg.text


def _hits(
    seg: _Segment,
    text: bytes,
    term: Term,
    literal: bytes,
    regex: re.Pattern[bytes],
) -> list[int]:
    """The numbers of ``seg``'s messages with a line of ``text`` that ``term``
    matches (computed at once: the segment may be replaced while the caller waits).
    Lines are found in increasing order, so each one's index (its entry) is counted
    from the previous one's."""
    out: list[int] = []
    nums, count, entries = seg.nums, text.count, len(seg)
    last = -1  # the message last added
    cpos = cline = 0  # a line's start, and its index
    pos = 0
    if literal:  # each occurrence's line, while they are few
        find = text.find
        seen = 0
        at = find(literal)
        while at >= 0 and seen < COMMON:
            seen += 1
            start = text.rfind(b"\n", 0, at) + 1
            end = find(b"\n", at)
            if end < 0:
                end = len(text)
            cline += count(b"\n", cpos, start)
            cpos = start
            if cline >= entries:
                return out  # more lines than entries: not from control_keys
            j = seg.message(cline)
            if j != last and _line_matches(term, text[start:end]):
                out.append(nums[j])
                last = j
            pos = end
            at = find(literal, end)
        if at < 0:
            return out
    for m in regex.finditer(text, pos):  # common: the regex over the rest
        start = m.start()
        cline += count(b"\n", cpos, start)
        cpos = start
        if cline >= entries:
            break
        j = seg.message(cline)
        if j != last and _line_matches(term, m.group()):
            out.append(nums[j])
            last = j
    return out


def _line_matches(term: Term, line: bytes) -> bool:
    return term.text_matches(line.decode("utf-8", "surrogateescape"))
