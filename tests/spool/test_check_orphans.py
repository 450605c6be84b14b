"""`mailq-spool check` finds message files that no control file refers to (orphans),
such as a crash between the two unlinks of a completed message leaves behind."""

from __future__ import annotations

import os
import time

from click.testing import CliRunner

from spool.check import check_postoffice
from spool.cli import main
from spool.layout import init_postoffice
from spool.submit import submit

MESSAGE = b"Subject: t\nMessage-ID: <x@y>\n\nbody\n"


def test_orphaned_message_file_is_reported_once_old_enough(
    tmp_path: os.PathLike[str],
) -> None:
    po = init_postoffice(tmp_path)
    kept = submit(
        po, "a@example.org", ["b@example.net"], MESSAGE, hash_levels=2, notify=False
    )
    gone = submit(
        po, "a@example.org", ["c@example.net"], MESSAGE, hash_levels=2, notify=False
    )
    os.unlink(po.control_path(gone))  # the crash: control file gone, message file left
    now = time.time()
    assert list(check_postoffice(po, now=now)) == []  # too recent: may be a submission
    problems = list(check_postoffice(po, now=now + 7200))
    assert [p.relpath for p in problems] == [gone]
    assert "orphaned message file" in problems[0].reason
    assert kept != gone


def test_check_quarantine_moves_the_orphan_aside(tmp_path: os.PathLike[str]) -> None:
    po = init_postoffice(tmp_path)
    relpath = submit(po, "a@example.org", ["b@example.net"], MESSAGE, notify=False)
    os.unlink(po.control_path(relpath))
    message = po.message_path(relpath)
    runner = CliRunner()
    fresh = runner.invoke(main, ["check", "-P", str(tmp_path), "--quarantine"])
    assert fresh.exit_code == 0, fresh.output  # may still be a submission in progress
    assert message.exists()
    args = ["check", "-P", str(tmp_path), "--quarantine", "--orphan-age", "0"]
    result = runner.invoke(main, args)
    assert result.exit_code == 1
    assert "orphaned message file" in result.output
    assert not message.exists()
    assert [p.name for p in po.freezer.iterdir() if p.suffix == ".msg"]
    assert list(check_postoffice(po, orphan_min_age=0)) == []
