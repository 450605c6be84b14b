"""SMTP text on the wire, pure: replies and the DATA payload (RFC 5321, RFC 5322)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from scheduler.ta.libta import Outcome

__all__ = ["MAX_LINE", "Reply", "message_bytes"]

MAX_LINE = 998
"""RFC 5322 2.1.1: a line is at most 998 octets before its CRLF."""

_ENHANCED = re.compile(r"^([245]\.\d{1,3}\.\d{1,3})\b")


@dataclass(frozen=True, slots=True)
class Reply:
    code: int
    lines: tuple[str, ...]

    @property
    def text(self) -> str:
        return " ".join(line for line in self.lines if line)

    def diagnostic(self) -> str:
        return f"smtp; {self.code} ({self.text})"

    def dsn_status(self) -> str:
        m = _ENHANCED.match(self.text)
        if m and m.group(1)[0] == str(self.code)[0]:
            return m.group(1)
        return f"{str(self.code)[0]}.0.0"

    def outcome(self, remote: str) -> Outcome:
        diag = self.diagnostic()
        if 200 <= self.code < 300:
            return Outcome("ok", self.dsn_status(), diag, remote_mta=remote)
        if 500 <= self.code < 600:
            return Outcome("error", self.dsn_status(), diag, remote_mta=remote)
        return Outcome("deferred", self.dsn_status(), diag, remote_mta=remote)


def _split_long(line: bytes, header: bool) -> list[bytes]:
    """Break a line over 998 octets: header lines are folded (CRLF SP), body lines cut
    (CRLF), as Postfix's smtp client does; every wire line, dot-stuffing included,
    stays within 998 octets."""
    out: list[bytes] = []
    rest = line
    first = True
    while True:
        room = MAX_LINE - (0 if first or not header else 1)
        if rest.startswith(b".") and (first or not header):
            room -= 1
        if len(rest) <= room:
            out.append(rest if first or not header else b" " + rest)
            return out
        piece = rest[:room]
        out.append(piece if first or not header else b" " + piece)
        rest = rest[room:]
        first = False


def message_bytes(header: bytes, body: bytes) -> bytes:
    """The DATA payload: headers, empty line, body; CRLF line ends, lines over 998
    octets broken, dot-stuffed; ends with CRLF (the caller adds ``.CRLF``)."""
    text = header.rstrip(b"\n") + b"\n\n" + body
    lines = text.replace(b"\r\n", b"\n").split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    out: list[bytes] = []
    in_header = True
    for line in lines:
        if in_header and not line:
            in_header = False
        pieces = _split_long(line, in_header) if len(line) >= MAX_LINE else [line]
        out.extend(b"." + p if p.startswith(b".") else p for p in pieces)
    return b"\r\n".join(out) + b"\r\n"
