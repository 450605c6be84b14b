"""DSNs: the d-line pass over real control files and the RFC 3464 structure."""

from __future__ import annotations

import email
import os
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, strategies as st

from spool import controlfile, dsn, dsnpass, store
from spool.controlfile import ControlFile
from spool.layout import Postoffice, init_postoffice
from spool.scan import scan
from spool.submit import submit
from tests.scheduler.ta.conftest import add_after_recipients

MESSAGE = (
    b"From: Alice <alice@example.com>\n"
    b"To: bob@example.net\n"
    b"Subject: dsn test\n"
    b"Message-ID: <dsn-test@example.com>\n"
    b"\n"
    b"The body.\n"
)
NOW = 1_795_312_765


@pytest.fixture
def po(tmp_path: Path) -> Postoffice:
    return init_postoffice(tmp_path / "po")


def _cf(po: Postoffice, rel: str) -> ControlFile:
    path = po.control_path(rel)
    return controlfile.parse(path.read_bytes(), str(path))


def _d(po: Postoffice, rel: str, user: str, notary: str, message: str) -> None:
    cf = _cf(po, rel)
    r = next(r for r in cf.recipients if r.user == user)
    line = controlfile.format_diagnostic(
        r.offset, r.header_offset, r.dsn_offset, NOW - 10, notary, message
    )
    store.append_diagnostic(po.control_path(rel), line)


def _new_messages(po: Postoffice, old: str) -> list[str]:
    return [e.relpath for e in scan(po) if e.relpath != old]


def _report(po: Postoffice, rel: str) -> Any:
    cf = _cf(po, rel)
    return email.message_from_bytes(po.message_path(rel, cf.mid).read_bytes())


def test_failed_recipient_produces_a_full_dsn(po: Postoffice) -> None:
    rel = submit(
        po, "alice@example.com", ["bob@example.net", "carol@example.net"], MESSAGE
    )
    add_after_recipients(
        po,
        rel,
        {"bob@example.net": b"N NOTIFY=FAILURE ORCPT=rfc822;Bob+40example.net\n"},
    )
    notary = "bob@example.net\001failed\0015.1.1\001smtp; 550 (5.1.1 <bob@example.net>... User unknown)\001mx.example.net\001smtp[42]"
    _d(
        po,
        rel,
        "bob@example.net",
        notary,
        "smtp; 550 (5.1.1 <bob@example.net>... User unknown)",
    )
    new = dsnpass.run_dsn_pass(po, rel, now=NOW, hostname="mx.test")
    assert new is not None
    assert _new_messages(po, rel) == [new]
    # the d line is marked reported on disk
    assert [d.status for d in _cf(po, rel).diagnostics] == ["+"]
    bounce = _cf(po, new)
    assert bounce.is_error_message
    assert [r.user for r in bounce.recipients] == ["alice@example.com"]
    msg = _report(po, new)
    assert msg["Subject"] == "Returned mail: see the transcript [FAILED(1)]"
    assert msg["To"] == "<alice@example.com>"
    assert msg.get_content_type() == "multipart/report"
    assert msg.get_param("report-type") == "delivery-status"
    text, status, returned = msg.get_payload()
    assert text.get_content_type() == "text/plain"
    assert "FAILED:" in text.get_payload()
    assert status.get_content_type() == "message/delivery-status"
    per_msg, per_rcpt = status.get_payload()
    assert per_msg["Reporting-MTA"] == "dns; mx.test"
    assert per_msg["Arrival-Date"]
    assert per_rcpt["Original-Recipient"] == "rfc822; Bob@example.net"
    assert per_rcpt["Final-Recipient"] == "rfc822; bob@example.net"
    assert per_rcpt["Action"] == "failed"
    assert per_rcpt["Status"] == "5.1.1"
    assert per_rcpt["Remote-MTA"] == "dns; mx.example.net"
    assert (
        per_rcpt["Diagnostic-Code"]
        == "smtp; 550 (5.1.1 <bob@example.net>... User unknown)"
    )
    assert per_rcpt["Last-Attempt-Date"]
    assert returned.get_content_type() == "message/rfc822"
    inner = returned.get_payload()[0]
    assert inner["Subject"] == "dsn test"
    assert inner.get_payload().strip() == "The body."
    # a second pass finds nothing new
    assert dsnpass.run_dsn_pass(po, rel, now=NOW + 1, hostname="mx.test") is None
    assert _new_messages(po, rel) == [new]


def test_ret_hdrs_returns_headers_only(po: Postoffice) -> None:
    rel = submit(
        po, "alice@example.com", ["bob@example.net"], MESSAGE, extra_lines=[b"R HDRS\n"]
    )
    _d(
        po,
        rel,
        "bob@example.net",
        "bob@example.net\001failed\0015.0.0\001smtp; 550 (no)\001",
        "no",
    )
    new = dsnpass.run_dsn_pass(po, rel, now=NOW, hostname="mx.test")
    assert new is not None
    returned = _report(po, new).get_payload()[2]
    assert returned.get_content_type() == "text/rfc822-headers"
    assert "Subject: dsn test" in returned.get_payload()
    assert "The body." not in returned.get_payload()


def test_each_d_line_counts_by_its_own_recipients_notify(po: Postoffice) -> None:
    """S54 fix: NOTIFY=NEVER on one recipient does not silence another's failure."""
    rel = submit(po, "alice@example.com", ["aa@example.net", "zz@example.net"], MESSAGE)
    add_after_recipients(po, rel, {"zz@example.net": b"N NOTIFY=NEVER\n"})
    for user in ("aa@example.net", "zz@example.net"):
        _d(po, rel, user, f"{user}\001failed\0015.0.0\001smtp; 550 (no)\001mx", "no")
    new = dsnpass.run_dsn_pass(po, rel, now=NOW, hostname="mx.test")
    assert new is not None
    per_rcpt = _report(po, new).get_payload()[1].get_payload()[1:]
    assert [p["Final-Recipient"] for p in per_rcpt] == ["rfc822; aa@example.net"]
    assert all(d.status == "+" for d in _cf(po, rel).diagnostics)


def test_uncounted_and_empty_notaries_send_nothing(po: Postoffice) -> None:
    rel = submit(
        po, "alice@example.com", ["bob@example.net", "eve@example.net"], MESSAGE
    )
    _d(
        po,
        rel,
        "bob@example.net",
        "bob@example.net\001delivered\0012.0.0\001smtp; 250 ok\001mx",
        "ok",
    )
    _d(po, rel, "eve@example.net", "", "nothing")
    assert dsnpass.run_dsn_pass(po, rel, now=NOW, hostname="mx.test") is None
    assert _new_messages(po, rel) == []
    assert [d.status for d in _cf(po, rel).diagnostics] == ["+", "+"]


def test_success_notice_when_asked(po: Postoffice) -> None:
    rel = submit(po, "alice@example.com", ["bob@example.net"], MESSAGE)
    add_after_recipients(po, rel, {"bob@example.net": b"N NOTIFY=SUCCESS\n"})
    _d(
        po,
        rel,
        "bob@example.net",
        "bob@example.net\001delivered\0012.0.0\001smtp; 250 ok\001mx",
        "ok",
    )
    new = dsnpass.run_dsn_pass(po, rel, now=NOW, hostname="mx.test")
    assert new is not None
    msg = _report(po, new)
    assert msg["Subject"] == "Returned mail: see the transcript [DELIVERED-OK(1)]"
    assert msg.get_payload()[2].get_content_type() == "text/rfc822-headers"


def test_failure_of_a_bounce_is_never_bounced(po: Postoffice) -> None:
    rel = submit(po, "", ["alice@example.com"], MESSAGE, error_message=True)
    _d(
        po,
        rel,
        "alice@example.com",
        "alice@example.com\001failed\0015.0.0\001smtp; 550 (no)\001",
        "no",
    )
    assert (
        dsnpass.run_dsn_pass(
            po, rel, now=NOW, hostname="mx.test", store_error_on_error=True
        )
        is None
    )
    assert _new_messages(po, rel) == []
    stored = list(po.postman.iterdir())
    assert [p.name for p in stored] == [f"{Path(rel).name}:error-on-error"]
    assert "Double-fault" in stored[0].read_text()
    assert [d.status for d in _cf(po, rel).diagnostics] == ["+"]


def test_pipe_error_address_goes_to_postmaster() -> None:
    assert dsn.dsn_recipient("|/usr/bin/prog") == "postmaster"
    assert dsn.dsn_recipient("/var/log/file") == "postmaster"
    assert dsn.dsn_recipient("<a@b>") == "a@b"
    assert dsn.dsn_recipient("/a=b@c") == "/a=b@c"


def test_expiry_d_line_and_its_dsn(po: Postoffice) -> None:
    """S23 fix: own address, failed, 5.4.7, last remote MTA and text kept."""
    rel = submit(po, "alice@example.com", ["c1@example.net", "c2@example.net"], MESSAGE)
    cf = _cf(po, rel)
    r = next(r for r in cf.recipients if r.user == "c2@example.net")
    last = "c1@example.net\001delayed\0014.4.1\001smtp; 400 (mock deferral)\001hostc\001smtp[7]"
    line = dsn.expiry_diagnostic(
        r.offset, r.header_offset, r.dsn_offset, NOW, 90, last, "mock deferral", r.user
    )
    assert (
        line
        == (
            f"d {r.offset}:{r.header_offset}:{r.dsn_offset}::{NOW}\t"
            "c2@example.net\001failed\0015.4.7\001smtp; 400 (mock deferral)\001hostc\001smtp[7]\t"
            "\rexpired after 1 min 30 secs, problem was:\rmock deferral\n"
        ).encode()
    )
    bare = dsn.expiry_diagnostic(r.offset, -1, -1, NOW, 5 * 86400, "", "", r.user)
    assert (
        b"\tc2@example.net\001failed\0015.4.7\001smtp; 500 (Expired after 5 days)\001\t"
        in bare
    )
    assert bare.endswith(b"\texpired after 5 days\n")
    store.append_diagnostic(po.control_path(rel), line)
    new = dsnpass.run_dsn_pass(po, rel, now=NOW, hostname="mx.test")
    assert new is not None
    per_rcpt = _report(po, new).get_payload()[1].get_payload()[1]
    assert per_rcpt["Final-Recipient"] == "rfc822; c2@example.net"
    assert per_rcpt["Status"] == "5.4.7"
    assert per_rcpt["Action"] == "failed"


def test_build_dsn_summary_and_arrival(po: Postoffice) -> None:
    rel = submit(po, "alice@example.com", ["bob@example.net"], MESSAGE)
    cf = _cf(po, rel)
    entries = [
        dsn.DsnEntry("failed", "a@x", "5.0.0", "smtp; 550 (no)", last_attempt=NOW),
        dsn.DsnEntry("failed", "b@x", "5.0.0", "no type here"),
        dsn.DsnEntry("delivered", "c", "2.0.0", "x-local; 250 ok"),
    ]
    out = dsn.build_dsn(
        cf,
        entries,
        spool_id="S1AbjKNWNU",
        arrival=1700000000,
        hostname="h",
        body=b"B\n",
        now=NOW,
    )
    msg: Any = email.message_from_bytes(out)
    assert (
        msg["Subject"]
        == "Returned mail: see the transcript [FAILED(2),DELIVERED-OK(1)]"
    )
    per_msg, *rcpts = msg.get_payload()[1].get_payload()
    assert per_msg["Arrival-Date"] == "Tue, 14 Nov 2023 22:13:20 +0000"
    assert [p["Final-Recipient"] for p in rcpts] == [
        "rfc822; a@x",
        "rfc822; b@x",
        "x-local; c",
    ]
    assert rcpts[1]["Diagnostic-Code"] == "x-local; no type here"
    assert msg.get_payload()[2].get_content_type() == "message/rfc822"


@given(st.text(alphabet=st.characters(min_codepoint=0, max_codepoint=255), max_size=40))
def test_xtext_round_trip(text: str) -> None:
    encoded = "".join(
        c if 33 <= ord(c) <= 126 and c not in "+=" else f"+{ord(c):02X}" for c in text
    )
    assert dsn.xtext_decode(encoded) == text


def test_unreadable_message_file_still_reports(po: Postoffice) -> None:
    rel = submit(po, "alice@example.com", ["bob@example.net"], MESSAGE)
    _d(
        po,
        rel,
        "bob@example.net",
        "bob@example.net\001failed\0015.0.0\001smtp; 550 (no)\001",
        "no",
    )
    # moved away, not unlinked: a freed inode would be reused by the DSN's own files
    mpath = po.message_path(rel, _cf(po, rel).mid)
    os.rename(mpath, po.root / "moved-away")
    new = dsnpass.run_dsn_pass(po, rel, now=NOW, hostname="mx.test")
    assert new is not None
    assert _report(po, new).get_payload()[2].get_content_type() == "text/rfc822-headers"


def test_with_zmailers_router_the_dsn_goes_through_router_as_zmailers_does(
    po: Postoffice, tmp_path: Path
) -> None:
    """A site with ``$MAILBIN/router``: the bounce is routed (aliases apply), not queued."""
    mailbin = tmp_path / "bin"
    mailbin.mkdir()
    (mailbin / "router").write_text("#!/bin/sh\n")
    (mailbin / "router").chmod(0o755)
    rel = submit(po, "alice@example.com", ["bob@example.net"], MESSAGE)
    notary = "bob@example.net\001failed\0015.1.1\001smtp; 550 no\001mx.example.net\001"
    _d(po, rel, "bob@example.net", notary, "smtp; 550 no")
    run = dsnpass.dsn_pass_for({"MAILBIN": str(mailbin)})
    assert run(po, rel, now=NOW, hostname="mx.test") is None
    assert _new_messages(po, rel) == []  # nothing went straight into transport/
    [routed] = [p for p in po.router.iterdir() if p.is_file()]
    data = routed.read_bytes()
    envelope, _, message = data.partition(b"env-end\n")
    assert envelope == (
        b"channel error\nerrormsg\n"
        b"todsn ORCPT=rfc822;alice@example.com\nto <alice@example.com>\n"
    )
    report = email.message_from_bytes(message)
    assert report["Subject"] == "Returned mail: see the transcript [FAILED(1)]"
    assert report.get_content_type() == "multipart/report"
    assert [d.status for d in _cf(po, rel).diagnostics] == ["+"]


def test_a_bounce_to_a_quoted_local_part_is_written(po: Postoffice) -> None:
    """A sender like ``"o'hara smith"`` (ZMailer keeps the quotes) gets its DSN; the
    submission used to be refused, and the pass retried at every rescan."""
    for sender in ('"o\'hara smith"', '"john doe"@Example.com'):
        rel = submit(po, sender, ["bob@example.net"], MESSAGE)
        notary = (
            "bob@example.net\001failed\0015.1.1\001smtp; 550 no\001mx.example.net\001"
        )
        _d(po, rel, "bob@example.net", notary, "smtp; 550 no")
        new = dsnpass.run_dsn_pass(po, rel, now=NOW, hostname="mx.test")
        assert new is not None
        [rcpt] = _cf(po, new).recipients
        assert rcpt.user == sender
        expected = ("local", sender) if "@" not in sender else ("smtp", "example.com")
        assert (rcpt.channel, rcpt.host) == expected
