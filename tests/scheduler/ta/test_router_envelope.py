"""The router/ envelope we write is the one the real router was seen to accept."""

from __future__ import annotations

from pathlib import Path

from spool import routersubmit

FIXTURES = Path(__file__).parent / "fixtures"


def test_hold_release_envelope_is_the_recorded_one() -> None:
    env = routersubmit.envelope(
        "alice@example.com",
        [("bob@example.net", "ORCPT=rfc822;bob@example.net NOTIFY=FAILURE")],
        via="suspension",
    )
    data = env + b"Subject: t\nFrom: alice@example.com\n\nhi\n"
    assert data == (FIXTURES / "router_input_hold.txt").read_bytes()


def test_bounce_envelope_is_the_recorded_one() -> None:
    to = "alice@example.com"
    env = routersubmit.envelope(
        None,
        [(to, f"NOTIFY=NEVER ORCPT=RFC822;{routersubmit.xtext(to)}")],
        errormsg=True,
    )
    data = env + b"Subject: bounce\n\nsorry\n"
    assert data == (FIXTURES / "router_input_errormail.txt").read_bytes()
