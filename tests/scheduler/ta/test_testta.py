"""The TA runtime (libta) through the scripted agent, as a real subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from scheduler.ta import testta
from scheduler.ta.libta import format_report, parse_job_line
from spool import store
from spool.layout import Postoffice
from spool.submit import submit
from tests.scheduler.ta.conftest import (
    MESSAGE,
    add_after_recipients,
    control,
    run_ta,
    statuses,
)

RULES = {"TESTTA_RULES": "*@ok.example=ok;*@fail.example=error;*=deferred"}


def _submit(po: Postoffice, *rcpts: str, levels: int = 2) -> str:
    return submit(po, "alice@example.com", list(rcpts), MESSAGE, hash_levels=levels)


def test_rules_parse_and_match() -> None:
    rules = testta.parse_rules("*@ok.example=ok; *@FAIL.example=error;*=deferred")
    assert testta.decide(rules, "Bob@OK.example") == "ok"
    assert testta.decide(rules, "x@fail.example") == "error"
    assert testta.decide(rules, "x@else.example") == "deferred"
    assert testta.decide(testta.parse_rules(""), "x@y") == "ok"
    with pytest.raises(ValueError, match="unknown status"):
        testta.parse_rules("*=bounce")


def test_job_line_and_report_format() -> None:
    job = parse_job_line(b"Q/I/123456\texample.net\n", None)
    assert job is not None
    assert (job.spoolpath, job.host) == ("Q/I/123456", "example.net")
    withhost = parse_job_line(b"Q/I/123456\n", "argv.example")
    assert withhost is not None
    assert withhost.host == "argv.example"
    assert parse_job_line(b"\n", None) is None
    line = format_report(123456, 111, "a\001b\nc", "deferred", "two\nlines")
    assert line == b"123456/111\ta\001b\rc\tdeferred two\rlines\n"


def test_ok_error_deferred_marks_and_reports(po: Postoffice) -> None:
    rel = _submit(po, "bob@ok.example", "carol@fail.example", "dan@later.example")
    jobs = [f"{rel}\tok.example", f"{rel}\tfail.example", f"{rel}\tlater.example"]
    res = run_ta("testta", po, jobs, env=RULES)
    assert res.returncode == 0, res.stderr
    assert res.lines[0] == "#hungry"
    assert res.lines.count("#hungry") == 4
    number = rel.rsplit("/", 1)[1]
    offsets = {r.user: r.offset for r in control(po, rel).recipients}
    by_status = {r[2]: r for r in res.reports}
    assert set(by_status) == {"ok", "error2", "deferred"}
    assert by_status["ok"][0] == f"{number}/{offsets['bob@ok.example']}"
    notary = by_status["error2"][1].split("\001")
    assert notary[:3] == ["carol@fail.example", "failed", "5.0.0"]
    assert notary[4] == "fail.example"
    assert notary[5].startswith("testta[")
    assert statuses(po, rel) == {
        "bob@ok.example": "+",
        "carol@fail.example": "-",
        "dan@later.example": " ",
    }
    # error2: the TA wrote the d line itself (fsynced before the report)
    diags = control(po, rel).diagnostics
    assert [(d.rcpt_offset, d.status) for d in diags] == [
        (offsets["carol@fail.example"], " ")
    ]
    assert diags[0].notary.split("\001")[1] == "failed"
    assert "scripted error" in diags[0].message


def test_ok_with_notify_success_is_ok2_with_d_line(po: Postoffice) -> None:
    rel = _submit(po, "bob@ok.example", "eve@ok.example")
    add_after_recipients(po, rel, {"bob@ok.example": b"N NOTIFY=SUCCESS,FAILURE\n"})
    res = run_ta("testta", po, [f"{rel}\tok.example"], env=RULES)
    assert sorted(r[2] for r in res.reports) == ["ok", "ok2"]
    cf = control(po, rel)
    bob = next(r for r in cf.recipients if r.user == "bob@ok.example")
    assert [d.rcpt_offset for d in cf.diagnostics] == [bob.offset]
    assert cf.diagnostics[0].dsn_offset == bob.dsn_offset
    assert cf.diagnostics[0].notary.split("\001")[1] == "delivered"


def test_error_with_notify_never_is_plain_error(po: Postoffice) -> None:
    rel = _submit(po, "carol@fail.example")
    add_after_recipients(po, rel, {"carol@fail.example": b"N NOTIFY=NEVER\n"})
    res = run_ta("testta", po, [f"{rel}\tfail.example"], env=RULES)
    assert [r[2] for r in res.reports] == ["error"]
    assert control(po, rel).diagnostics == []
    assert statuses(po, rel) == {"carol@fail.example": "-"}


def test_nothing_lockable_is_resync(po: Postoffice) -> None:
    rel = _submit(po, "bob@ok.example")
    offset = control(po, rel).recipients[0].offset
    # locked by a live process (this test): skipped, nothing else to do -> #resync
    assert store.lock_recipient(po.control_path(rel), offset, os.getpid())
    res = run_ta(
        "testta", po, [f"{rel}\tok.example", f"{rel}\tnowhere.example"], env=RULES
    )
    assert res.lines == [
        "#hungry",
        f"#resync {rel}",
        "#hungry",
        f"#resync {rel}",
        "#hungry",
    ]
    assert control(po, rel).recipients[0].status == "~"


def test_missing_control_file_is_resync(po: Postoffice) -> None:
    res = run_ta("testta", po, ["A/B/999\tok.example"], env=RULES)
    assert res.lines == ["#hungry", "#resync A/B/999", "#hungry"]


def test_idle_eof_and_channel_selection(po: Postoffice) -> None:
    rel = submit(
        po,
        "alice@example.com",
        [
            ("smtp", "ok.example", "a@ok.example"),
            ("local", "ok.example", "b@ok.example"),
        ],
        MESSAGE,
    )
    res = run_ta(
        "testta", po, ["#idle", f"{rel}\tOK.Example"], "-c", "local", env=RULES, end=""
    )
    assert res.returncode == 0
    assert res.lines[:2] == ["#hungry", "#hungry"]
    assert [r[1].split("\001")[0] for r in res.reports] == ["b@ok.example"]
    assert statuses(po, rel) == {"a@ok.example": " ", "b@ok.example": "+"}


def test_withhost_agent_takes_host_from_argv(po: Postoffice) -> None:
    rel = _submit(po, "bob@ok.example", "carol@fail.example")
    res = run_ta("testta", po, [rel], "ok.example", env=RULES)
    assert [r[2] for r in res.reports] == ["ok"]
    assert statuses(po, rel)["carol@fail.example"] == " "


def test_deferall_and_diag(po: Postoffice) -> None:
    rel = _submit(po, "a@down.example", "b@down.example")
    diag = "smtp; 500 (connect to 127.0.0.1 [127.0.0.1|9|127.0.0.1|48553]: Connection refused)"
    env = {"TESTTA_RULES": "*=deferred", "TESTTA_DEFERALL": "1", "TESTTA_DIAG": diag}
    res = run_ta("testta", po, [f"{rel}\tdown.example"], env=env)
    assert [r[2] for r in res.reports] == ["deferred", "deferall"]
    assert all(r[3] == diag for r in res.reports)
    assert all(r[1].split("\001")[3] == diag for r in res.reports)
    assert set(statuses(po, rel).values()) == {" "}


def test_nomark_leaves_the_file_alone_and_log(po: Postoffice, tmp_path: Path) -> None:
    rel = _submit(po, "bob@ok.example", "carol@fail.example")
    before = po.control_path(rel).read_bytes()
    logfile = tmp_path / "jobs.log"
    env = {**RULES, "TESTTA_NOMARK": "1", "TESTTA_LOG": str(logfile)}
    res = run_ta("testta", po, [f"{rel}\tok.example", f"{rel}\tfail.example"], env=env)
    assert [r[2] for r in res.reports] == ["ok", "error"]
    assert po.control_path(rel).read_bytes() == before
    logged = logfile.read_text().splitlines()
    assert [line.split("\t", 1)[1] for line in logged] == [
        f"{rel}\tok.example",
        f"{rel}\tfail.example",
    ]


def test_crash_leaves_a_dead_pid_lock(po: Postoffice) -> None:
    rel = _submit(po, "bob@crash.example")
    res = run_ta(
        "testta", po, [f"{rel}\tcrash.example"], env={"TESTTA_RULES": "*=crash"}
    )
    assert res.returncode == 3
    rcpt = control(po, rel).recipients[0]
    assert rcpt.status == "~"
    assert rcpt.pid is not None
    assert not store.pid_alive(rcpt.pid)


def test_one_job_at_a_time_interactive(po: Postoffice) -> None:
    """The agent answers each job before reading the next (a real pipe dialogue)."""
    rel = _submit(po, "bob@ok.example", "carol@fail.example")
    env = dict(os.environ, **RULES)
    with subprocess.Popen(
        [sys.executable, "-m", "scheduler.ta.testta"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        cwd=po.transport,
        env=env,
    ) as proc:
        assert proc.stdin is not None
        assert proc.stdout is not None
        assert proc.stdout.readline() == b"#hungry\n"
        proc.stdin.write(f"{rel}\tok.example\n".encode())
        proc.stdin.flush()
        assert b"\tok " in proc.stdout.readline()
        assert proc.stdout.readline() == b"#hungry\n"
        assert statuses(po, rel)["bob@ok.example"] == "+"
        proc.stdin.write(b"\n")
        proc.stdin.close()
        assert proc.wait(10) == 0
        proc.stdout.close()


def test_garbage_and_retryat(po: Postoffice) -> None:
    rel = _submit(po, "a@junk.example", "b@slow.example")
    env = {"TESTTA_RULES": "*@junk.example=garbage;*@slow.example=retryat"}
    res = run_ta(
        "testta", po, [f"{rel}\tjunk.example", f"{rel}\tslow.example"], env=env
    )
    assert "this is not a diagnostic line" in res.lines
    statuses_seen = [line.split("\t")[2] for line in res.lines if line.count("\t") == 2]
    assert statuses_seen[0].startswith("deferred ")
    assert statuses_seen[1].startswith("retryat +60 ")
    assert set(statuses(po, rel).values()) == {" "}
