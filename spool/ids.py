"""Message numbers, A-Z directory hashing and spool-ids (MQ2-REF 12.2, 12.6)."""

from __future__ import annotations

import calendar
import time

__all__ = [
    "ALPHABET",
    "hash_prefix",
    "is_candidate_name",
    "message_number",
    "parse_spool_id",
    "spool_id",
]

ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123abcdefghijklmnopqrstuvwxyz4567890-="
"""ZMailer's ``taspoolid()`` alphabet; index = value.  ``0`` appears twice (26 and 62):
decoding always takes 26, so a few encodings decode to another tuple (see docs/spool.md)."""

_VALUE = {c: ALPHABET.index(c) for c in ALPHABET}


def hash_prefix(number: int, levels: int) -> str:
    """``""``, ``"X/"`` or ``"X/Y/"`` for 0, 1 or 2 levels (123456 -> ``I/``, ``Q/I/``)."""
    if levels <= 0:
        return ""
    low = chr(65 + number % 26)
    if levels == 1:
        return low + "/"
    return chr(65 + (number // 26) % 26) + "/" + low + "/"


def message_number(name: str) -> int:
    """The leading decimal number of a name (``atol``): ``123456``, ``123456-4711``.

    A relative path (``Q/I/123456``) is accepted: its last component is used.
    Raises :class:`ValueError` when the name does not start with a digit.
    """
    base = name.rpartition("/")[2]
    if base.isdigit() and base.isascii():
        return int(base)
    end = 0
    while end < len(base) and "0" <= base[end] <= "9":
        end += 1
    if end == 0:
        raise ValueError(f"not a spool name: {name!r}")
    return int(base[:end])


def is_candidate_name(name: str) -> bool:
    """True for names the scheduler picks up in ``transport/``: they start with a digit."""
    return bool(name) and "0" <= name[0] <= "9"


def spool_id(number: int, mtime: int, mtime_ns: int = 0) -> str:
    """``S<number>`` + 8 date characters (GMT) [+ 5 nanosecond characters when ns != 0]."""
    t = time.gmtime(mtime)
    year = t.tm_year
    a = ALPHABET
    chars = [
        "S",
        str(number),
        a[(year >> 12) & 63],
        a[(year >> 6) & 63],
        a[year & 63],
        a[t.tm_mon - 1],
        a[t.tm_mday - 1],
        a[t.tm_hour],
        a[t.tm_min],
        a[t.tm_sec],
    ]
    if mtime_ns:
        chars.extend(a[(mtime_ns >> shift) & 63] for shift in (24, 18, 12, 6, 0))
    return "".join(chars)


def parse_spool_id(text: str) -> tuple[int, int, int]:
    """``(number, mtime, ns)`` from a spool-id; :class:`ValueError` if it is not one."""
    if len(text) < 10 or text[0] != "S":
        raise ValueError(f"not a spool-id: {text!r}")
    rest = text[1:]
    if rest[:-8].isdigit() and rest[:-8].isascii():
        digits, date, nano = rest[:-8], rest[-8:], ""
    elif len(rest) > 13 and rest[:-13].isdigit() and rest[:-13].isascii():
        digits, date, nano = rest[:-13], rest[-13:-5], rest[-5:]
    else:
        raise ValueError(f"not a spool-id: {text!r}")
    try:
        v = [_VALUE[c] for c in date]
        n = [_VALUE[c] for c in nano]
    except KeyError:
        raise ValueError(f"not a spool-id: {text!r}") from None
    year = (v[0] << 12) | (v[1] << 6) | v[2]
    month, day, hour, minute, second = v[3] + 1, v[4] + 1, v[5], v[6], v[7]
    if not (1 <= month <= 12 and hour < 24 and minute < 60 and second < 61):
        raise ValueError(f"not a spool-id: {text!r}")
    if not 1 <= year <= 9999 or day > calendar.monthrange(year, month)[1]:
        raise ValueError(f"not a spool-id: {text!r}")
    mtime = calendar.timegm((year, month, day, hour, minute, second, 0, 0, 0))
    ns = 0
    for value in n:
        ns = (ns << 6) | value
    if ns >= 1_000_000_000:
        raise ValueError(f"not a spool-id: {text!r}")
    return int(digits), mtime, ns
