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

_TAG_BYTES = frozenset(TAGS.encode())
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


@dataclass(slots=True)
class ControlFile:
    """Everything the scheduler and the tools take from one control file."""

    lines: list[Line]
    flags: int = 0
    mid: str | None = None
    body_offset: int | None = None
    log_id: str | None = None
    error_address: str = ""
    is_error_message: bool = False
    sender: tuple[str, str, str, str] | None = None
    recipients: list[Recipient] = field(default_factory=list)
    diagnostics: list[Diagnostic] = field(default_factory=list)
    etrn: list[str] = field(default_factory=list)
    verbose_file: str | None = None
    ret: str | None = None
    envid: str | None = None
    obsoletes: list[str] = field(default_factory=list)

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


def parse(data: bytes, path: str = "<memory>") -> ControlFile:
    """Parse a whole control file; raise :class:`CorruptControlFile` for anything that
    is truncated (no final LF, unterminated ``m`` block), unknown (tag, format bits) or
    malformed (short lines, bad numbers)."""
    n = len(data)
    if n == 0:
        raise CorruptControlFile(path, 1, "empty file")
    if data[-1] != 10:
        raise CorruptControlFile(
            path, data.count(b"\n") + 1, "truncated: no final newline"
        )
    lines: list[Line] = []
    add_line = lines.append
    recipients: list[Recipient] = []
    add_rcpt = recipients.append
    cf = ControlFile(lines, recipients=recipients)
    find = data.find
    chr_ = _CHR
    flags = 0
    slot = 2  # quad start relative to the tag byte
    unheaded = 0  # recipients[unheaded:] have no m block yet
    pos = 0
    lineno = 1
    while pos < n:
        nl = find(b"\n", pos)
        tag = data[pos]
        if tag == 114:  # 'r': hot path
            st = data[pos + 1]
            qs = pos + slot
            if qs > nl or st not in b" ~+-":
                why = "short recipient line" if qs > nl else "bad recipient status"
                raise CorruptControlFile(path, lineno, why)
            raw = data[pos : nl + 1]
            pid: int | None = None
            if flags & 1:
                pidb = raw[2:8]
                if pidb != b"      ":
                    try:
                        pid = int(pidb)
                    except ValueError:
                        pid = None
                    if pid is not None and pid <= 0:
                        pid = None
            quad = data[qs:nl].decode(_ENC, _ERRORS)
            ch, host, user, priv = parse_quad(quad)
            if host and host[0] == "(":
                host, ok = parse_host(host)
            else:
                ok = bool(host)
            status = chr_[st]
            add_line(Line("r", status, pos, raw))
            add_rcpt(Recipient(pos, status, pid, ch, host, user, priv, quad, ok))
            pos = nl + 1
            lineno += 1
            continue
        if tag == 109 or tag == 77:  # 'm' / 'M' block, through its empty line
            if nl != pos + 1:
                raise CorruptControlFile(path, lineno, f"text after the {chr(tag)} tag")
            end = find(b"\n\n", pos)
            if end < 0:
                raise CorruptControlFile(
                    path, lineno, "truncated: unterminated header block"
                )
            end += 2
            raw = data[pos:end]
            add_line(Line(chr_[tag], "\n", pos, raw))
            if tag == 109:
                for rcpt in recipients[unheaded:]:
                    rcpt.header_offset = pos + 2
                unheaded = len(recipients)
            lineno += raw.count(b"\n")
            pos = end
            continue
        if nl - pos < 2:
            why = "empty line" if nl == pos else "line without a status column"
            raise CorruptControlFile(path, lineno, why)
        if tag not in _TAG_BYTES:
            raise CorruptControlFile(path, lineno, f"unknown tag {chr(tag)!r}")
        st = data[pos + 1]
        status = chr_[st]
        tag_s = chr_[tag]
        add_line(Line(tag_s, status, pos, data[pos : nl + 1]))
        try:
            if tag == 100:  # 'd'
                value = data[pos + 2 : nl].decode(_ENC, _ERRORS)
                cf.diagnostics.append(_diagnostic(pos, status, value))
            elif tag == 78:  # 'N'
                if recipients:
                    rcpt = recipients[-1]
                    rcpt.dsn_offset = pos + 2
                    _notify(data[pos + 2 : nl].decode(_ENC, _ERRORS), rcpt)
            elif st == 32 and tag != 88:  # only ' ' lines are interpreted; X is ignored
                value = data[pos + 2 : nl].decode(_ENC, _ERRORS)
                if tag == 64:  # '@'
                    flags = int(value, 16)
                    if flags & ~KNOWN_FLAGS or flags < 0:
                        raise CorruptControlFile(
                            path,
                            lineno,
                            f"unknown/unsupported format set: 0x{flags:08x}",
                        )
                    cf.flags = flags
                    slot = 2 + (6 if flags & 1 else 0) + (4 if flags & 2 else 0)
                elif tag == 105:  # 'i'
                    cf.mid = value
                elif tag == 111:  # 'o'
                    cf.body_offset = int(value)
                elif tag == 108:  # 'l'
                    cf.log_id = value
                elif tag == 101:  # 'e'
                    cf.error_address = value
                elif tag == 115:  # 's'
                    sender = parse_quad(value)
                    cf.sender = sender
                    cf.is_error_message = sender[0] == "error"
                    cf.error_address = "" if cf.is_error_message else sender[2]
                elif tag == 84:  # 'T'
                    cf.etrn.append(value)
                elif tag == 118:  # 'v'
                    cf.verbose_file = value
                elif tag == 82:  # 'R'
                    cf.ret = value
                elif tag == 110:  # 'n'
                    cf.envid = value
                elif tag == 120:  # 'x'
                    cf.obsoletes.append(value)
        except ValueError as exc:
            raise CorruptControlFile(
                path, lineno, f"bad {tag_s!r} line: {exc}"
            ) from None
        pos = nl + 1
        lineno += 1
    return cf


def format(cf: ControlFile) -> bytes:
    """The bytes of a control file: its lines joined (``== data`` after ``parse(data)``)."""
    return b"".join([line.raw for line in cf.lines])
