"""The usual control file, read in a few string operations: the startup load's fast path.

A router writes ``@ i o l [e] s``, then one run of ``r`` lines with status ``' '`` and
blank slots (format flags 3 or 7), then one ``m`` block that ends the file. For such a
file :func:`parse_plain` gives what the loading reads of :func:`spool.controlfile.parse`
(``mid``, ``log_id``, ``flags``, ``report_sender``, no diagnostics, ETRN or obsoleted
files, and :meth:`PlainControl.pending_summary`) without building a
:class:`~spool.controlfile.ControlFile`; anything else gives None, and the caller parses
the file. The fields come from the same functions as the parser's, so the two agree on
every file that is plain (a differential test checks it on generated files). Pure:
bytes in, values out.
"""

from __future__ import annotations

from typing import Final

from spool.controlfile import _HEAD
from spool.ctlrecords import SummaryRow
from spool.fastparse import _SPECIAL, _plain_lines, _plain_rows, find_run
from spool.quads import zm_sender_address

__all__ = ["PlainControl", "Solo", "parse_plain", "parse_solo"]

_SLOT: Final = 12
"""Format flags 3 and 7: a PID slot and a delay slot on every ``r`` line."""
_BLANK_R: Final = "r" + " " * (_SLOT - 1)
"""An ``r`` line with status ``' '`` and blank slots, up to its quad."""

Solo = tuple[str, str, int, str, str, str, int]
"""``(mid, report_sender, offset, quad, channel, host, header offset)`` of a plain file
with one recipient (:func:`parse_solo`)."""


class PlainControl:
    """What the loading reads of a plain control file's :class:`ControlFile`."""

    __slots__ = ("_rows", "flags", "log_id", "mid", "report_sender")
    diagnostics: tuple[()] = ()
    etrn: tuple[()] = ()
    obsoletes: tuple[()] = ()
    prepared_split: None = None  # (split_recipients looks for one)

    def __init__(
        self,
        mid: str,
        log_id: str,
        flags: int,
        report_sender: str,
        rows: list[SummaryRow],
    ) -> None:
        self.mid = mid
        self.log_id = log_id
        self.flags = flags
        self.report_sender = report_sender
        self._rows = rows

    def pending_summary(self) -> list[SummaryRow]:
        """As :meth:`spool.controlfile.ControlFile.pending_summary` (every recipient
        is pending)."""
        return self._rows


def parse_plain(data: bytes) -> PlainControl | None:
    """The plain file's values; None for any other file (parse it)."""
    if not data or data[-1] != 10 or not data.isascii():
        return None
    text = data.decode("ascii")
    head = _HEAD(text)
    if head is None:
        return None
    flags = int(head[1])
    if flags & 3 != 3:
        return None
    pos = head.end()
    if not text.startswith("r", pos):
        return None
    run = find_run(text, pos, _SLOT, flags)
    if run is None or not run[5]:
        return None  # not every line blank, or no m block after the run
    end = run[1]
    if not text.startswith("m\n", end) or text.find("\n\n", end) + 2 != len(text):
        return None  # the m block must end the file
    lines = _plain_lines(text, run)
    if lines is None:
        return None
    rows: list[SummaryRow] = []
    _plain_rows(lines, run, end + 2, rows)
    return PlainControl(head[2], head[4], flags, zm_sender_address(head[5]), rows)


def parse_solo(data: bytes) -> Solo | None:
    """The values of a plain file (:func:`parse_plain`) with exactly one recipient
    whose quad is four blank-separated words, none empty, without quotes, escapes,
    lists or TABs, and neither channel nor host ``-``: the startup load's usual file,
    read without building rows or objects. The channel and host are as written (not
    lower-cased). None for any other file (call :func:`parse_plain`)."""
    if not data or data[-1] != 10:
        return None
    first = data.find(b"\nr")  # the m line after the first r line, or None at once
    if not data.startswith(b"m\n", data.find(b"\n", first + 1) + 1):
        return None  # (a file with several recipients costs two finds)
    if not data.isascii():
        return None
    text = data.decode("ascii")
    head = _HEAD(text)
    if head is None or int(head[1]) & 3 != 3:
        return None
    pos = head.end()
    if not text.startswith(_BLANK_R, pos):
        return None
    end = text.find("\n", pos) + 1  # the file ends in LF: found
    if not text.startswith("m\n", end) or text.find("\n\n", end) + 2 != len(text):
        return None  # one r line, then the m block that ends the file
    quad = text[pos + _SLOT : end - 1]
    words = quad.split(" ")
    if len(words) != 4 or "" in words or words[0] == "-" or words[1] == "-":
        return None
    for c in _SPECIAL:
        if c in quad:
            return None
    return (
        head[2],
        zm_sender_address(head[5]),
        pos,
        quad,
        words[0],
        words[1],
        end + 2,
    )
