"""mailbox, errormail and hold agents as real subprocesses on a temporary postoffice."""

from __future__ import annotations

import email
import mailbox
import os
import time
from pathlib import Path
from typing import Any

from scheduler.ta.hold import release_time
from scheduler.ta.mailbox import folder_name
from spool.layout import Postoffice
from spool.scan import scan
from spool.submit import submit
from tests.scheduler.ta.conftest import MESSAGE, control, run_ta, statuses


def _local(po: Postoffice, *users: str) -> str:
    return submit(po, "alice@example.com", [("local", u, u) for u in users], MESSAGE)


def test_mailbox_delivers_into_maildir(po: Postoffice, tmp_path: Path) -> None:
    root = tmp_path / "mail"
    root.mkdir()
    mailbox.Maildir(root / "bob", create=True)
    rel = _local(po, "bob", "nosuchuser")
    res = run_ta("mailbox", po, [f"{rel}\tbob", f"{rel}\tnosuchuser"], "-d", str(root))
    assert res.returncode == 0, res.stderr
    assert [r[2] for r in res.reports] == ["ok", "error2"]
    assert res.reports[1][3] == "5.1.1 no such user"
    assert res.reports[1][1].split("\001")[2] == "5.1.1"
    assert statuses(po, rel) == {"bob": "+", "nosuchuser": "-"}
    box = mailbox.Maildir(root / "bob", create=False)
    [msg] = list(box)
    assert msg["Return-Path"] == "<alice@example.com>"
    assert msg["Delivered-To"] == "bob"
    assert msg["Subject"] == "agent test"
    assert msg.get_payload() == "Hello.\n.a line starting with a dot\nBye.\n"
    assert not any((root / "bob" / "tmp").iterdir())
    assert not (root / "nosuchuser").exists()


def test_mailbox_auto_create_and_env_dir(po: Postoffice, tmp_path: Path) -> None:
    root = tmp_path / "mail"
    root.mkdir()
    rel = _local(po, "carol")
    res = run_ta(
        "mailbox",
        po,
        [f"{rel}\tcarol"],
        "--auto-create",
        "--format",
        "maildir",
        env={"MAILBOX": str(root)},
    )
    assert [r[2] for r in res.reports] == ["ok"], res.stderr
    assert len(mailbox.Maildir(root / "carol", create=False)) == 1


def test_folder_names() -> None:
    assert folder_name("bob") == "bob"
    assert folder_name("bob@example.com") == "bob"
    assert folder_name("../etc") is None
    assert folder_name("a/b") is None


def test_errormail_submits_a_bounce(po: Postoffice) -> None:
    rel = submit(
        po, "alice@example.com", [("error", "nosuchuser", "zed@example.com")], MESSAGE
    )
    res = run_ta("errormail", po, [f"{rel}\tnosuchuser"], "--hostname", "mx.test")
    assert res.returncode == 0, res.stderr
    [rep] = res.reports
    assert rep[2] == "ok3"
    assert statuses(po, rel) == {"zed@example.com": "+"}
    others = [e.relpath for e in scan(po) if e.relpath != rel]
    assert len(others) == 1
    bounce = control(po, others[0])
    assert bounce.is_error_message
    assert [r.user for r in bounce.recipients] == ["alice@example.com"]
    raw = po.message_path(others[0], bounce.mid).read_bytes()
    msg: Any = email.message_from_bytes(raw)
    assert msg.get_content_type() == "multipart/report"
    assert msg["Subject"] == "Returned mail: see the transcript [FAILED(1)]"
    status = msg.get_payload()[1]
    assert status.get_content_type() == "message/delivery-status"
    fields = status.get_payload()[1]
    assert fields["Final-Recipient"] == "rfc822; zed@example.com"
    assert fields["Action"] == "failed"


def test_errormail_never_bounces_a_bounce(po: Postoffice) -> None:
    rel = submit(
        po,
        "",
        [("error", "nosuchuser", "zed@example.com")],
        MESSAGE,
        error_message=True,
    )
    res = run_ta("errormail", po, [f"{rel}\tnosuchuser"])
    assert [r[2] for r in res.reports] == ["ok3"]
    assert [e.relpath for e in scan(po)] == [rel]
    assert "double fault" in res.stderr


def test_hold_release_times() -> None:
    assert release_time("delay:30m", 1000) == 2800
    assert release_time("until:12345", 1000) == 12345
    assert release_time("etrn:example.com", 1000) is None


def test_hold_keeps_then_releases(po: Postoffice) -> None:
    future = int(time.time()) + 3600
    rel = submit(
        po,
        "alice@example.com",
        [
            ("hold", f"until:{future}", "bob@later.example"),
            ("hold", "delay:1m", "carol@soon.example"),
            ("hold", "etrn:now.example", "dave@now.example"),
        ],
        MESSAGE,
    )
    msg_path = po.message_path(rel, control(po, rel).mid)
    old = time.time() - 120
    os.utime(msg_path, (old, old))  # the message arrived 2 minutes ago
    jobs = [f"{rel}\tuntil:{future}", f"{rel}\tdelay:1m", f"{rel}\tetrn:now.example"]
    res = run_ta("hold", po, jobs)
    assert res.returncode == 0, res.stderr
    assert [r[2] for r in res.reports] == ["deferred", "ok3", "ok3"]
    assert res.reports[0][3].startswith("retryat +")
    assert "held until" in res.reports[0][3]
    assert statuses(po, rel) == {
        "bob@later.example": " ",
        "carol@soon.example": "+",
        "dave@now.example": "+",
    }
    released = sorted(
        r.user
        for e in scan(po)
        if e.relpath != rel
        for r in control(po, e.relpath).recipients
    )
    assert released == ["carol@soon.example", "dave@now.example"]
    for e in scan(po):
        if e.relpath != rel:
            r = control(po, e.relpath).recipients[0]
            assert r.channel == "smtp"
            assert control(po, e.relpath).error_address == "alice@example.com"
