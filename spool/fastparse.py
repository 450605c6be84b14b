"""The fast path's recipient index: runs of ``r`` lines, turned into recipients later.

:func:`spool.controlfile.parse` validates an ASCII control file in one pass and records
where its recipients are (:class:`RcptIndex`); the :class:`Recipient` objects (or the
loader's :data:`SummaryRow` tuples) are built from it only when they are asked for.
Pure: text in, records out.
"""

from __future__ import annotations

import re

from spool.ctlrecords import (
    DEFAULT_NOTIFY,
    Recipient,
    SummaryRow,
    apply_notify,
    notify_of,
    recipient_of,
)
from spool.quads import parse_quad

__all__ = ["RcptIndex", "Run", "find_run"]

_SLOTS = (2, 6, 8, 12)  # 2 + PID slot (6, flag 1) + delay slot (4, flag 2)
_RUN = {
    slot: re.compile(rf"(?:r[ ~+\-][^\n]{{{slot - 2},}}\n)+").match for slot in _SLOTS
}
"""A run of ``r`` lines with a known status and complete slots."""
_BLANK = {slot: "\nr" + " " * (slot - 1) for slot in _SLOTS}
"""The start of an ``r`` line with status ``' '`` and blank slots (with its LF before)."""
_MARKED = {
    slot: ("\nr+" + " " * (slot - 2), "\nr-" + " " * (slot - 2)) for slot in _SLOTS
}
_LOCKED = re.compile(r"^r~", re.M).search
_SPECIAL = ('"', "\\", "(", "\t")
"""Characters that send a quad through :func:`parse_quad`."""

Run = tuple[int, int, int, int, int, bool]
"""``start, end, slot, flags, line count, uniform``: a run of valid ``r`` lines;
uniform runs have status ``' '`` and blank slots on every line."""


class RcptIndex:
    """What :func:`_parse_fast` found out about the recipients, to build them later.

    ``segments`` are runs of ``r`` lines (:data:`Run`) and recipients of other lines,
    already built; ``heads`` holds ``(n, offset)`` per ``m`` block (recipients before the
    n-th get that header offset, if no earlier block claimed them); ``notes`` holds
    ``(recipient index, dsn_offset, value)`` per ``N`` line.
    """

    __slots__ = ("heads", "notes", "segments")

    def __init__(self) -> None:
        self.segments: list[Run | Recipient] = []
        self.heads: list[tuple[int, int]] = []
        self.notes: list[tuple[int, int, str]] = []

    def _head_offsets(self) -> list[int]:
        """The header offset of each segment (every line of a run has the same)."""
        out: list[int] = []
        heads, h, n = self.heads, 0, 0
        for seg in self.segments:
            while h < len(heads) and heads[h][0] <= n:
                h += 1
            out.append(heads[h][1] if h < len(heads) else -1)
            n += 1 if isinstance(seg, Recipient) else seg[4]
        return out

    def recipients(self, data: bytes) -> list[Recipient]:
        text = data.decode("ascii")
        out: list[Recipient] = []
        for seg, hdr in zip(self.segments, self._head_offsets(), strict=True):
            if isinstance(seg, Recipient):
                seg.header_offset = hdr
                out.append(seg)
                continue
            lines = _plain_lines(text, seg)
            if lines is None:
                rcpts = _each_line(text, seg)
                for rcpt in rcpts:
                    rcpt.header_offset = hdr
                out.extend(rcpts)
            else:
                _plain_recipients(lines, seg, hdr, out)
        for n, dsn, value in self.notes:
            rcpt = out[n]
            rcpt.dsn_offset = dsn
            apply_notify(value, rcpt)
        return out

    def summary(self, data: bytes) -> list[SummaryRow]:
        text = data.decode("ascii")
        rows: list[SummaryRow] = []
        skip: list[int] = []  # rows of recipients whose status is not ' '
        for seg, hdr in zip(self.segments, self._head_offsets(), strict=True):
            if not isinstance(seg, Recipient):
                lines = _plain_lines(text, seg)
                if lines is not None:
                    _plain_rows(lines, seg, hdr, rows)
                    continue
            for r in [seg] if isinstance(seg, Recipient) else _each_line(text, seg):
                if r.status != " ":
                    skip.append(len(rows))
                rows.append(
                    (r.offset, r.channel, r.host, r.quad, DEFAULT_NOTIFY, hdr, -1)
                )
        if self.notes:
            self._apply_notes(rows)
        if skip:
            gone = set(skip)
            rows = [row for i, row in enumerate(rows) if i not in gone]
        return rows

    def _apply_notes(self, rows: list[SummaryRow]) -> None:
        """Put the ``N`` lines into summary rows (one row per recipient, in order)."""
        for n, dsn, value in self.notes:
            off, ch, host, quad, notify, hdr, _ = rows[n]
            notify = notify_of(value, notify, None)[0]
            rows[n] = (off, ch, host, quad, notify, hdr, dsn)

    def has_locked(self, data: bytes) -> bool:
        text = data.decode("ascii")
        for seg in self.segments:
            if isinstance(seg, Recipient):
                if seg.status == "~":
                    return True
            elif not seg[5] and _LOCKED(text, seg[0], seg[1]):
                return True
        return False


def _each_line(text: str, run: Run) -> list[Recipient]:
    """The recipients of a run, line by line (header offsets not set)."""
    start, end, slot, flags, _, _ = run
    out: list[Recipient] = []
    pos = start
    for line in text[start : end - 1].split("\n"):
        rcpt = recipient_of(line, pos, slot, flags, False)
        assert isinstance(rcpt, Recipient)  # the run was validated
        out.append(rcpt)
        pos += len(line) + 1
    return out


def _plain_lines(text: str, run: Run) -> list[str] | None:
    """The lines (without LF) of a uniform run without quotes, escapes, host lists or
    tabs anywhere; None for any other run."""
    start, end, _, _, _, uniform = run
    if not uniform:
        return None
    for c in _SPECIAL:
        if text.find(c, start, end) >= 0:
            return None
    return text[start : end - 1].split("\n")


def _plain_recipients(
    lines: list[str], run: Run, hdr: int, out: list[Recipient]
) -> None:
    """Append the recipients of :func:`_plain_lines` (status ``' '``, no PID)."""
    add = out.append
    off, slot = run[0], run[2]
    for line in lines:
        quad = line[slot:]
        qp = quad.split(" ")
        if len(qp) == 4 and "" not in qp:
            ch, host, user, priv = qp
            if "-" in qp:
                ch, host, user, priv = ["" if v == "-" else v for v in qp]
        else:
            ch, host, user, priv = parse_quad(quad)
        add(
            Recipient(
                off,
                " ",
                None,
                ch,
                host,
                user,
                priv,
                quad,
                host != "",
                DEFAULT_NOTIFY,
                None,
                -1,
                hdr,
            )
        )
        off += len(line) + 1


def _plain_rows(lines: list[str], run: Run, hdr: int, out: list[SummaryRow]) -> None:
    """Append the summary rows of :func:`_plain_lines`. Without quotes and lists the
    channel and host are the first two blank-separated words of the quad."""
    add = out.append
    off, slot = run[0], run[2]
    for line in lines:
        quad = line[slot:]
        words = quad.split(" ", 2)
        if len(words) == 3 and words[0] and words[1]:
            ch, host = words[0], words[1]
            if ch == "-":
                ch = ""
            if host == "-":
                host = ""
        else:
            ch, host = parse_quad(quad)[:2]
        add((off, ch, host, quad, DEFAULT_NOTIFY, hdr, -1))
        off += len(line) + 1


def find_run(text: str, pos: int, slot: int, flags: int) -> Run | None:
    """The run of valid ``r`` lines starting at ``pos`` (None: not even one).

    The usual case, every line up to the ``m`` block with status ``' '``, ``+`` or
    ``-`` and blank slots, is checked by counting line starts; anything else by a
    regular expression."""
    block_end = text.find("\nm\n", pos - 1) + 1 if pos else 0
    if block_end > 0:
        lines = text.count("\n", pos, block_end)
        blank = text.count(_BLANK[slot], pos - 1, block_end)
        if blank == lines:
            return pos, block_end, slot, flags, lines, True
        done, failed = _MARKED[slot]
        marked = text.count(done, pos - 1, block_end)
        marked += text.count(failed, pos - 1, block_end)
        if blank + marked == lines:
            return pos, block_end, slot, flags, lines, False
    match = _RUN[slot](text, pos)
    if match is None:
        return None
    end = match.end()
    return pos, end, slot, flags, text.count("\n", pos, end), False
