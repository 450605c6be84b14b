"""``mailq --check``: the monitoring-plugin verdict, by the Nagios plugin guidelines.

* Thresholds are ranges (``10``: alert above 10 or below 0; ``10:``: below 10;
  ``~:20``: above 20; ``10:20``: outside 10..20; ``@10:20``: inside 10..20); ages take
  durations at each end (``4h``, ``30m:``, ``@1h:1d``).
* One status line, ``MAILQ <STATE> - <summary> | <perfdata>``, even for several hosts;
  each host's own line follows as long output. Exit 0 OK, 1 WARNING, 2 CRITICAL,
  3 UNKNOWN (also for bad arguments).
* Perfdata: ``label=value[unit];warn;crit;min;max`` (``oldest_age`` in seconds, ``s``).

Pure functions; :mod:`mailq.client.modes` runs the sessions.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from mailq.client.parse import Snmp
from spool.timefmt import saytime

__all__ = [
    "CRITICAL",
    "OK",
    "STATE_NAMES",
    "UNKNOWN",
    "WARNING",
    "CheckResult",
    "Range",
    "Thresholds",
    "check_unknown",
    "combine",
    "evaluate_check",
    "parse_range",
]

OK, WARNING, CRITICAL, UNKNOWN = 0, 1, 2, 3
STATE_NAMES = {OK: "OK", WARNING: "WARNING", CRITICAL: "CRITICAL", UNKNOWN: "UNKNOWN"}
_SEVERITY = {OK: 0, WARNING: 1, UNKNOWN: 2, CRITICAL: 3}  # how "worst" is chosen


@dataclass(frozen=True)
class Range:
    """A Nagios threshold range: alert when the value is outside ``start..end``
    (inside, with ``@``)."""

    start: float = 0.0
    end: float = math.inf
    inside: bool = False

    def alerts(self, value: float) -> bool:
        outside = value < self.start or value > self.end
        return not outside if self.inside else outside

    def perf(self) -> str:
        """The range in perfdata (numbers in base units)."""
        text = "@" if self.inside else ""
        if self.start != 0 or self.end == math.inf:  # "0:" is not the empty range
            text += ("~" if self.start == -math.inf else _num(self.start)) + ":"
        if self.end != math.inf:
            text += _num(self.end)
        return text


def _num(value: float) -> str:
    return str(int(value)) if value == int(value) else repr(value)


def _number(text: str) -> float:
    if not re.fullmatch(r"-?\d+(\.\d+)?", text):
        raise ValueError(f"not a number: {text!r}")
    return float(text)


def parse_range(text: str, value: Callable[[str], float] = _number) -> Range:
    """``10``, ``10:``, ``~:20``, ``10:20``, ``@10:20``; ValueError if malformed."""
    spec = text.strip()
    inside = spec.startswith("@")
    if inside:
        spec = spec[1:]
    if not spec:
        raise ValueError(f"empty threshold range {text!r}")
    if ":" in spec:
        low, _, high = spec.partition(":")
        if not low and not high:
            raise ValueError(f"threshold range {text!r} has no bounds")
        start = -math.inf if low == "~" else (value(low) if low else 0.0)
        end = value(high) if high else math.inf
    else:
        start, end = 0.0, value(spec)
    if start > end:
        raise ValueError(f"threshold range {text!r}: start is above end")
    return Range(start, end, inside)


@dataclass(frozen=True)
class Thresholds:
    warn_messages: Range | None = None
    crit_messages: Range | None = None
    warn_recipients: Range | None = None
    crit_recipients: Range | None = None
    warn_age: Range | None = None
    crit_age: Range | None = None


@dataclass(frozen=True)
class CheckResult:
    code: int
    summary: str
    perf: tuple[str, ...] = field(default_factory=tuple)

    @property
    def line(self) -> str:
        head = f"MAILQ {STATE_NAMES[self.code]} - {self.summary}"
        return f"{head} | {' '.join(self.perf)}" if self.perf else head


def _level(value: float, warn: Range | None, crit: Range | None) -> int:
    if crit is not None and crit.alerts(value):
        return CRITICAL
    if warn is not None and warn.alerts(value):
        return WARNING
    return OK


def _perf(
    label: str,
    value: int,
    unit: str = "",
    warn: Range | None = None,
    crit: Range | None = None,
) -> str:
    w = warn.perf() if warn else ""
    c = crit.perf() if crit else ""
    return f"{label}={value}{unit};{w};{c};0;"


def evaluate_check(snmp: Snmp, oldest_age: int | None, th: Thresholds) -> CheckResult:
    """The verdict for one server: messages = ``Msgs:``, recipients = stored
    recipients, oldest age = max ``QA`` over THREADS2 (None when not known)."""
    messages, recipients = snmp.messages, snmp.stored_recipients
    levels = [
        _level(messages, th.warn_messages, th.crit_messages),
        _level(recipients, th.warn_recipients, th.crit_recipients),
    ]
    perf = [
        _perf("messages", messages, "", th.warn_messages, th.crit_messages),
        _perf("recipients", recipients, "", th.warn_recipients, th.crit_recipients),
    ]
    age_text = "unknown"
    if oldest_age is not None:
        levels.append(_level(oldest_age, th.warn_age, th.crit_age))
        age_text = saytime(oldest_age)
        perf.append(_perf("oldest_age", oldest_age, "s", th.warn_age, th.crit_age))
    elif th.warn_age is not None or th.crit_age is not None:
        levels.append(UNKNOWN)
    perf += [_perf("threads", snmp.threads), _perf("kids", snmp.kids)]
    code = max(levels, key=_SEVERITY.__getitem__)
    summary = f"{messages} messages, {recipients} recipients, oldest {age_text}"
    return CheckResult(code, summary, tuple(perf))


def check_unknown(reason: str) -> CheckResult:
    return CheckResult(UNKNOWN, reason)


def _quoted(label: str) -> str:
    return "'" + label.replace("'", "''") + "'"


def combine(results: Sequence[tuple[str, CheckResult]]) -> tuple[int, list[str]]:
    """One status line for several hosts, then one long-output line per host."""
    if len(results) == 1:
        return results[0][1].code, [results[0][1].line]
    worst = max((r.code for _, r in results), key=_SEVERITY.__getitem__)
    counts = [
        f"{sum(1 for _, r in results if r.code == code)} {STATE_NAMES[code]}"
        for code in (CRITICAL, WARNING, UNKNOWN, OK)
        if any(r.code == code for _, r in results)
    ]
    bad = [f"{host} {STATE_NAMES[r.code]}" for host, r in results if r.code != OK]
    summary = f"{len(results)} hosts: {', '.join(counts)}"
    if bad:
        summary += f" ({', '.join(bad)})"
    perf = [
        f"{_quoted(host + ' ' + item.partition('=')[0])}={item.partition('=')[2]}"
        for host, r in results
        for item in r.perf
    ]
    head = CheckResult(worst, summary, tuple(perf)).line
    return worst, [head, *(f"{host}: {r.line}" for host, r in results)]
