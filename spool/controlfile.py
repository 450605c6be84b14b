"""Transport control files ("ctlfiles"), parsed and formatted as bytes (MQ2-REF 12.3-12.5).

Pure: bytes in, objects out, no I/O. Offsets are byte offsets from the start of the file,
the way ZMailer's scheduler and transport agents address lines. ``format(parse(data))``
gives back ``data`` byte for byte for everything ``parse`` accepts.

The parser is the scheduler's hot path (a million recipients at startup): it validates
the whole file in one pass, checks each run of plain ``r`` lines with one regular
expression, and builds :class:`Recipient` objects only when they are asked for.
"""

from __future__ import annotations

import re

from spool.ctlrecords import (
    DEFAULT_NOTIFY,
    FLAG_DELAY,
    FLAG_MIMESTRUCT,
    FLAG_PID,
    KNOWN_FLAGS,
    TAGS,
    TEXT_ENCODING,
    TEXT_ERRORS,
    Diagnostic,
    Line,
    Recipient,
    SummaryRow,
    apply_notify,
    diagnostic_of,
    recipient_of,
    utf8_value,
)
from spool.errors import CorruptControlFile
from spool.fastparse import RcptIndex, find_run
from spool.quads import format_quad, parse_host, parse_quad, zm_sender_address

__all__ = [
    "DEFAULT_NOTIFY",
    "FLAG_DELAY",
    "FLAG_MIMESTRUCT",
    "FLAG_PID",
    "KNOWN_FLAGS",
    "TAGS",
    "ControlFile",
    "Diagnostic",
    "Line",
    "Recipient",
    "SummaryRow",
    "format",
    "format_diagnostic",
    "format_quad",
    "format_recipient_line",
    "index_lines",
    "parse",
    "parse_host",
    "parse_quad",
]

_CHR = [chr(i) for i in range(256)]

_FIELDS = (
    "data",
    "flags",
    "mid",
    "body_offset",
    "log_id",
    "error_address",
    "is_error_message",
    "sender",
    "recipients",
    "diagnostics",
    "etrn",
    "verbose_file",
    "ret",
    "envid",
    "obsoletes",
)


class ControlFile:
    """Everything the scheduler and the tools take from one control file.

    ``data`` is the file as parsed. ``lines`` (the line index, MQ2-REF 12.5) is built
    from it on first use, which keeps it off the scheduler's loading path; assigning
    ``lines`` (or editing its entries) changes what :func:`format` produces.

    :func:`parse` validates every line at once but builds the :class:`Recipient`
    objects only when ``recipients`` is first read (then they are kept);
    :meth:`pending_summary` gives the loader plain tuples without building them.
    """

    __slots__ = (
        "_index",
        "_lines",
        "_recipients",
        "body_offset",
        "data",
        "diagnostics",
        "envid",
        "error_address",
        "etrn",
        "flags",
        "is_error_message",
        "log_id",
        "mid",
        "obsoletes",
        "report_sender",
        "ret",
        "sender",
        "verbose_file",
    )

    data: bytes
    flags: int
    mid: str | None
    body_offset: int | None
    log_id: str | None
    error_address: str
    is_error_message: bool
    sender: tuple[str, str, str, str] | None
    diagnostics: list[Diagnostic]
    etrn: list[str]
    verbose_file: str | None
    ret: str | None
    envid: str | None
    obsoletes: list[str]
    report_sender: str
    """The sender as ZMailer's scheduler shows it (SHOW THREAD field 3, ``mailq -v``):
    the last ``e`` value or the ``s`` line's address token as written (quotes and a
    ``-`` kept; ``""`` for the ``error`` channel)."""
    _recipients: list[Recipient] | None
    _index: RcptIndex | None
    _lines: list[Line] | None

    def __init__(
        self,
        lines: list[Line] | None = None,
        flags: int = 0,
        mid: str | None = None,
        body_offset: int | None = None,
        log_id: str | None = None,
        error_address: str = "",
        is_error_message: bool = False,
        sender: tuple[str, str, str, str] | None = None,
        recipients: list[Recipient] | None = None,
        diagnostics: list[Diagnostic] | None = None,
        etrn: list[str] | None = None,
        verbose_file: str | None = None,
        ret: str | None = None,
        envid: str | None = None,
        obsoletes: list[str] | None = None,
        *,
        data: bytes | None = None,
        report_sender: str | None = None,
    ) -> None:
        if data is None:
            data = b"".join([line.raw for line in lines or ()])
        self.data = data
        self._lines = lines
        self.flags = flags
        self.mid = mid
        self.body_offset = body_offset
        self.log_id = log_id
        self.error_address = error_address
        self.is_error_message = is_error_message
        self.sender = sender
        self._recipients = [] if recipients is None else recipients
        self._index = None
        self.diagnostics = [] if diagnostics is None else diagnostics
        self.etrn = [] if etrn is None else etrn
        self.verbose_file = verbose_file
        self.ret = ret
        self.envid = envid
        self.obsoletes = [] if obsoletes is None else obsoletes
        self.report_sender = error_address if report_sender is None else report_sender

    def __repr__(self) -> str:
        inner = ", ".join(f"{name}={getattr(self, name)!r}" for name in _FIELDS)
        return f"ControlFile({inner})"

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        return all(getattr(self, n) == getattr(other, n) for n in _FIELDS)

    __hash__ = None  # type: ignore[assignment]  # mutable, like the dataclass it was

    @property
    def recipients(self) -> list[Recipient]:
        """One :class:`Recipient` per ``r`` line, in file order (built on first use)."""
        rcpts = self._recipients
        if rcpts is None:
            assert self._index is not None
            rcpts = self._recipients = self._index.recipients(self.data)
            self._index = None
        return rcpts

    @recipients.setter
    def recipients(self, recipients: list[Recipient]) -> None:
        self._recipients = recipients
        self._index = None

    def pending_summary(self) -> list[SummaryRow]:
        """``(offset, channel, host, quad, notify, header_offset, dsn_offset)`` for every
        recipient with status ``' '``, in file order, as in :class:`Recipient` (values as
        in the file; ``host == ""`` exactly when ``host_ok`` is False). Cheaper than
        ``recipients`` when those have not been built yet."""
        if self._index is not None:
            return self._index.summary(self.data)
        return [
            (
                r.offset,
                r.channel,
                r.host,
                r.quad,
                r.notify,
                r.header_offset,
                r.dsn_offset,
            )
            for r in self.recipients
            if r.status == " "
        ]

    @property
    def has_locked_recipients(self) -> bool:
        """True if some recipient has status ``~`` (locked by a process)."""
        if self._index is not None:
            return self._index.has_locked(self.data)
        return any(r.status == "~" for r in self.recipients)

    @property
    def lines(self) -> list[Line]:
        """The line index: one :class:`Line` per line, ``m``/``M`` blocks as one."""
        if self._lines is None:
            self._lines = index_lines(self.data)
        return self._lines

    @lines.setter
    def lines(self, lines: list[Line]) -> None:
        self._lines = lines

    def header_block(self, header_offset: int) -> bytes:
        """The header text of the ``m`` block whose first header byte is at
        ``header_offset`` (the headers with their LFs, without the empty line)."""
        for line in self.lines:
            if line.offset + 2 == header_offset and line.tag == "m":
                return line.raw[2:-1]
        raise KeyError(f"no m block at offset {header_offset}")

    def recipient_at(self, offset: int) -> Recipient:
        """The recipient whose ``r`` is at ``offset`` (:class:`KeyError` if none)."""
        for rcpt in self.recipients:
            if rcpt.offset == offset:
                return rcpt
        raise KeyError(f"no recipient at offset {offset}")

    @property
    def pending(self) -> list[Recipient]:
        """Recipients with status ``' '`` (not done, not locked)."""
        return [r for r in self.recipients if r.status == " "]


def index_lines(data: bytes) -> list[Line]:
    """The line index of a control file that :func:`parse` accepted."""
    out: list[Line] = []
    add = out.append
    find = data.find
    pos, n = 0, len(data)
    while pos < n:
        tag = data[pos]
        if tag == 109 or tag == 77:  # m, M (an unterminated block runs to the end)
            end = find(b"\n\n", pos) + 2
            if end < 2:
                end = n
            add(Line(_CHR[tag], "\n", pos, data[pos:end]))
        else:
            end = find(b"\n", pos) + 1
            status = _CHR[data[pos + 1]] if pos + 1 < n else "\n"
            add(Line(_CHR[tag], status, pos, data[pos:end]))
        pos = end
    return out


# ---------------------------------------------------------------------------- format


def format_recipient_line(quad: str) -> bytes:
    """A fresh ``r`` line as the router writes it: status, PID and delay slots blank."""
    return b"r" + b" " + b" " * 10 + quad.encode(TEXT_ENCODING, TEXT_ERRORS) + b"\n"


def format_diagnostic(
    rcpt_offset: int,
    header_offset: int,
    dsn_offset: int,
    time: int,
    notary: str,
    message: str,
    status: str = " ",
) -> bytes:
    """A ``d`` line (SCHED-REF 6.1). LFs become CRs (as ZMailer's TAs do) and TABs in
    the notary become blanks, so the line always parses back to the same fields."""
    if len(status) != 1 or status == "\n":
        raise ValueError(f"bad diagnostic status {status!r}")
    notary = notary.replace("\n", "\r").replace("\t", " ")
    message = message.replace("\n", "\r")
    text = f"d{status}{rcpt_offset}:{header_offset}:{dsn_offset}::{time}\t{notary}\t{message}\n"
    return text.encode(TEXT_ENCODING, TEXT_ERRORS)


# ---------------------------------------------------------------------------- parse


def parse(data: bytes, path: str = "<memory>") -> ControlFile:
    """Parse a whole control file; raise :class:`CorruptControlFile` for an empty file,
    one without a final LF, unknown format bits or unreadable numbers. What ZMailer's
    scheduler reads past is read past here too (issue 12): blank and status-less lines,
    unknown tags and ``r`` lines with an unknown status are skipped, a header block
    without its empty line runs to the end of the file.

    An ASCII file is validated in one pass in which runs of plain ``r`` lines (four
    unquoted fields) are checked by one regular expression each; their
    :class:`Recipient` objects are built when ``recipients`` is first read. Anything
    else (a corrupt file, non-ASCII bytes) goes through the line-by-line parser, which
    gives the exact error.
    """
    if data and data[-1] == 10 and data.isascii():
        cf = _parse_fast(data)
        if cf is not None:
            return cf
    return _parse_exact(data, path)


def _parse_exact(data: bytes, path: str) -> ControlFile:
    """The reference parser: line by line, exact errors, any bytes.

    The file is decoded once (ASCII, or latin-1 so that string offsets stay byte
    offsets) and split once; values of non-ASCII files are re-decoded as UTF-8
    (surrogateescape) one by one.
    """
    if not data:
        raise CorruptControlFile(path, 1, "empty file")
    if data[-1] != 10:
        where = data.count(b"\n") + 1
        raise CorruptControlFile(path, where, "truncated: no final newline")
    fix = not data.isascii()
    text = data.decode("latin-1") if fix else data.decode("ascii")
    parts = text.split("\n")
    parts.pop()  # the empty string after the final LF
    count = len(parts)
    recipients: list[Recipient] = []
    add_rcpt = recipients.append
    cf = ControlFile(recipients=recipients, data=data)
    flags = 0
    slot = 2  # where the quad starts in an r line
    unheaded = 0  # recipients[unheaded:] have no m block yet
    pos = 0
    i = 0
    while i < count:
        s = parts[i]
        ln = len(s)
        end = pos + ln + 1
        tag = s[:1]
        if tag == "r":
            rcpt = recipient_of(s, pos, slot, flags, fix)
            if not isinstance(rcpt, str):  # else ignored, as ZMailer ignores it
                add_rcpt(rcpt)
            pos = end
            i += 1
            continue
        if tag == "m" or tag == "M":  # a block, through its empty line (or the end)
            end = text.find("\n\n", pos) + 2
            if tag == "m":
                for rcpt in recipients[unheaded:]:
                    rcpt.header_offset = pos + 2
                unheaded = len(recipients)
            if end < 2:  # unterminated: ZMailer lets it run to the end of the file
                break
            i = parts.index("", i + 1) + 1
            pos = end
            continue
        if ln < 2 or tag not in TAGS:  # blank, status-less or unknown: ZMailer skips it
            pos = end
            i += 1
            continue
        status = s[1]
        value = utf8_value(s[2:]) if fix else s[2:]
        try:
            _interpret(cf, tag, status, pos, value)
        except ValueError as exc:
            why = f"bad {tag!r} line: {exc}"
            raise CorruptControlFile(path, i + 1, why) from None
        if tag == "@":
            if cf.flags & ~KNOWN_FLAGS or cf.flags < 0:
                why = f"unknown/unsupported format set: 0x{cf.flags:08x}"
                raise CorruptControlFile(path, i + 1, why)
            flags = cf.flags
            slot = 2 + (6 if flags & 1 else 0) + (4 if flags & 2 else 0)
        pos = end
        i += 1
    return cf


def _interpret(cf: ControlFile, tag: str, status: str, pos: int, value: str) -> None:
    """The meaning of one non-``r``, non-block line (SCHED-REF 2.1)."""
    if tag == "d":
        cf.diagnostics.append(diagnostic_of(pos, status, value))
    elif tag == "N":
        if cf.recipients:
            rcpt = cf.recipients[-1]
            rcpt.dsn_offset = pos + 2
            apply_notify(value, rcpt)
    elif status != " " or tag == "X":  # only ' ' lines are interpreted; X is ignored
        return
    elif tag == "@":
        cf.flags = int(value, 16)
    elif tag == "i":
        cf.mid = value
    elif tag == "o":
        cf.body_offset = int(value)
    elif tag == "l":
        cf.log_id = value
    elif tag == "e":
        cf.error_address = cf.report_sender = value
    elif tag == "s":
        sender = parse_quad(value)
        cf.sender = sender
        cf.is_error_message = sender[0] == "error"
        cf.error_address = "" if cf.is_error_message else sender[2]
        cf.report_sender = zm_sender_address(value)
    elif tag == "T":
        cf.etrn.append(value)
    elif tag == "v":
        cf.verbose_file = value
    elif tag == "R":
        cf.ret = value
    elif tag == "n":
        cf.envid = value
    elif tag == "x":
        cf.obsoletes.append(value)


# ------------------------------------------------------------------ the fast path

_HEAD = re.compile(
    r"@ 0x0000000([0-7])\ni ([^\n]*)\no ([0-9]{1,18})\nl ([^\n]*)\n"
    r"(?:e [^\n]*\n)?s ([^\n]*)\n"
).match
"""The usual first lines (``@ i o l [e] s``, all status ``' '``); an ``e`` line before
the ``s`` line does not matter (the ``s`` line replaces its address)."""


def _parse_fast(data: bytes) -> ControlFile | None:
    """:func:`parse` for an ASCII file ending in LF; None if anything is wrong (the
    exact parser then says what)."""
    text = data.decode("ascii")
    n = len(text)
    index = RcptIndex()
    cf = ControlFile(data=data)
    cf._recipients = None
    cf._index = index
    find = text.find
    count = pos = 0
    flags = 0
    head = _HEAD(text)
    if head is not None:
        flags = int(head[1])
        cf.flags = flags
        cf.mid = head[2]
        cf.body_offset = int(head[3])
        cf.log_id = head[4]
        sender = cf.sender = parse_quad(head[5])
        cf.is_error_message = sender[0] == "error"
        cf.error_address = "" if cf.is_error_message else sender[2]
        cf.report_sender = zm_sender_address(head[5])
        pos = head.end()
    if flags & 3 != 3:
        return None  # slots guessed line by line: the exact parser
    slot = 12
    while pos < n:
        tag = text[pos]
        if tag == "r":
            run = find_run(text, pos, slot, flags)
            if run is not None:
                index.segments.append(run)
                count += run[4]
                pos = run[1]
                continue
            end = find("\n", pos) + 1
            rcpt = recipient_of(text[pos : end - 1], pos, slot, flags, False)
            if isinstance(rcpt, str):
                return None
            index.segments.append(rcpt)
            count += 1
            pos = end
            continue
        end = find("\n", pos) + 1
        if tag == "m" or tag == "M":
            if end != pos + 2:
                return None
            end = find("\n\n", pos) + 2
            if end < 2:
                return None
            if tag == "m":
                index.heads.append((count, pos + 2))
            pos = end
            continue
        if end - pos < 3 or tag not in TAGS:
            return None
        value = text[pos + 2 : end - 1]
        if tag == "N":
            if count:
                index.notes.append((count - 1, pos + 2, value))
        else:
            try:
                _interpret(cf, tag, text[pos + 1], pos, value)
            except ValueError:
                return None
            if tag == "@":
                flags = cf.flags
                if flags & ~KNOWN_FLAGS or flags < 0 or flags & 3 != 3:
                    return None
        pos = end
    return cf


def format(cf: ControlFile) -> bytes:
    """The bytes of a control file: its lines joined (``== data`` after ``parse(data)``)."""
    if cf._lines is None:
        return cf.data
    return b"".join([line.raw for line in cf._lines])
