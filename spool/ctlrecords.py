"""The records of a control file and the pure readers of its single lines (MQ2-REF 12.3).

Shared by :mod:`spool.controlfile` (the parsers) and :mod:`spool.fastparse` (the
recipient index of the fast path); import them from :mod:`spool.controlfile`.
"""

from __future__ import annotations

from dataclasses import dataclass

from spool.quads import parse_host, parse_quad

__all__ = [
    "DEFAULT_NOTIFY",
    "FLAG_DELAY",
    "FLAG_MIMESTRUCT",
    "FLAG_PID",
    "KNOWN_FLAGS",
    "TAGS",
    "TEXT_ENCODING",
    "TEXT_ERRORS",
    "Diagnostic",
    "Line",
    "Recipient",
    "SummaryRow",
    "apply_notify",
    "diagnostic_of",
    "notify_of",
    "recipient_of",
    "utf8_value",
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

TEXT_ENCODING = "utf-8"
TEXT_ERRORS = "surrogateescape"
_RCPT_STATUS = frozenset(" ~+-")


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


SummaryRow = tuple[int, str, str, str, frozenset[str], int, int]
"""One pending recipient for the scheduler's loader (:meth:`ControlFile.pending_summary`):
``(offset, channel, host, quad, notify, header_offset, dsn_offset)``."""


def notify_of(
    value: str, notify: frozenset[str], orcpt: str | None
) -> tuple[frozenset[str], str | None]:
    """The notify set and ORCPT after one ``N`` line."""
    for word in value.split():
        key = word[:7].upper()
        if key == "NOTIFY=":
            notify = frozenset(w.upper() for w in word[7:].split(",") if w)
        elif key[:6] == "ORCPT=":
            orcpt = word[6:]
    return notify, orcpt


def apply_notify(value: str, rcpt: Recipient) -> None:
    rcpt.notify, rcpt.orcpt = notify_of(value, rcpt.notify, rcpt.orcpt)


def diagnostic_of(pos: int, status: str, value: str) -> Diagnostic:
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


def utf8_value(value: str) -> str:
    """Undo the latin-1 decoding of a non-ASCII file for one value."""
    if value.isascii():
        return value
    return value.encode("latin-1").decode(TEXT_ENCODING, TEXT_ERRORS)


def _pid(text: str) -> int | None:
    """The PID of a PID slot (possibly spilling into the delay slot); None if blank,
    unreadable or not positive."""
    if text.isspace():
        return None
    try:
        pid = int(text)
    except ValueError:
        return None
    return pid if pid > 0 else None


def _guess_slot(s: str, flags: int) -> int:
    """Where the quad starts when the format line does not promise both slots: ZMailer's
    scheduler then takes a blank or a digit where a slot would start as that slot."""
    slot = 2
    c = s[2:3]
    if flags & 1 or c == " " or "0" <= c <= "9":
        slot = 8
    c = s[slot : slot + 1]
    if flags & 2 or c == " " or "0" <= c <= "9":
        slot += 4
    return slot


def recipient_of(s: str, pos: int, slot: int, flags: int, fix: bool) -> Recipient | str:
    """The :class:`Recipient` of the ``r`` line ``s`` (without its LF) at ``pos``, or
    the reason why the line is corrupt."""
    status = s[1:2]
    if len(s) < slot:
        return "short recipient line"
    if status not in _RCPT_STATUS:
        return "bad recipient status"
    if flags & 3 != 3:
        slot = _guess_slot(s, flags)
    pid = _pid(s[2:slot]) if slot >= 8 else None
    quad = s[slot:]
    if fix:
        quad = utf8_value(quad)
    ch, host, user, priv = parse_quad(quad)
    if host and host[0] == "(":
        host, ok = parse_host(host)
    else:
        ok = host != ""
    return Recipient(pos, status, pid, ch, host, user, priv, quad, ok)
