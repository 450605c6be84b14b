"""The WHERE filter language: parsing, errors that point at the term, matching."""

from __future__ import annotations

import pytest
from hypothesis import given, strategies as st

from spool.filters import KEYS, FilterError, parse_filter, split_terms


def test_terms_are_anded_and_typed() -> None:
    f = parse_filter("rcpt=*@gmail.com host=*.example age>=2h size<1M state=held")
    assert [(t.key, t.op) for t in f.terms] == [
        ("rcpt", "="),
        ("host", "="),
        ("age", ">="),
        ("size", "<"),
        ("state", "="),
    ]
    assert f.terms[2].number == 7200
    assert f.terms[3].number == 1024 * 1024
    assert f.needs_addresses
    assert [t.key for t in f.message_terms] == ["age", "size"]


def test_globs_are_case_insensitive_and_whole() -> None:
    (t,) = parse_filter("rcpt=*@Gmail.com").terms
    assert t.text_matches("Bob@gmail.COM")
    assert not t.text_matches("bob@gmail.com.evil")
    (n,) = parse_filter("host!=*.example").terms
    assert n.text_matches("example.org")
    assert not n.text_matches("a.example")


def test_diag_substring_and_quotes() -> None:
    (t,) = parse_filter('diag~"connection refused"').terms
    assert t.value == "connection refused"
    assert t.text_matches("451 Connection Refused by peer")
    (t2,) = parse_filter("diag!~timeout").terms
    assert t2.text_matches("refused")


def test_and_is_optional() -> None:
    assert len(parse_filter("channel=smtp AND attempts>3").terms) == 2


def test_numbers_compare() -> None:
    (t,) = parse_filter("attempts>=3").terms
    assert t.number_matches(3)
    assert not t.number_matches(2)
    (a,) = parse_filter("age<90m").terms
    assert a.number == 5400


@pytest.mark.parametrize(
    ("text", "index", "reason"),
    [
        ("host=a ag<2x", 2, "unknown key"),
        ("age<2x", 1, "unknown age unit"),
        ("size>1T", 1, "unknown size unit"),
        ("state=frozen", 1, "state is one of"),
        ("attempts~3", 1, "attempts takes"),
        ("host<foo", 1, "host takes"),
        ("host=", 1, "empty value"),
        ("hostname", 1, "expected key"),
        ("attempts>2.5", 1, "whole number"),
        ('diag~"open', 1, "unterminated quote"),
    ],
)
def test_bad_terms_are_named(text: str, index: int, reason: str) -> None:
    with pytest.raises(FilterError) as info:
        parse_filter(text)
    assert info.value.index == index
    assert reason in info.value.reason
    assert str(info.value).startswith(f"bad filter term {index} ")


_values = st.text(
    alphabet=st.characters(exclude_categories=["Cs"], exclude_characters="\x00"),
    min_size=1,
    max_size=20,
)


@given(st.text(max_size=200))
def test_any_text_parses_or_raises_filter_error(text: str) -> None:
    error: FilterError | None = None
    keys: list[str] = []
    try:
        keys = [t.key for t in parse_filter(text).terms]
    except FilterError as exc:
        error = exc
    if error is not None:
        assert error.index >= 0
        assert str(error)
    assert all(k in KEYS for k in keys)


@given(
    st.sampled_from(["id", "sender", "rcpt", "channel", "host", "diag"]),
    st.sampled_from(["=", "!=", "~", "!~"]),
    _values,
)
def test_quoted_text_values_round_trip(key: str, op: str, value: str) -> None:
    quoted = '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    (t,) = parse_filter(f"{key}{op}{quoted}").terms
    assert (t.key, t.op, t.value) == (key, op, value)
    if op == "=":
        assert t.text_matches(value.replace("*", "x").replace("?", "x")) or any(
            c in value for c in "[]"
        )


@given(st.lists(st.text(alphabet='ab \t"\\', max_size=8), max_size=6))
def test_split_terms_never_loses_plain_words(words: list[str]) -> None:
    plain = [w for w in words if w and not any(c in w for c in ' \t"\\')]
    try:
        got = split_terms(" ".join(plain))
    except FilterError:
        pytest.fail("plain words never fail")
    assert got == plain


@given(
    st.sampled_from(["age", "size", "attempts"]),
    st.sampled_from(["=", "!=", "<", "<=", ">", ">="]),
    st.integers(min_value=0, max_value=10**9),
)
def test_numbers_parse(key: str, op: str, n: int) -> None:
    (t,) = parse_filter(f"{key}{op}{n}").terms
    assert t.number == n
