"""Quads (``channel host user privilege``) of ``r`` and ``s`` lines: parsing and quoting
(MQ2-REF 12.3, SCHED-REF 2.2). Pure functions over text."""

from __future__ import annotations

__all__ = ["format_quad", "parse_host", "parse_quad"]


def _tokens(text: str) -> list[tuple[str, bool]]:
    """Split a quad on blanks; quotes and backslashes are honoured, and an unquoted
    token starting with ``(`` runs to its matching ``)`` even across blanks.
    Returns ``(value, was_quoted)`` pairs."""
    out: list[tuple[str, bool]] = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c == " " or c == "\t":
            i += 1
            continue
        buf: list[str] = []
        quoted = False
        depth = 0
        while i < n:
            c = text[i]
            if c == '"':
                quoted = True
                i += 1
                while i < n and text[i] != '"':
                    if text[i] == "\\" and i + 1 < n:
                        i += 1
                    buf.append(text[i])
                    i += 1
                i += 1
                continue
            if c == "\\" and i + 1 < n:
                buf.append(text[i + 1])
                i += 2
                continue
            if c == "(" and not quoted:
                depth += 1
            elif c == ")" and depth:
                depth -= 1
            elif (c == " " or c == "\t") and depth == 0:
                break
            buf.append(c)
            i += 1
        out.append(("".join(buf), quoted))
    return out


def parse_quad(text: str) -> tuple[str, str, str, str]:
    """``channel host user privilege`` from quad text: ``"..."`` with ``\\`` escapes,
    an unquoted ``-`` is empty; missing fields are empty, extra ones are ignored."""
    parts = text.split(" ")
    if (
        len(parts) == 4
        and '"' not in text
        and "\\" not in text
        and "(" not in text
        and "\t" not in text
        and "" not in parts
    ):
        a, b, c, d = parts
        return (
            "" if a == "-" else a,
            "" if b == "-" else b,
            "" if c == "-" else c,
            "" if d == "-" else d,
        )
    values = ["" if (v == "-" and not q) else v for v, q in _tokens(text)[:4]]
    values.extend([""] * (4 - len(values)))
    return values[0], values[1], values[2], values[3]


def parse_host(token: str) -> tuple[str, bool]:
    """``(host, ok)`` for a host value (SCHED-REF 2.2 step 3): ``(mx1 mx2)`` lists give
    their first name; an empty host or a malformed list is not ok."""
    if not token:
        return "", False
    if token[0] != "(":
        return token, True
    depth = 0
    for i, c in enumerate(token):
        if c == "(":
            depth += 1
        elif c == ")":
            depth -= 1
            if depth == 0:
                if i != len(token) - 1:
                    return "", False
                break
    else:
        return "", False
    start = 0
    while start < len(token) and token[start] == "(":
        start += 1
    end = start
    while end < len(token) and token[end] not in " \t)":
        end += 1
    host = token[start:end]
    return host, bool(host)


def _quote(value: str) -> str:
    if "\n" in value:
        raise ValueError(f"newline in a quad value: {value!r}")
    if value == "":
        return "-"
    if value == "-" or any(c in value for c in ' \t"\\()'):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return value


def format_quad(channel: str, host: str, user: str, privilege: str) -> str:
    """The inverse of :func:`parse_quad` (empty -> ``-``; blanks/quotes -> ``"..."``)."""
    return " ".join((_quote(channel), _quote(host), _quote(user), _quote(privilege)))
