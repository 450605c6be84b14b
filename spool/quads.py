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


# ------------------------------------------------- ZMailer's own reading of a quad
#
# ZMailer's scheduler does not unquote a quad to group recipients: it lower-cases the
# line and cuts it with an RFC 821 scanner, keeping quotes, ``-`` and everything else as
# written (``host -`` is the thread ``local/-``). The functions below give the same cuts,
# so that vertices, thread names and the sender of SHOW THREAD are the real program's.


def skip821(text: str, i: int) -> int:
    """The end of the RFC 821 token starting at ``i``: the first blank or TAB outside
    ``"..."``; a backslash escapes the next character."""
    n = len(text)
    quote = False
    while i < n:
        c = text[i]
        if c == "\\":
            i += 1
            if i >= n:
                break
            i += 1
            continue
        if c == '"':
            quote = not quote
        elif not quote and (c == " " or c == "\t"):
            break
        i += 1
    return i


def zm_destination(quad: str, after: str = "") -> tuple[str, str, bool]:
    """``(channel, host, ok)`` of a recipient quad as ZMailer's scheduler groups it
    (values lower-cased, quotes and ``-`` kept). ``ok`` False is a host the real
    scheduler cannot cut (an unclosed or single ``(...)`` list, nothing after the
    channel): it does not name a vertex of its own but rides along with its neighbour
    in sort order; ``host`` is then what the real program would name it by if it came
    last. ``after`` is the first character of the next line (a list left unclosed at
    the end of the line is read on into it, as the real scanner does)."""
    s = quad.lower()
    n = len(s)
    i = 0
    while i < n and s[i] == " ":
        i += 1
    e = skip821(s, i)
    channel = s[i:e]
    h = e + 1 if e < n else e
    while h < n and s[h] == " ":
        h += 1
    if h < n and s[h] == "(":
        cp = h
        while cp < n and s[cp] == "(":
            cp += 1
        while cp < n and s[cp] not in " \t)":
            cp += 1
        if cp >= n:
            return channel, s[h:], False
        ehost = cp
        start = h
        while s[start] == "(":
            start += 1
        cp = h + 1
        while cp < n and s[cp] == "(":
            while cp < n and s[cp] != ")":
                cp += 1
            if cp < n:
                cp += 1
        cp += 1
        nxt = s[cp] if cp < n else (after[:1] if cp == n + 1 else "")
        if nxt not in (" ", "\t") or not nxt:
            return channel, s[start:], False
        return channel, s[start:ehost], True
    ehost = skip821(s, h)
    if ehost == h:
        return channel, s[h:], False
    return channel, s[h:ehost], True


def zm_sender_address(value: str) -> str:
    """The sender address ZMailer's scheduler takes from an ``s`` line's value (the
    third token, quotes kept; an ``error`` channel gives ``""``)."""
    if '"' not in value and "\\" not in value and "\t" not in value:
        words = value.split(" ")
        words = [w for w in words if w] if "" in words else words
        if not words or words[0] == "error":
            return ""
        return words[2] if len(words) > 2 else ""
    n = len(value)
    i = 0
    while i < n and value[i] == " ":
        i += 1
    j = value.find(" ", i)
    channel = value[i:] if j < 0 else value[i:j]
    i = n if j < 0 else j + 1
    while i < n and value[i] == " ":
        i += 1
    i = skip821(value, i)
    while i < n and value[i] == " ":
        i += 1
    user = value[i : skip821(value, i)]
    return "" if channel == "error" else user
