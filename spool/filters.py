"""The operator filter language of ``WHERE`` (docs/protocol.md, "Operator control").

A filter is blank-separated terms, all of which must hold (AND); each term is
``key op value``. It lives in ``spool`` (pure, no I/O) because three parties share it:
the MAILQ v2 server parses it, the scheduler core evaluates it against its model, and
clients may check a filter before sending it.

Keys and operators:

* ``id sender rcpt channel host diag``: ``=`` and ``!=`` take a glob (``*``, ``?``,
  ``[...]``, compared case-insensitively); ``~`` and ``!~`` a substring.
* ``age size attempts``: ``= != < <= > >=`` with a number; ``age`` takes units
  ``s m h d w`` (``2h``), ``size`` takes ``k M G`` (powers of 1024, ``1M``).
* ``state``: ``=`` or ``!=`` one of ``queued held active deferred``.

A value may be double-quoted to hold blanks (``diag~"connection refused"``); ``\\"`` and
``\\\\`` escape inside quotes. An optional ``AND`` between terms is accepted. Bad input
raises :class:`FilterError` naming the term (1-based) and what is wrong with it.
"""

from __future__ import annotations

import fnmatch
import re
import struct
import zlib
from array import array
from dataclasses import dataclass
from typing import TYPE_CHECKING

from spool.quads import parse_quad

if TYPE_CHECKING:
    from collections.abc import Sequence

    from spool.controlfile import ControlFile
    from spool.ctlrecords import SummaryRow

__all__ = [
    "KEYS",
    "STATES",
    "Filter",
    "FilterError",
    "Term",
    "address_keys",
    "control_keys",
    "index_key",
    "index_keys",
    "parse_filter",
    "solo_keys",
    "text_search",
    "text_searchable",
]

TEXT_KEYS = frozenset({"id", "sender", "rcpt", "channel", "host", "diag"})
NUMBER_KEYS = frozenset({"age", "size", "attempts"})
KEYS = TEXT_KEYS | NUMBER_KEYS | {"state"}
STATES = ("queued", "held", "active", "deferred")
MESSAGE_KEYS = frozenset({"id", "sender", "age", "size"})
"""Keys about the whole message; the others are about one recipient (destination)."""

_TERM = re.compile(r"([A-Za-z]+)(<=|>=|!=|!~|=|<|>|~)(.*)", re.DOTALL)
_NUMBER = re.compile(r"(\d+(?:\.\d+)?)([A-Za-z]?)")
_AGE_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_SIZE_UNITS = {"": 1, "b": 1, "k": 1024, "m": 1024**2, "g": 1024**3}
_MAX_TERMS = 32
_MAX_TEXT = 1000


class FilterError(ValueError):
    """A bad filter: ``index`` is the 1-based term, ``term`` its text."""

    def __init__(self, index: int, term: str, reason: str) -> None:
        super().__init__(index, term, reason)
        self.index = index
        self.term = term
        self.reason = reason

    def __str__(self) -> str:
        shown = self.term if len(self.term) <= 60 else self.term[:57] + "..."
        return f"bad filter term {self.index} {shown!r}: {self.reason}"


@dataclass(frozen=True, slots=True)
class Term:
    """One ``key op value``; ``number`` is set for numeric keys (seconds, bytes)."""

    key: str
    op: str
    value: str
    number: float = 0.0
    pattern: re.Pattern[str] | None = None

    def text_matches(self, text: str) -> bool:
        """``=``/``!=``/``~``/``!~`` of a text key against ``text``."""
        if self.op in ("~", "!~"):
            hit = self.value.lower() in text.lower()
        else:
            assert self.pattern is not None
            hit = self.pattern.fullmatch(text.lower()) is not None
        return hit if self.op in ("=", "~") else not hit

    def number_matches(self, value: float) -> bool:
        n, op = self.number, self.op
        if op == "=":
            return value == n
        if op == "!=":
            return value != n
        if op == "<":
            return value < n
        if op == "<=":
            return value <= n
        if op == ">":
            return value > n
        return value >= n


@dataclass(frozen=True, slots=True)
class Filter:
    """Terms ANDed; the empty filter matches everything."""

    terms: tuple[Term, ...] = ()
    text: str = ""

    def of(self, keys: frozenset[str]) -> tuple[Term, ...]:
        return tuple(t for t in self.terms if t.key in keys)

    @property
    def message_terms(self) -> tuple[Term, ...]:
        return self.of(MESSAGE_KEYS)

    @property
    def recipient_terms(self) -> tuple[Term, ...]:
        return tuple(t for t in self.terms if t.key not in MESSAGE_KEYS)

    @property
    def needs_addresses(self) -> bool:
        """True when a term reads recipient addresses (kept on disk, not in memory)."""
        return any(t.key == "rcpt" for t in self.terms)

    def __str__(self) -> str:
        return self.text


def split_terms(text: str) -> list[str]:
    """Blank-separated words, double quotes grouping (quotes kept out, escapes applied)."""
    words: list[str] = []
    cur: list[str] = []
    in_word = quoted = False
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if quoted:
            if ch == "\\" and i + 1 < n:
                i += 1
                cur.append(text[i])
            elif ch == '"':
                quoted = False
            else:
                cur.append(ch)
        elif ch == '"':
            quoted = in_word = True
        elif ch in " \t":
            if in_word:
                words.append("".join(cur))
                cur, in_word = [], False
        else:
            cur.append(ch)
            in_word = True
        i += 1
    if quoted:
        raise FilterError(len(words) + 1, "".join(cur), "unterminated quote")
    if in_word:
        words.append("".join(cur))
    return words


def parse_filter(text: str, extra: frozenset[str] = frozenset()) -> Filter:
    """Parse a ``WHERE`` filter; raises :class:`FilterError`. ``extra`` names more
    text keys that one command knows (``WATCH``'s ``kind``)."""
    if len(text) > _MAX_TEXT:
        raise FilterError(0, text[:20], f"filter longer than {_MAX_TEXT} characters")
    words = [w for w in split_terms(text) if w.upper() != "AND"]
    if len(words) > _MAX_TERMS:
        raise FilterError(_MAX_TERMS + 1, words[_MAX_TERMS], "too many terms")
    terms = tuple(_term(i, w, extra) for i, w in enumerate(words, 1))
    return Filter(terms, " ".join(words))


def _term(index: int, word: str, extra: frozenset[str] = frozenset()) -> Term:
    m = _TERM.fullmatch(word)
    if m is None:
        raise FilterError(
            index, word, "expected key, operator and value (host=*.example)"
        )
    key, op, value = m.group(1).lower(), m.group(2), m.group(3)
    if key not in KEYS and key not in extra:
        known = " ".join(sorted(KEYS | extra))
        raise FilterError(index, word, f"unknown key {key!r} (known: {known})")
    if value == "":
        raise FilterError(index, word, "empty value")
    if key in NUMBER_KEYS:
        if op in ("~", "!~"):
            raise FilterError(index, word, f"{key} takes = != < <= > >=, not {op}")
        return Term(key, op, value, _number(index, word, key, value))
    if op in ("<", "<=", ">", ">="):
        raise FilterError(index, word, f"{key} takes = != ~ !~, not {op}")
    if key == "state":
        if op not in ("=", "!="):
            raise FilterError(index, word, f"state takes = or !=, not {op}")
        if value.lower() not in STATES:
            raise FilterError(index, word, f"state is one of {'|'.join(STATES)}")
        return Term(
            key, op, value.lower(), pattern=re.compile(re.escape(value.lower()))
        )
    pattern = None
    if op in ("=", "!="):
        pattern = re.compile(fnmatch.translate(value.lower()), re.DOTALL)
    return Term(key, op, value, pattern=pattern)


def _number(index: int, word: str, key: str, value: str) -> float:
    m = _NUMBER.fullmatch(value)
    if m is None:
        raise FilterError(index, word, f"{key} needs a number, not {value!r}")
    unit = m.group(2).lower()
    if key == "attempts":
        if unit or "." in m.group(1):
            raise FilterError(index, word, "attempts is a whole number")
        return float(m.group(1))
    units = _AGE_UNITS if key == "age" else _SIZE_UNITS
    if key == "age" and m.group(2) == "M":
        unit = "m"  # minutes; sizes take M for MiB
    if unit not in units:
        known = " ".join(u for u in units if u)
        raise FilterError(index, word, f"unknown {key} unit {m.group(2)!r} ({known})")
    return float(m.group(1)) * units[unit]


# -- the recipient index's keys (scheduler.core.rcptindex) ------------------------------

_GLOB_CHARS = frozenset("*?[]")
_QUOTING = re.compile(
    r'["\\(\t]'
).search  # what sends a quad through parse_quad's slow path
_EMPTY_KEY = zlib.crc32(b"")
_KEY = struct.Struct("=I").pack  # one key as array("I") writes it
_EMPTY_KEY_BYTES = _KEY(_EMPTY_KEY)


def address_key(text: str) -> int:
    """A 32-bit key of an address part (CRC-32: the same in every process)."""
    return zlib.crc32(text.encode("utf-8", "surrogateescape"))


def address_keys(address: str) -> tuple[int, int]:
    """(key of the local part, key of the domain) of a recipient address, lower case:
    the local part is the text before the first ``@`` (all of it when there is none),
    the domain the text after the last ``@`` (empty when there is none)."""
    a = address.lower()
    local, at, _ = a.partition("@")
    return address_key(local), address_key(a.rpartition("@")[2] if at else "")


def control_keys(
    control: ControlFile, rows: Sequence[SummaryRow] | None = None
) -> tuple[bytes, bytes, bytes]:
    """The keys of a control file's pending recipients (the addresses ``SHOW MSG``
    shows), as :func:`address_keys` gives them: local parts and domains, each as an
    ``array("I")``'s bytes; and the addresses themselves, lower case, UTF-8, each
    ending in a newline. ``rows``: its ``pending_summary()`` when already made."""
    local = array("I")
    dom = array("I")
    lines: list[bytes] = []
    add_local, add_dom, add_line, crc = (
        local.append,
        dom.append,
        lines.append,
        zlib.crc32,
    )
    for row in control.pending_summary() if rows is None else rows:
        quad = row[3]
        parts = quad.split(" ")
        if len(parts) == 4 and "" not in parts and _QUOTING(quad) is None:
            user = "" if parts[2] == "-" else parts[2]  # parse_quad's fast path
        else:
            user = parse_quad(quad)[2]
        b = user.lower().encode("utf-8", "surrogateescape")
        add_line(b)
        at = b.find(b"@")  # '@' is one byte in UTF-8: the same cut as address_keys
        if at < 0:
            add_local(crc(b))
            add_dom(_EMPTY_KEY)
        else:
            add_local(crc(b[:at]))
            add_dom(crc(b[b.rfind(b"@") + 1 :]))
    if lines:
        lines.append(b"")  # the last line ends in a newline too
    return local.tobytes(), dom.tobytes(), b"\n".join(lines)


def solo_keys(user: str) -> tuple[bytes, bytes, bytes]:
    """:func:`control_keys` of one pending recipient whose address (the quad's third
    word, ``-`` for none) is ``user``: the same bytes in a third of the time (the
    startup load's usual file, :func:`spool.plaincontrol.parse_solo`)."""
    b = b"" if user == "-" else user.lower().encode("utf-8", "surrogateescape")
    at = b.find(b"@")
    if at < 0:
        return _KEY(zlib.crc32(b)), _EMPTY_KEY_BYTES, b + b"\n"
    local, dom = b[:at], b[b.rfind(b"@") + 1 :]
    return _KEY(zlib.crc32(local)), _KEY(zlib.crc32(dom)), b + b"\n"


def index_keys(term: Term) -> list[tuple[str, int, int]]:
    """``(part, key, length)`` of each literal part of a ``rcpt=`` glob that the
    recipient index's keys can look up (the local part, then the domain; ``length``:
    of the part's text), as :func:`index_key`; empty when neither is literal."""
    if term.key != "rcpt" or term.op != "=":
        return []
    v = term.value.lower()
    local, at, _ = v.partition("@")
    out = []
    if not _GLOB_CHARS.intersection(local):
        out.append(("local", address_key(local), len(local)))
    domain = v.rpartition("@")[2]
    if at and not _GLOB_CHARS.intersection(domain):
        out.append(("domain", address_key(domain), len(domain)))
    return out


def index_key(term: Term) -> tuple[str, int] | None:
    """``("local", key)`` or ``("domain", key)`` that every address matching ``term``
    has (see :func:`address_keys`), or None when the term cannot use the index: only
    ``rcpt=`` globs with a literal local part or a literal domain can."""
    if term.key != "rcpt" or term.op != "=":
        return None
    v = term.value.lower()
    local, at, _ = v.partition("@")
    if not _GLOB_CHARS.intersection(local):
        return "local", address_key(local)  # the address starts with local + "@"
    domain = v.rpartition("@")[2]
    if at and not _GLOB_CHARS.intersection(domain):
        return "domain", address_key(domain)  # ... or ends with "@" + domain
    return None


def text_search(term: Term) -> tuple[bytes, re.Pattern[bytes]]:
    """How the recipient index's addresses (lower case, UTF-8, a line each) are
    searched for a ``rcpt=`` glob or ``rcpt~`` text: the longest literal part of the
    pattern (every matching line contains it; may be empty), and a ``re.M`` bytes regex
    that every matching line matches (a superset: ``?`` and ``[...]`` take one to four
    bytes, one character; the caller tests each line found with the term)."""
    value = term.value.lower()
    if term.op in ("~", "!~"):
        lit = value.encode("utf-8", "surrogateescape")
        return lit, re.compile(b"(?m)^[^\\n]*" + re.escape(lit) + b"[^\\n]*$")
    parts: list[bytes] = []  # regex pieces
    pieces: list[bytes] = [b""]  # literal runs
    i, n = 0, len(value)
    while i < n:
        c = value[i]
        i += 1
        if c in "*?":
            parts.append(b"[^\\n]*" if c == "*" else b"[^\\n]{1,4}")
            pieces.append(b"")
            continue
        if c == "[":
            j = i
            if j < n and value[j] == "!":
                j += 1
            if j < n and value[j] == "]":
                j += 1
            while j < n and value[j] != "]":
                j += 1
            if j < n:  # a class: one character (fnmatch's reading)
                i = j + 1
                parts.append(b"[^\\n]{1,4}")
                pieces.append(b"")
                continue
        lit = c.encode("utf-8", "surrogateescape")
        parts.append(re.escape(lit))
        pieces[-1] += lit
    return max(pieces, key=len), re.compile(b"(?m)^" + b"".join(parts) + b"$")


def text_searchable(term: Term) -> bool:
    """True when the recipient index's addresses can answer ``term``."""
    return term.key == "rcpt" and term.op in ("=", "~")
