"""zglob: ZMailer's selector glob, bugs included (SCHED-REF 1.3, S10)."""

from __future__ import annotations

import pytest
from hypothesis import given, strategies as st

from scheduler.config.globs import compile_glob, zglob


def reference_zglob(p: str, s: str) -> bool:
    """SCHED-REF 1.3's rendering, copied as printed (its ``\\c`` step is literal)."""
    i = j = 0
    while True:
        c = p[i] if i < len(p) else ""
        if c == "{":
            alts = p[i + 1 :].split("}", 1)[0].split(",")
            return s[j:] in alts
        if c == "*":
            rest = p[i + 1 :]
            if rest == "":
                return True
            if not any(x in rest for x in "*[{\\?"):
                return s[j:].endswith(rest)
            return any(reference_zglob(rest, s[k:]) for k in range(j, len(s) + 1))
        if c == "\\":
            if i + 1 >= len(p) or j >= len(s) or p[i + 1] != s[j]:
                return False
            i, j = i + 2, j + 1
            continue
        if c == "[":
            if j >= len(s):
                return False
            close = p.find("]", i + 1)
            if close < 0:
                return False
            body = p[i + 1 : close]
            if body.startswith("^"):
                if s[j] in body[1:]:
                    return False
                i, j = close, j + 1
                continue
            if s[j] not in body:
                return False
            i, j = close + 1, j + 1
            continue
        if c == "?":
            if j >= len(s):
                return False
            i, j = i + 1, j + 1
            continue
        if c == "":
            return j == len(s)
        if j >= len(s) or c != s[j]:
            return False
        i, j = i + 1, j + 1


@pytest.mark.parametrize(
    ("pattern", "name", "expected"),
    [
        ("smtp", "smtp", True),
        ("smtp", "smtpx", False),
        ("smtp*", "smtp-etrn", True),
        ("*", "", True),
        ("*.fi", "mx.funet.fi", True),
        ("*.fi", "fi", False),
        ("*-gw.funet.fi", "a-gw.funet.fi", True),
        ("*funet.fi", "funet.fi", True),
        ("*.{se,dk,is,no}", "mail.example.se", True),
        ("*.{se,dk,is,no}", "mail.example.fi", False),
        ("*.{se,dk}", "x.se.dk", True),  # any split: the rest after some '.' is "dk"
        ("{a,b}zzz", "a", True),  # text after '}' is ignored
        ("x{,y}", "x", True),  # empty alternative
        ("?", "a", True),
        ("?", "", False),
        ("a?c", "abc", True),
        ("[abc]x", "bx", True),
        ("[abc]x", "dx", False),
        ("[a-c]", "b", False),  # no ranges: '-' is literal
        ("[a-c]", "-", True),
        ("[^a]", "b", False),  # S10: negation needs a ']' next
        ("[^a]", "b]", True),
        ("[^a]", "a", False),
        ("[abc", "a", False),  # unterminated set
        ("\\a", "a", True),
        ("\\a", "b", False),
        ("\\*", "*xyz", True),  # the check passes, then '*' is re-read as a wildcard
        ("Smtp", "smtp", False),  # case-sensitive
        ("*a*b", "xxaxxb", True),
        ("*a*b", "xxbxxa", False),
    ],
)
def test_examples(pattern: str, name: str, expected: bool) -> None:
    assert zglob(pattern, name) is expected


_pattern_chars = st.sampled_from(list("ab.-*?[]^{},\\"))
_name_chars = st.sampled_from(list("ab.-]"))


@given(st.text(_pattern_chars, max_size=8), st.text(_name_chars, max_size=8))
def test_agrees_with_the_reference_rendering(pattern: str, name: str) -> None:
    # Names never contain '*' or '?', where the two renderings of "\c" differ.
    assert zglob(pattern, name) == reference_zglob(pattern, name)


@given(st.text(st.sampled_from(list("abc.-")), max_size=10))
def test_literal_pattern_matches_only_itself(name: str) -> None:
    assert zglob(name, name)
    assert not zglob(name, name + "x")


@given(st.text(st.sampled_from(list("abc.-")), max_size=6), st.text(max_size=6))
def test_star_suffix(suffix: str, prefix: str) -> None:
    assert zglob("*" + suffix, prefix + suffix)
    assert zglob(suffix + "*", suffix + prefix)


@given(st.text(_pattern_chars, max_size=8), st.text(_name_chars, max_size=8))
def test_compiled_matcher_agrees(pattern: str, name: str) -> None:
    assert compile_glob(pattern)(name) == zglob(pattern, name)


@pytest.mark.parametrize(
    "pattern", ["smtp", "*", "*.fi", "smtp*", "*.{se,dk}x", "*{a,}", "a*b", "[ab]*"]
)
@pytest.mark.parametrize(
    "name", ["", "smtp", "x.fi", "smtp-etrn", "a.se", "a.dk", "a", "ab"]
)
def test_compiled_shapes(pattern: str, name: str) -> None:
    assert compile_glob(pattern)(name) == zglob(pattern, name)
