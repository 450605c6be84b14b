"""Nagios threshold ranges (the plugin guidelines' table) and the one-line verdict."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, strategies as st

from mailq.client.nagios import (
    CRITICAL,
    OK,
    UNKNOWN,
    WARNING,
    CheckResult,
    Range,
    combine,
    parse_range,
)


@pytest.mark.parametrize(
    ("spec", "alerts", "quiet"),
    [
        ("10", [-1, 11], [0, 10]),
        ("10:", [9, -5], [10, 1000]),
        ("~:10", [11], [-1000, 10]),
        ("10:20", [9, 21], [10, 20]),
        ("@10:20", [10, 15, 20], [9, 21]),
        ("@10", [0, 10], [11, -1]),
    ],
)
def test_guideline_examples(spec: str, alerts: list[int], quiet: list[int]) -> None:
    r = parse_range(spec)
    assert all(r.alerts(v) for v in alerts)
    assert not any(r.alerts(v) for v in quiet)


@pytest.mark.parametrize("bad", ["", "@", "x", "10:5", "1:2:3", "~", "--1", " : "])
def test_malformed(bad: str) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - the message varies by case
        parse_range(bad)


bounds = st.integers(-1000, 1000).map(float)


@given(bounds, bounds, st.booleans(), st.booleans(), st.booleans())
def test_perf_text_round_trips(
    a: float, b: float, inside: bool, open_start: bool, open_end: bool
) -> None:
    start, end = min(a, b), max(a, b)
    r = Range(-math.inf if open_start else start, math.inf if open_end else end, inside)
    assert parse_range(r.perf() or "~:") == r


def test_combine_several_hosts() -> None:
    code, lines = combine(
        [
            ("mx1", CheckResult(WARNING, "w", ("messages=5;4;;0;",))),
            ("mx2", CheckResult(UNKNOWN, "mx2 port 174: connect failed")),
            ("mx 3", CheckResult(OK, "fine", ("kids=1;;;0;",))),
        ]
    )
    assert code == UNKNOWN  # worse than WARNING, better than CRITICAL
    assert lines[0] == (
        "MAILQ UNKNOWN - 3 hosts: 1 WARNING, 1 UNKNOWN, 1 OK (mx1 WARNING, mx2 UNKNOWN)"
        " | 'mx1 messages'=5;4;;0; 'mx 3 kids'=1;;;0;"
    )
    assert lines[1:] == [
        "mx1: MAILQ WARNING - w | messages=5;4;;0;",
        "mx2: MAILQ UNKNOWN - mx2 port 174: connect failed",
        "mx 3: MAILQ OK - fine | kids=1;;;0;",
    ]
    assert combine([("a", CheckResult(CRITICAL, "c"))]) == (
        CRITICAL,
        ["MAILQ CRITICAL - c"],
    )
