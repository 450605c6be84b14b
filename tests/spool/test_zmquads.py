"""How ZMailer's scheduler cuts quads (issue 12): the thread names and senders the real
scheduler showed for these forms (bench/oracle_diff recordings)."""

from __future__ import annotations

import pytest

from spool.quads import zm_destination, zm_sender_address


@pytest.mark.parametrize(
    ("quad", "want"),
    [
        ("local - root 65534", ("local", "-", True)),
        ("SMTP Example.NET User@Example.NET 0", ("smtp", "example.net", True)),
        (
            "smtp ((mx1.example.com)(mx2.example.com mx3.example.com)) u 0",
            ("smtp", "mx1.example.com", True),
        ),
        ("local ((h)) root 0", ("local", "h", True)),
        ("local  h root 0", ("local", "h", True)),  # extra blanks are skipped
        ("local\tlists.example.com\tx\t1", ("local", "lists.example.com", True)),
        ("hold b.com) x 0", ("hold", "b.com)", True)),
        ('local - "o\'hara smith" 1', ("local", "-", True)),
        ("hold (h) x 1", ("hold", "h) x 1", False)),  # a single list: not cut
        ("smtp (mx1 mx2) u 0", ("smtp", "mx1 mx2) u 0", False)),
        ("smtp ((mx1 u@x 0", ("smtp", "mx1 u@x 0", False)),  # unclosed
        ("local \th root 0", ("local", "\th root 0", False)),  # a TAB after a blank
        ("local ((h))", ("local", "h))", False)),  # nothing after the list
    ],
)
def test_zm_destination(quad: str, want: tuple[str, str, bool]) -> None:
    assert zm_destination(quad) == want


@pytest.mark.parametrize(
    ("value", "want"),
    [
        ('local "o\'hara smith" "o\'hara smith" 1', '"o\'hara smith"'),
        ('smtp example.com "john doe"@example.com 65534', '"john doe"@example.com'),
        ("local - - 0", "-"),
        ("error <> <> 0", ""),
        ("smtp mx.example.org <> 65534", "<>"),
        ("local o.hara@example.com o.hara@example.com 1", "o.hara@example.com"),
    ],
)
def test_zm_sender_address(value: str, want: str) -> None:
    assert zm_sender_address(value) == want
