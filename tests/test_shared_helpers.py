"""The lead's shared helpers: saytime, durations, the MAILQ v2 authenticator, dot-stuffing."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, strategies as st

from mailq.protocol.auth import CHALLENGE_PREFIX, authenticator, new_challenge, verify
from mailq.protocol.lines import stuff_line, stuff_lines, unstuff_line
from spool.timefmt import parse_duration, saytime, saytime_long

# MQ2-REF 9.1: the reference table of saytime values.
SAYTIME_TABLE = [
    (0, "0s"),
    (59, "59s"),
    (60, "1m"),
    (61, "1m1s"),
    (3600, "1h"),
    (3661, "1h1m1s"),
    (86399, "23h59m59s"),
    (86400, "1d"),
    (86401, "1d1s"),
    (90061, "1d1h"),
    (151282, "1d18h"),
    (87082, "1d11m22s"),
    (40288, "11h11m28s"),
    (-125, "-2m5s"),
]


@pytest.mark.parametrize(("seconds", "text"), SAYTIME_TABLE)
def test_saytime_matches_reference_table(seconds: int, text: str) -> None:
    assert saytime(seconds) == text


def test_saytime_values_seen_in_recordings() -> None:
    # raw/11: QA=2h2m19s, QA=3h14s, QA=1m44s; mailq/50: expires in 4d23h
    assert saytime(2 * 3600 + 2 * 60 + 19) == "2h2m19s"
    assert saytime(3 * 3600 + 14) == "3h14s"
    assert saytime(4 * 86400 + 23 * 3600 + 59 * 60 + 10) == "4d23h"


@given(st.integers(min_value=-(10**9), max_value=10**9))
def test_saytime_is_compact_and_parses_back_when_no_part_was_dropped(v: int) -> None:
    text = saytime(v)
    assert re.fullmatch(r"-?(\d+d)?(\d+h)?(\d+m)?(\d+s)?", text)
    if not (abs(v) >= 86400 and abs(v) % 86400 >= 3600):
        assert parse_duration(text.lstrip("-")) == abs(v)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(5 * 86400, "5 days"), (90, "1 min 30 secs"), (3600, "1 hour"), (0, "0 secs")],
)
def test_saytime_long(seconds: int, text: str) -> None:
    assert saytime_long(seconds) == text


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90", 90), ("5m", 300), ("1d2h", 93600), ("1h30m", 5400), ("1h5m20s", 3920)],
)
def test_parse_duration(text: str, seconds: int) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("bad", ["", "abc", "5x", "1h-3m", "m"])
def test_parse_duration_rejects_junk(bad: str) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(bad)


@pytest.mark.parametrize(
    ("challenge", "password", "digest"),
    [
        # MQ2-REF 6.1 and the transcripts README, case 04
        (
            "220 MAILQ-V2-CHALLENGE: 942665308.906504.3",
            "nobody",
            "7fa458248b5fcfbfaedc78b99e9a0e28",
        ),
        (
            "220 MAILQ-V2-CHALLENGE: 942665308.906504.3",
            "my-passwd",
            "6d91c6f76b1f4a2aede87bf5f9b9b82a",
        ),
        (
            "220 MAILQ-V2-CHALLENGE: 1700000000.5123.1",
            "nobody",
            "4c2660a639c3d8d7de18507cd327912f",
        ),
        (
            "220 MAILQ-V2-CHALLENGE: 1795312217.203136.5",
            "adminpw",
            "e1c005130201068fdbb9710e682ee64a",
        ),
    ],
)
def test_authenticator_reference_values(
    challenge: str, password: str, digest: str
) -> None:
    assert authenticator(challenge, password) == digest
    assert verify(challenge, password, digest)
    assert verify(challenge, password, digest.upper() + "  ")  # A5: lenient
    assert not verify(challenge, password + "x", digest)


def test_new_challenge_keeps_prefix_and_is_unpredictable() -> None:
    a, b = new_challenge(1), new_challenge(1)
    assert a.startswith(CHALLENGE_PREFIX)
    assert a != b
    token = a[len(CHALLENGE_PREFIX) :]
    assert " " not in token
    assert "\t" not in token
    assert len(token.split(".")[-1]) == 32  # 128 random bits, hex


@given(st.lists(st.text(alphabet=st.characters(blacklist_characters="\n"))))
def test_dot_stuffing_round_trip(lines: list[str]) -> None:
    wire = "".join(stuff_lines(lines))
    received = wire.split("\n")[:-1]
    assert all(line != "." for line in received)
    assert [unstuff_line(x) for x in received] == lines
    assert [stuff_line(x) for x in lines] == received
