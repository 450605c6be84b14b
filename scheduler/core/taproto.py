"""The scheduler side of ZMailer's transport-agent protocol (MQ2-REF §13), sans I/O.

TA -> scheduler lines are parsed into small objects; job lines are formatted here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import NamedTuple

__all__ = [
    "FINAL_STATUSES",
    "STATUSES",
    "Debug",
    "Garbage",
    "Hungry",
    "Report",
    "Resync",
    "format_job",
    "parse_line",
    "parse_retryat",
]

HUNGRY = "#hungry"
STATUSES = frozenset(
    {
        "ok",
        "ok2",
        "ok3",
        "deferred",
        "retryat",
        "deferall",
        "deferback",
        "error",
        "error2",
    }
)
FINAL_STATUSES = frozenset({"ok", "ok2", "ok3", "error", "error2"})


@dataclass(frozen=True, slots=True)
class Hungry:
    """``#hungry``: ready for the next job."""


@dataclass(frozen=True, slots=True)
class Resync:
    """``#resync <path>``: the TA could not use the job; re-read the file."""

    path: str


@dataclass(frozen=True, slots=True)
class Debug:
    """``# text`` or an empty line: debug output, logged."""

    text: str


class Report(NamedTuple):
    """``<id>/<offset>\\t<notary>\\t<status>[ <message>]``.

    ``status`` is kept even when it is not one of :data:`STATUSES` (the attempt still counts,
    SCHED-REF 4.5 "other"). A named tuple: one is built per delivered recipient, and a
    tuple is built (and unpacked) several times faster than a frozen dataclass.
    """

    number: int
    offset: int
    notary: str
    status: str
    message: str


@dataclass(frozen=True, slots=True)
class Garbage:
    """Anything else (``Misformed diagnosticN``): logged and ignored."""

    line: str
    reason: str


TaLine = Hungry | Resync | Debug | Report | Garbage

_HUNGRY = Hungry()


_WS = re.compile(r"[ \t\r\n\v\f]")


def parse_line(line: str) -> TaLine:
    """Parse one TA output line (without its LF; a trailing CR is tolerated)."""
    if line == HUNGRY:
        return _HUNGRY
    line = line.rstrip("\r")
    if line == HUNGRY:
        return _HUNGRY
    if not line:
        return Debug("")
    if line[0] == "#":
        if line.startswith("#resync"):
            path = line[7:].strip()
            if path:
                return Resync(path)
            return Garbage(line, "#resync without a path")
        if line.startswith("#hungry"):
            return _HUNGRY
        return Debug(line[1:].lstrip(" "))
    return _parse_report(line)


def _parse_report(line: str) -> TaLine:
    head, tab, rest = line.partition("\t")
    if not tab:
        return Garbage(line, "Misformed diagnostic1")
    ident, slash, off = head.partition("/")
    if not slash or not ident.isdigit() or not off.isdigit():
        return Garbage(line, "Misformed diagnostic1")
    notary, tab, rest = rest.partition("\t")
    if not tab:
        return Garbage(line, "Misformed diagnostic2")
    rest = rest.lstrip(" \t")
    if not rest:
        return Garbage(line, "Misformed diagnostic3")
    # As ZMailer: the status runs to the first white-space character, the message is
    # everything after that one character (a leading CR of the message is kept).
    end = _WS.search(rest)
    if end is None:
        return Report(int(ident), int(off), notary, rest, "")
    i = end.start()
    return Report(int(ident), int(off), notary, rest[:i], rest[i + 1 :])


def parse_retryat(message: str, now: int) -> tuple[int | None, str]:
    """Split a ``retryat`` argument: ``[+]N [message]`` -> (absolute time or None, message).

    ``None`` means there was no usable argument (T2: treated as ``deferred``).
    """
    parts = message.split(None, 1)
    if not parts:
        return None, ""
    arg = parts[0]
    rest = parts[1] if len(parts) > 1 else ""
    relative = arg.startswith("+")
    digits = arg[1:] if relative else arg
    if not digits.isdigit():
        return None, message
    value = int(digits)
    return (now + value if relative else value), rest


def format_job(path: str, host: str, withhost: bool) -> bytes:
    """A job line: ``<path>\\t<host>\\n``, or ``<path>\\n`` for withhost groups."""
    if withhost:
        return f"{path}\n".encode("utf-8", "surrogateescape")
    return f"{path}\t{host}\n".encode("utf-8", "surrogateescape")
