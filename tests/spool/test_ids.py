from __future__ import annotations

import calendar

import pytest
from hypothesis import given, strategies as st

from spool.ids import (
    hash_prefix,
    is_candidate_name,
    message_number,
    parse_spool_id,
    spool_id,
)


@pytest.mark.parametrize(
    ("number", "levels", "prefix"),
    [
        (123456, 0, ""),
        (123456, 1, "I/"),
        (123456, 2, "Q/I/"),
        (100001, 2, "Y/F/"),  # the recordings: transport/Y/F/100001
        (100002, 2, "Y/G/"),
        (100003, 2, "Y/H/"),
        (100005, 2, "Y/J/"),
        (0, 2, "A/A/"),
        (675, 2, "Z/Z/"),
        (676, 2, "A/A/"),
    ],
)
def test_hash_prefix(number: int, levels: int, prefix: str) -> None:
    assert hash_prefix(number, levels) == prefix


def test_message_number() -> None:
    assert message_number("123456") == 123456
    assert message_number("123456-4711") == 123456
    assert message_number("Q/I/123456-4711-2") == 123456  # submit's fallback names
    assert message_number("Q/I/123456") == 123456
    assert message_number("100005-etrn") == 100005
    with pytest.raises(ValueError, match="not a spool name"):
        message_number("core")
    with pytest.raises(ValueError, match="not a spool name"):
        message_number("")


def test_is_candidate_name() -> None:
    assert is_candidate_name("123456")
    assert is_candidate_name("1-etrn")
    assert not is_candidate_name(".123456")
    assert not is_candidate_name("core")
    assert not is_candidate_name("")
    assert not is_candidate_name("Q")


def test_spool_id_without_nanoseconds() -> None:
    assert spool_id(123456, 1700000000) == "S123456AbjKNWNU"
    assert parse_spool_id("S123456AbjKNWNU") == (123456, 1700000000, 0)


def test_spool_id_recorded_with_nanoseconds() -> None:
    mtime = calendar.timegm((2026, 11, 22, 1, 40, 2, 0, 0, 0))
    assert parse_spool_id("S100003AbmKVBkC35DCm") == (100003, mtime, 501493930)
    assert spool_id(100003, mtime, 501493930) == "S100003AbmKVBkC35DCm"


@pytest.mark.parametrize(
    "bad",
    ["", "S", "X123456AbjKNWNU", "S123456", "SAbjKNWNU", "S12AbjKNWN!", "S1AbjZNWNU"],
)
def test_parse_spool_id_rejects(bad: str) -> None:
    with pytest.raises(ValueError, match="not a spool-id"):
        parse_spool_id(bad)


@given(
    st.integers(0, 10**12),
    st.integers(0, 2**36),
    st.integers(0, 999_999_999),
)
def test_spool_id_round_trip(number: int, mtime: int, ns: int) -> None:
    text = spool_id(number, mtime, ns)
    back = parse_spool_id(text)
    # '0' is in the alphabet twice (26 and 62); the encoding is what must agree.
    assert spool_id(*back) == text
    assert back[0] == number
