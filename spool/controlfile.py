"""Transport control files ("ctlfiles"), parsed and formatted as bytes (MQ2-REF 12.3-12.5).

Pure: bytes in, objects out, no I/O. Offsets are byte offsets from the start of the file,
the way ZMailer's scheduler and transport agents address lines. ``format(parse(data))``
gives back ``data`` byte for byte for everything ``parse`` accepts.

The parser is the scheduler's hot path (a million recipients at startup), so it walks the
buffer with ``bytes.find`` and does per-tag work only where a field is needed.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .errors import CorruptControlFile

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
    "format",
    "format_diagnostic",
    "format_quad",
    "format_recipient_line",
    "index_lines",
    "parse",
    "parse_host",
    "parse_quad",
]

FLAG_PID = 0x1
FLAG_DELAY = 0x2
FLAG_MIMESTRUCT = 0x4
KNOWN_FLAGS = 0x7
"""Bits of the ``@`` line we understand; any other bit makes the file corrupt."""

TAGS = "@vioblexTsrXNRnmMd"
"""Every tag of MQ2-REF 12.3."""

DEFAULT_NOTIFY: frozenset[str] = frozenset({"FAILURE"})
"""The notify set of a recipient without an ``N`` line or without ``NOTIFY=``."""

_RCPT_STATUS = frozenset(" ~+-")
_CHR = [chr(i) for i in range(256)]
_ENC = "utf-8"
_ERRORS = "surrogateescape"


@dataclass(slots=True)
class Line:
    """One entry of the line index. ``raw`` includes its LF; an ``m``/``M`` block is one
    entry whose ``status`` is ``"\\n"`` and whose ``raw`` runs through its empty line."""

    tag: str
    status: str
    offset: int
    raw: bytes


@dataclass(slots=True)
class Recipient:
    """An ``r`` line. Values are as in the file (not lower-cased)."""

    offset: int
    status: str
    pid: int | None
    channel: str
    host: str
    user: str
    privilege: str
    quad: str
    host_ok: bool
    notify: frozenset[str] = DEFAULT_NOTIFY
    orcpt: str | None = None
    dsn_offset: int = -1
    header_offset: int = -1


@dataclass(slots=True)
class Diagnostic:
    """A ``d`` line: ``d<status><rcpt>:<hdr>:<dsn>::<time>\\t<notary>\\t<message>``."""

    offset: int
    status: str
    rcpt_offset: int
    header_offset: int
    dsn_offset: int
    time: int
    notary: str
    message: str

    @property
    def reported(self) -> bool:
        """True once a DSN pass processed it (``d+``)."""
        return self.status == "+"


@dataclass(slots=True, init=False)
class ControlFile:
    """Everything the scheduler and the tools take from one control file.

    ``data`` is the file as parsed. ``lines`` (the line index, MQ2-REF 12.5) is built
    from it on first use, which keeps it off the scheduler's loading path; assigning
    ``lines`` (or editing its entries) changes what :func:`format` produces.
    """

    data: bytes
    flags: int
    mid: str | None
    body_offset: int | None
    log_id: str | None
    error_address: str
    is_error_message: bool
    sender: tuple[str, str, str, str] | None
    recipients: list[Recipient]
    diagnostics: list[Diagnostic]
    etrn: list[str]
    verbose_file: str | None
    ret: str | None
    envid: str | None
    obsoletes: list[str]
    _lines: list[Line] | None = field(repr=False, compare=False)

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
        self.recipients = [] if recipients is None else recipients
        self.diagnostics = [] if diagnostics is None else diagnostics
        self.etrn = [] if etrn is None else etrn
        self.verbose_file = verbose_file
        self.ret = ret
        self.envid = envid
        self.obsoletes = [] if obsoletes is None else obsoletes

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
        if tag == 109 or tag == 77:  # m, M
            end = find(b"\n\n", pos) + 2
            add(Line(_CHR[tag], "\n", pos, data[pos:end]))
        else:
            end = find(b"\n", pos) + 1
            add(Line(_CHR[tag], _CHR[data[pos + 1]], pos, data[pos:end]))
        pos = end
    return out


# ---------------------------------------------------------------------------- quads


def _tokens(text: str) -> list[tuple[str, bool]]:
    """Split a quad on blanks; quotes and backslashes are honoured, and an unquoted
    token starting with ``(`` runs to its matching ``)`` even across blanks.
    Returns ``(value, was_quoted)`` pairs."""
    out: list[tuple[str, bool]] = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c == " " or c == "\t":
            i += 1
            continue
        buf: list[str] = []
        quoted = False
        depth = 0
        while i < n:
            c = text[i]
            if c == '"':
                quoted = True
                i += 1
                while i < n and text[i] != '"':
                    if text[i] == "\\" and i + 1 < n:
                        i += 1
                    buf.append(text[i])
                    i += 1
                i += 1
                continue
            if c == "\\" and i + 1 < n:
                buf.append(text[i + 1])
                i += 2
                continue
            if c == "(" and not quoted:
                depth += 1
            elif c == ")" and depth:
                depth -= 1
            elif (c == " " or c == "\t") and depth == 0:
                break
            buf.append(c)
            i += 1
        out.append(("".join(buf), quoted))
    return out


def parse_quad(text: str) -> tuple[str, str, str, str]:
    """``channel host user privilege`` from quad text: ``"..."`` with ``\\`` escapes,
    an unquoted ``-`` is empty; missing fields are empty, extra ones are ignored."""
    parts = text.split(" ")
    if (
        len(parts) == 4
        and '"' not in text
        and "\\" not in text
        and "(" not in text
        and "\t" not in text
        and "" not in parts
    ):
        a, b, c, d = parts
        return (
            "" if a == "-" else a,
            "" if b == "-" else b,
            "" if c == "-" else c,
            "" if d == "-" else d,
        )
    values = ["" if (v == "-" and not q) else v for v, q in _tokens(text)[:4]]
    values.extend([""] * (4 - len(values)))
    return values[0], values[1], values[2], values[3]


def parse_host(token: str) -> tuple[str, bool]:
    """``(host, ok)`` for a host value (SCHED-REF 2.2 step 3): ``(mx1 mx2)`` lists give
    their first name; an empty host or a malformed list is not ok."""
    if not token:
        return "", False
    if token[0] != "(":
        return token, True
    depth = 0
    for i, c in enumerate(token):
        if c == "(":
            depth += 1
        elif c == ")":
            depth -= 1
            if depth == 0:
                if i != len(token) - 1:
                    return "", False
                break
    else:
        return "", False
    start = 0
    while start < len(token) and token[start] == "(":
        start += 1
    end = start
    while end < len(token) and token[end] not in " \t)":
        end += 1
    host = token[start:end]
    return host, bool(host)


def _quote(value: str) -> str:
    if "\n" in value:
        raise ValueError(f"newline in a quad value: {value!r}")
    if value == "":
        return "-"
    if value == "-" or any(c in value for c in ' \t"\\()'):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return value


def format_quad(channel: str, host: str, user: str, privilege: str) -> str:
    """The inverse of :func:`parse_quad` (empty -> ``-``; blanks/quotes -> ``"..."``)."""
    return " ".join((_quote(channel), _quote(host), _quote(user), _quote(privilege)))


def format_recipient_line(quad: str) -> bytes:
    """A fresh ``r`` line as the router writes it: status, PID and delay slots blank."""
    return b"r" + b" " + b" " * 10 + quad.encode(_ENC, _ERRORS) + b"\n"


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
    return text.encode(_ENC, _ERRORS)


# ---------------------------------------------------------------------------- parse


def _notify(value: str, rcpt: Recipient) -> None:
    for word in value.split():
        key = word[:7].upper()
        if key == "NOTIFY=":
            rcpt.notify = frozenset(w.upper() for w in word[7:].split(",") if w)
        elif key[:6] == "ORCPT=":
            rcpt.orcpt = word[6:]


def _diagnostic(pos: int, status: str, value: str) -> Diagnostic:
    head, _, rest = value.partition("\t")
    notary, _, message = rest.partition("\t")
    parts = head.split(":")
    if len(parts) != 5 or parts[3]:
        raise ValueError("bad diagnostic line")
    return Diagnostic(
        pos,
        status,
        int(parts[0]),
        int(parts[1]),
        int(parts[2]),
        int(parts[4]),
        notary,
        message,
    )


def _utf8(value: str) -> str:
    """Undo the latin-1 decoding of a non-ASCII file for one value."""
    if value.isascii():
        return value
    return value.encode("latin-1").decode(_ENC, _ERRORS)


def parse(data: bytes, path: str = "<memory>") -> ControlFile:
    """Parse a whole control file; raise :class:`CorruptControlFile` for anything that
    is truncated (no final LF, unterminated ``m`` block), unknown (tag, format bits) or
    malformed (short lines, bad numbers).

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
        if tag == "r":  # the hot path
            status = s[1:2]
            if ln < slot or status not in _RCPT_STATUS:
                why = "short recipient line" if ln < slot else "bad recipient status"
                raise CorruptControlFile(path, i + 1, why)
            pid: int | None = None
            if flags & 1:
                pidtext = s[2:slot]  # a wide PID may spill into the delay slot
                if not pidtext.isspace():
                    try:
                        pid = int(pidtext)
                    except ValueError:
                        pid = None
                    if pid is not None and pid <= 0:
                        pid = None
            quad = s[slot:]
            if fix:
                quad = _utf8(quad)
            qp = quad.split(" ")
            if (
                len(qp) == 4
                and '"' not in quad
                and "\\" not in quad
                and "(" not in quad
                and "\t" not in quad
                and "" not in qp
            ):
                ch, host, user, priv = qp
                if "-" in qp:
                    ch, host, user, priv = ["" if v == "-" else v for v in qp]
            else:
                ch, host, user, priv = parse_quad(quad)
            if host and host[0] == "(":
                host, ok = parse_host(host)
            else:
                ok = host != ""
            add_rcpt(Recipient(pos, status, pid, ch, host, user, priv, quad, ok))
            pos = end
            i += 1
            continue
        if tag == "m" or tag == "M":  # a block, through its empty line
            if ln != 1:
                raise CorruptControlFile(path, i + 1, f"text after the {tag} tag")
            end = text.find("\n\n", pos) + 2
            if end < 2:
                why = "truncated: unterminated header block"
                raise CorruptControlFile(path, i + 1, why)
            if tag == "m":
                for rcpt in recipients[unheaded:]:
                    rcpt.header_offset = pos + 2
                unheaded = len(recipients)
            i = parts.index("", i + 1) + 1
            pos = end
            continue
        if ln < 2:
            why = "empty line" if ln == 0 else "line without a status column"
            raise CorruptControlFile(path, i + 1, why)
        if tag not in TAGS:
            raise CorruptControlFile(path, i + 1, f"unknown tag {tag!r}")
        status = s[1]
        value = _utf8(s[2:]) if fix else s[2:]
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
        cf.diagnostics.append(_diagnostic(pos, status, value))
    elif tag == "N":
        if cf.recipients:
            rcpt = cf.recipients[-1]
            rcpt.dsn_offset = pos + 2
            _notify(value, rcpt)
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
        cf.error_address = value
    elif tag == "s":
        sender = parse_quad(value)
        cf.sender = sender
        cf.is_error_message = sender[0] == "error"
        cf.error_address = "" if cf.is_error_message else sender[2]
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


def format(cf: ControlFile) -> bytes:
    """The bytes of a control file: its lines joined (``== data`` after ``parse(data)``)."""
    if cf._lines is None:
        return cf.data
    return b"".join([line.raw for line in cf._lines])
