"""ZMailer's own glob matcher for scheduler.conf selectors (SCHED-REF 1.3).

Not fnmatch: ``[...]`` has no ranges, ``[^...]`` is broken the way the original is (it
never matches in practice, S10), ``{a,b}`` must match the whole rest of the name and
ignores anything after the ``}``, and ``\\c`` checks a literal character but then
re-reads it as a pattern character.  These bugs are kept on purpose: changing them would
change which clause a recipient gets.
"""

from __future__ import annotations

from collections.abc import Callable

__all__ = ["compile_glob", "zglob"]

_SPECIAL = frozenset("*[{\\?")


def zglob(pattern: str, name: str) -> bool:
    """True if ``name`` matches ``pattern`` by ZMailer's rules (case-sensitive)."""
    return _match(pattern, 0, name, 0)


def _match(p: str, i: int, s: str, j: int) -> bool:
    while True:
        if i >= len(p):
            return j == len(s)
        c = p[i]
        if c == "{":
            alts = p[i + 1 :].split("}", 1)[0].split(",")
            return s[j:] in alts
        if c == "*":
            rest = p[i + 1 :]
            if not rest:
                return True
            if not any(x in _SPECIAL for x in rest):
                return s[j:].endswith(rest)
            return any(_match(p, i + 1, s, k) for k in range(j, len(s) + 1))
        if c == "\\":
            # The original checks the escaped character, then re-reads it as a pattern
            # character: ``\*`` and ``\?`` still act as wildcards after the check.
            if i + 1 >= len(p) or j >= len(s) or p[i + 1] != s[j]:
                return False
            i += 1
            continue
        if j >= len(s):
            return False
        if c == "[":
            close = p.find("]", i + 1)
            if close < 0:
                return False
            body = p[i + 1 : close]
            if body.startswith("^"):
                if s[j] in body[1:]:
                    return False
                i, j = close, j + 1  # stays ON the ']' (S10)
                continue
            if s[j] not in body:
                return False
            i, j = close + 1, j + 1
            continue
        if c != "?" and c != s[j]:
            return False
        i, j = i + 1, j + 1


def compile_glob(pattern: str) -> Callable[[str], bool]:
    """A matcher equivalent to ``zglob(pattern, name)``, fast for the common shapes."""
    if not any(c in _SPECIAL for c in pattern):
        return pattern.__eq__
    head, tail = pattern[:1], pattern[1:]
    if pattern == "*":
        return lambda name: True
    if head == "*" and not any(c in _SPECIAL for c in tail):
        return lambda name: name.endswith(tail)
    body = pattern[:-1]
    if pattern.endswith("*") and not any(c in _SPECIAL for c in body):
        return lambda name: name.startswith(body)
    literal, brace, alternatives = tail.partition("{")
    if head == "*" and brace and not any(c in _SPECIAL for c in literal):
        # "*.{se,dk}": some suffix equals ".se" or ".dk"; text after "}" is ignored
        endings = tuple(
            literal + alt for alt in alternatives.split("}", 1)[0].split(",")
        )
        return lambda name: name.endswith(endings)
    return lambda name: _match(pattern, 0, name, 0)
