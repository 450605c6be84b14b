"""Parsing TA output lines and formatting job lines (MQ2-REF §13)."""

from __future__ import annotations

import pytest
from hypothesis import given, strategies as st

from scheduler.core.taproto import (
    STATUSES,
    Debug,
    Garbage,
    Hungry,
    Report,
    Resync,
    format_job,
    parse_line,
    parse_retryat,
)


def test_control_lines() -> None:
    assert parse_line("#hungry") == Hungry()
    assert parse_line("#hungry\r") == Hungry()
    assert parse_line("#resync Y/F/100001") == Resync("Y/F/100001")
    assert parse_line("# some debug") == Debug("some debug")
    assert parse_line("") == Debug("")
    assert isinstance(parse_line("#resync"), Garbage)


@pytest.mark.parametrize("status", sorted(STATUSES))
def test_every_status_word(status: str) -> None:
    rep = parse_line(
        f"100001/111\ta@b\x01failed\x015.0.0\x01x\x01h\t{status} the text\tx"
    )
    assert rep == Report(
        100001, 111, "a@b\x01failed\x015.0.0\x01x\x01h", status, "the text\tx"
    )


def test_empty_notary_and_no_message() -> None:
    assert parse_line("5/12\t\tok") == Report(5, 12, "", "ok", "")
    assert parse_line("5/12\t\tbogus") == Report(5, 12, "", "bogus", "")


@pytest.mark.parametrize(
    "line",
    ["garbage", "5/12", "5/12\tnotary only", "x5/12\t\tok", "5/1x\t\tok", "5/12\t\t  "],
)
def test_misformed_diagnostics(line: str) -> None:
    assert isinstance(parse_line(line), Garbage)


@given(st.text())
def test_any_text_parses_to_something(text: str) -> None:
    assert isinstance(parse_line(text), Hungry | Resync | Debug | Report | Garbage)


def test_retryat_arguments() -> None:
    assert parse_retryat("+60 busy now", 1000) == (1060, "busy now")
    assert parse_retryat("2000", 1000) == (2000, "")
    assert parse_retryat("", 1000) == (None, "")
    assert parse_retryat("soon please", 1000) == (None, "soon please")


def test_job_lines() -> None:
    assert (
        format_job("Y/F/100001", "example.net", False) == b"Y/F/100001\texample.net\n"
    )
    assert format_job("Y/F/100001", "example.net", True) == b"Y/F/100001\n"


def test_message_keeps_its_leading_cr() -> None:
    """Issue 12 item 3: ZMailer cuts the status at the first white-space character and
    keeps the rest as the message, so SHOW THREAD shows ``\\r<<- MAIL From:...``."""
    line = "100001/132\t\x03\x01deferred\x01\tdeferred \r<<- MAIL From:<a@b>\r->> 451 x"
    rep = parse_line(line)
    assert isinstance(rep, Report)
    assert (rep.status, rep.message) == ("deferred", "\r<<- MAIL From:<a@b>\r->> 451 x")
    rep = parse_line("1/2\tn\tok  two blanks")
    assert isinstance(rep, Report)
    assert (rep.status, rep.message) == ("ok", " two blanks")
