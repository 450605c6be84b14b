"""scheduler.conf value readers: time values (SCHED-REF 1.7) and the warnings about
selector patterns (S3, S10).  Pure: no I/O."""

from __future__ import annotations

import re

__all__ = ["original_interval", "parse_time", "selector_warnings"]

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_PART = re.compile(r"(\d+)([smhd]?)")


def parse_time(text: str) -> tuple[int, str]:
    """The intended syntax: the sum of ``<digits>[smhd]`` parts (S1 fixed).

    Returns ``(seconds, ignored_rest)``: like the original, parsing stops at the first
    other character (``5x`` is 5 s, an empty value 0); the ignored rest is returned so
    the caller can warn about it.
    """
    total = pos = 0
    for m in _PART.finditer(text):
        if m.start() != pos:
            break
        total += int(m.group(1)) * _UNITS.get(m.group(2), 1)
        pos = m.end()
    return total, text[pos:]


def original_interval(text: str) -> int:
    """What ZMailer's buggy parser reads (S1): one character is skipped after each unit.

    Bytes past the end of the value are taken as non-digits (in the original they are
    leftovers of the line buffer and may add garbage seconds; that is not predictable).
    """
    total = i = 0
    while i < len(text):
        j = i
        while j < len(text) and text[j].isdigit():
            j += 1
        n = int(text[i:j] or "0")
        if j < len(text) and text[j] in _UNITS:
            total += n * _UNITS[text[j]]
            i = j + 2
        else:
            total += n
            break
    return total


def selector_warnings(selector: str, channel: str, host: str) -> list[str]:
    """S3, S10 and column-rule warnings for one selector."""
    out: list[str] = []
    if channel == "*":
        out.append(
            f"clause {selector!r} never matches: a channel pattern of exactly '*' is"
            " skipped (S3)"
        )
    if "=" in selector:
        out.append(
            f"selector {selector!r} starts a new clause because it is in column 0;"
            " indent parameters"
        )
    for pattern in (channel, host):
        out += _pattern_warnings(pattern)
    return out


def _pattern_warnings(pattern: str) -> list[str]:
    out: list[str] = []
    if "[^" in pattern:
        out.append(
            f"pattern {pattern!r}: '[^...]' never matches in ZMailer's glob (S10)"
        )
    if any("-" in m.group(1) for m in re.finditer(r"\[([^\]]*)\]", pattern)):
        out.append(
            f"pattern {pattern!r}: '-' inside [...] is literal, not a range (S10)"
        )
    if any(ch.isupper() for ch in pattern):
        out.append(
            f"pattern {pattern!r} has upper-case letters: names are lower-cased, so it"
            " never matches them (S10)"
        )
    brace = pattern.find("{")
    if brace >= 0 and "}" in pattern[brace:] and pattern[brace:].split("}", 1)[1]:
        out.append(f"pattern {pattern!r}: text after '}}' is ignored (S10)")
    return out
