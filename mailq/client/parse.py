"""Parsers for MAILQ v2 report bodies into typed results (MQ2-REF 9, 15). Pure functions.

- ``SHOW QUEUE THREADS2`` lines -> :class:`ThreadLine`
- ``SHOW THREAD ch host`` bodies -> :class:`ThreadDetail` of :class:`ThreadRow`
- ``SHOW SNMP`` (and the trailer of SHORT/THREADS) -> :class:`Snmp`
- ``SHOW QUEUE SHORT``/``THREADS`` -> :class:`QueueShort` (groups + totals)
- ``SHOW COUNTERS`` -> ``dict[name, int | float]``
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field

__all__ = [
    "Group",
    "QueueShort",
    "Snmp",
    "ThreadDetail",
    "ThreadLine",
    "ThreadRow",
    "parse_counters",
    "parse_queue_short",
    "parse_saytime",
    "parse_snmp",
    "parse_thread_body",
    "parse_thread_row",
    "parse_threads2",
    "parse_threads2_line",
]

_SAYTIME = re.compile(r"(\d+)([dhms])")
_UNIT = {"d": 86400, "h": 3600, "m": 60, "s": 1}


def parse_saytime(text: str) -> int:
    """``2h2m22s`` -> 7342, ``-1s`` -> -1, ``0s`` -> 0 (the inverse of ``saytime``)."""
    sign = -1 if text.startswith("-") else 1
    body = text[1:] if sign < 0 else text
    pos, total = 0, 0
    for m in _SAYTIME.finditer(body):
        if m.start() != pos:
            break
        total += int(m.group(1)) * _UNIT[m.group(2)]
        pos = m.end()
    if pos != len(body) or not body:
        raise ValueError(f"bad saytime value {text!r}")
    return sign * total


# -- SHOW QUEUE THREADS2 ------------------------------------------------------------


@dataclass(frozen=True)
class ThreadLine:
    """One THREADS2 line. ``fields`` keeps every ``KEY=VALUE`` as sent."""

    channel: str
    host: str
    n: int
    r: int
    a: int
    qa: int | None
    w: int | None = None
    pend: str | None = None
    fields: dict[str, str] = field(default_factory=dict)

    @property
    def has_procs(self) -> bool:
        return "P" in self.fields


def _int_field(fields: dict[str, str], key: str) -> int:
    try:
        return int(fields.get(key, "0"))
    except ValueError:
        raise ValueError(f"bad {key}= value {fields[key]!r}") from None


def parse_threads2_line(line: str) -> ThreadLine:
    """Split on TAB: channel, host, then ``KEY=VALUE`` fields split at the first ``=``."""
    parts = line.split("\t")
    if len(parts) < 2:
        raise ValueError(f"malformed THREADS2 line {line!r}")
    fields: dict[str, str] = {}
    for part in parts[2:]:
        key, sep, value = part.partition("=")
        if sep:
            fields[key] = value
    w = fields.get("W")
    qa = fields.get("QA")
    return ThreadLine(
        channel=parts[0],
        host=parts[1],
        n=_int_field(fields, "N"),
        r=_int_field(fields, "R"),
        a=_int_field(fields, "A"),
        qa=parse_saytime(qa) if qa is not None else None,
        w=parse_saytime(w) if w is not None else None,
        pend=fields.get("pend"),
        fields=fields,
    )


def parse_threads2(lines: Iterable[str]) -> list[ThreadLine]:
    return [parse_threads2_line(line) for line in lines if line]


# -- SHOW THREAD ----------------------------------------------------------------------


@dataclass(frozen=True)
class ThreadRow:
    """One recipient row of SHOW THREAD: the 10 TAB-separated fields, typed."""

    path: str
    index: int
    sender: str
    offset: int
    expiry: int
    wakeup: int
    lastfeed: int
    attempts: int
    state: str
    message: str

    @property
    def diagnostic_parts(self) -> list[str]:
        """The message's CR-separated lines, empty parts skipped."""
        return [part for part in self.message.split("\r") if part]


def parse_thread_row(line: str) -> ThreadRow:
    """Parse one row; field 10 is the rest of the line, TABs included (C9 fixed).

    A non-digit second field means an old server without the index: ``0`` is inserted.
    Raises ``ValueError`` for a malformed row.
    """
    parts = line.split("\t", 9)
    if len(parts) >= 2 and not parts[1].isdigit():
        rest = line.split("\t", 8)
        parts = [rest[0], "0", *rest[1:]]
    if len(parts) < 10:
        raise ValueError(f"malformed SHOW THREAD row {line!r}")
    try:
        return ThreadRow(
            path=parts[0],
            index=int(parts[1]),
            sender=parts[2],
            offset=int(parts[3]),
            expiry=int(parts[4]),
            wakeup=int(parts[5]),
            lastfeed=int(parts[6]),
            attempts=int(parts[7]),
            state=parts[8],
            message=parts[9],
        )
    except ValueError:
        raise ValueError(f"malformed SHOW THREAD row {line!r}") from None


@dataclass(frozen=True)
class ThreadDetail:
    """A SHOW THREAD body: the ``#`` summary lines, the rows, and unparsable lines."""

    channel: str
    host: str
    summary: tuple[str, ...]
    rows: tuple[ThreadRow, ...]
    malformed: tuple[str, ...] = ()


def parse_thread_body(channel: str, host: str, lines: Iterable[str]) -> ThreadDetail:
    """Skip every ``#`` line (C6 fixed), parse the others."""
    summary: list[str] = []
    rows: list[ThreadRow] = []
    bad: list[str] = []
    for line in lines:
        if line.startswith("#"):
            summary.append(line)
            continue
        try:
            rows.append(parse_thread_row(line))
        except ValueError:
            bad.append(line)
    return ThreadDetail(channel, host, tuple(summary), tuple(rows), tuple(bad))


# -- SHOW SNMP / trailer lines --------------------------------------------------------

_KIDS = re.compile(
    r"^Kids: (\d+)  Idle: +(\d+)  Msgs: +(\d+)  Thrds: +(\d+)  Rcpnts: +(\d+)"
    r"  Uptime: (?:(-?\d+) sec|(-?[0-9dhms]+))$"
)
_INOUT = re.compile(
    r"^Msgs in (\d+) out (\d+) stored (-?\d+) (?:\((-?\d+)\) )?"
    r"Rcpnts in (\d+) out (\d+) stored (-?\d+)(?: \((-?\d+)\))?$"
)


@dataclass(frozen=True)
class Snmp:
    """The two summary lines. ``vertices`` is the Kids line's ``Rcpnts:`` (sum of N)."""

    kids: int
    idle: int
    messages: int
    threads: int
    vertices: int
    uptime: int
    messages_in: int
    messages_out: int
    messages_stored: int
    recipients_in: int
    recipients_out: int
    recipients_stored: int
    messages_live: int | None = None
    recipients_live: int | None = None

    @property
    def stored_recipients(self) -> int:
        """Recipients in the queue: the live count when the server shows it."""
        return (
            self.recipients_stored
            if self.recipients_live is None
            else self.recipients_live
        )


def _opt(text: str | None) -> int | None:
    return None if text is None else int(text)


def parse_snmp_lines(kids_line: str, inout_line: str) -> Snmp:
    k = _KIDS.match(kids_line)
    io = _INOUT.match(inout_line)
    if k is None or io is None:
        raise ValueError(f"malformed summary lines {kids_line!r} / {inout_line!r}")
    uptime = int(k.group(6)) if k.group(6) is not None else parse_saytime(k.group(7))
    return Snmp(
        kids=int(k.group(1)),
        idle=int(k.group(2)),
        messages=int(k.group(3)),
        threads=int(k.group(4)),
        vertices=int(k.group(5)),
        uptime=uptime,
        messages_in=int(io.group(1)),
        messages_out=int(io.group(2)),
        messages_stored=int(io.group(3)),
        messages_live=_opt(io.group(4)),
        recipients_in=int(io.group(5)),
        recipients_out=int(io.group(6)),
        recipients_stored=int(io.group(7)),
        recipients_live=_opt(io.group(8)),
    )


def parse_snmp(lines: Iterable[str]) -> Snmp:
    """Find the ``Kids:`` line and the ``Msgs in`` line after it, wherever they are."""
    body = [line for line in lines if line]
    for i, line in enumerate(body[:-1]):
        if line.startswith("Kids: "):
            return parse_snmp_lines(line, body[i + 1])
    raise ValueError("no Kids:/Msgs in summary lines in the reply")


# -- SHOW QUEUE SHORT / THREADS -------------------------------------------------------

_GROUP = re.compile(r"^(\S*)/(\S*)/(\d+)$")
_SUMMARY = re.compile(
    r"^\tThreads: +(\d+)(?:/\d+)? Msgs: +(\d+) Procs: +(\d+)(?:/\d+)?"
    r" Idle: +(\d+)(?:/\d+)? Plim: +(\d+) Flim: +(\d+) Tlim: (\d+)$"
)


@dataclass(frozen=True)
class Group:
    """A thread group: the clause pattern and its summary line."""

    channel: str
    host: str
    withhost: int
    threads: int
    messages: int
    procs: int
    idle: int
    plim: int
    flim: int
    tlim: int


@dataclass(frozen=True)
class QueueShort:
    groups: tuple[Group, ...]
    totals: Snmp


def parse_queue_short(lines: Iterable[str]) -> QueueShort:
    """Group headers with their ``Threads:`` summaries, and the two trailer lines.

    Per-thread lines (``-Q``'s THREADS, indented by 4 spaces) are ignored.
    """
    body = list(lines)
    groups: list[Group] = []
    header: re.Match[str] | None = None
    for line in body:
        g = _GROUP.match(line)
        if g is not None:
            header = g
            continue
        s = _SUMMARY.match(line)
        if s is not None and header is not None:
            nums = [int(x) for x in s.groups()]
            groups.append(
                Group(header.group(1), header.group(2), int(header.group(3)), *nums)
            )
            header = None
    return QueueShort(tuple(groups), parse_snmp(body))


# -- SHOW COUNTERS ----------------------------------------------------------------------

_COUNTER = re.compile(r"^(\S+)\s+(-?\d+(?:\.\d+)?)( NOT PRESENT!)?$")


def parse_counters(lines: Iterable[str]) -> dict[str, int | float]:
    """``name -> value``; skips the ``ZMailer SHM segment dump`` line and empty lines."""
    out: dict[str, int | float] = {}
    for line in lines:
        m = _COUNTER.match(line)
        if m is None:
            continue
        text = m.group(2)
        out[m.group(1)] = float(text) if "." in text else int(text)
    return out
