"""Durations as ZMailer prints and parses them.

``saytime`` is the short form used in every MAILQ v2 report (``QA=``, ``Uptime:``,
``retry in ...``) and by the ``mailq`` client (``expires in``, ``age``).
``saytime_long`` is the long form used in DSN texts (``expired after 5 days``).
``parse_duration`` reads the ``1d2h30m`` syntax of scheduler.conf and of ``mailq --check``.
"""

from __future__ import annotations

import re

__all__ = ["parse_duration", "saytime", "saytime_long"]

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_DURATION = re.compile(r"(\d+)([smhd]?)")


def saytime(seconds: int) -> str:
    """Format ``seconds`` compactly: ``0s``, ``1m1s``, ``1d11m22s``, ``1d18h``, ``-2m5s``.

    At most two of days/hours are printed; minutes and seconds are dropped once both
    days and hours were printed (MQ2-REF 9.1).
    """
    sign = "-" if seconds < 0 else ""
    v = abs(seconds)
    if v == 0:
        return "0s"
    s, v = v % 60, v // 60
    m, v = v % 60, v // 60
    h, d = v % 24, v // 24
    out = [sign]
    major = 0
    if d:
        out.append(f"{d}d")
        major += 1
    if h:
        out.append(f"{h}h")
        major += 1
    if m and major < 2:
        out.append(f"{m}m")
    if s and major < 2:
        out.append(f"{s}s")
    return "".join(out)


def saytime_long(seconds: int) -> str:
    """The long form used in DSN texts: ``5 days``, ``1 min 30 secs``, ``1 hour``."""
    v = abs(int(seconds))
    parts: list[str] = []
    for size, one, many in (
        (86400, "day", "days"),
        (3600, "hour", "hours"),
        (60, "min", "mins"),
        (1, "sec", "secs"),
    ):
        n, v = divmod(v, size)
        if n:
            parts.append(f"{n} {one if n == 1 else many}")
    text = " ".join(parts) or "0 secs"
    return ("-" + text) if seconds < 0 else text


def parse_duration(text: str) -> int:
    """Parse ``1d2h30m``, ``90`` (seconds) or ``5m`` into seconds.

    Every ``<digits>[smhd]`` part is summed (the intended ZMailer syntax, without the
    original parser's skipped-character bug). Raises ``ValueError`` on anything else.
    """
    text = text.strip()
    if not text:
        raise ValueError("empty duration")
    pos = 0
    total = 0
    for m in _DURATION.finditer(text):
        if m.start() != pos:
            break
        total += int(m.group(1)) * _UNITS.get(m.group(2), 1)
        pos = m.end()
    if pos != len(text):
        raise ValueError(f"bad duration {text!r}: expected e.g. 90, 30m or 1d2h")
    return total
