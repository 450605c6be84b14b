"""The real daemon end to end: spool files, testta subprocesses, MAILQ v2 over TCP, signals."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from mailq.protocol.auth import authenticator
from spool.submit import notify_scheduler
from tests.e2e.conftest import (
    ADMIN,
    ADMIN_PW,
    TESTTA_CONF,
    DaemonFactory,
    files_gone,
    wait_until,
)
from tests.e2e.recorded import quiet_interval

OK_RULES = {"TESTTA_RULES": "*@ok.example=ok;*@fail.example=error;*=deferred"}


def control(mid: str, user: str, host: str, *, lock_pid: int | None = None) -> str:
    status = f"~{lock_pid:>6}" if lock_pid else "       "
    return (
        f"@ 0x00000007\ni {mid}\no 20\nl <{mid}@e2e>\ne s@example.com\n"
        f"s local - s@example.com 0\nr{status}    smtp {host} {user} 0\n"
        "m\nSubject: x\n\n"
    )


def place(d_po: object, mid: str, text: str) -> None:
    from spool.layout import Postoffice

    assert isinstance(d_po, Postoffice)
    d_po.control_path(mid).write_text(text)
    d_po.message_path(mid).write_text("Subject: x\n\nbody\n")


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_startup_scan_recovers_stale_locks_and_delivers(
    daemon_factory: DaemonFactory,
) -> None:
    d = daemon_factory(start=False, env=OK_RULES)
    place(
        d.po,
        "100001",
        control("100001", "a@ok.example", "ok.example", lock_pid=dead_pid()),
    )
    place(d.po, "100002", control("100002", "b@ok.example", "ok.example"))
    d.start()
    wait_until(lambda: files_gone(d.po, "100001") and files_gone(d.po, "100002"))
    (snmp,) = d.query("SHOW SNMP")
    assert "Msgs in 2 out 2 stored 0" in snmp
    assert "Rcpnts in 2 out 2 stored 0" in snmp
    assert d.stop() == 0
    assert not d.po.pid_file.exists()


def test_etrn_request_file_found_at_startup_runs_a_queueonly_thread(
    daemon_factory: DaemonFactory,
) -> None:
    """Issue 12 item 5 (Keep, as ZMailer without ``-S``): an ETRN request file in the
    spool at startup is run when it is read, after the messages it names (older
    files are read first); a queue-only thread is started and delivers. (ZMailer with
    ``-S`` only zeroes the wakeup and never starts a queue-only thread: not copied.)"""
    conf = TESTTA_CONF + 'smtpq/*\tqueueonly command="builtin:testta -c $channel"\n'
    d = daemon_factory(conf, start=False, env=OK_RULES)
    place(d.po, "100001", control("100001", "a@ok.example", "ok.example"))
    text = (d.po.control_path("100001")).read_text()
    d.po.control_path("100001").write_text(
        text.replace(" smtp ok.example ", " smtpq ok.example ")
    )
    old = time.time() - 60
    for path in (d.po.control_path("100001"), d.po.message_path("100001")):
        os.utime(path, (old, old))
    (d.po.transport / "100002-etrn").write_text("T OK.example 127.0.0.1\n")
    d.start()
    wait_until(lambda: files_gone(d.po, "100001"), what="the ETRN'd delivery")
    assert not (d.po.transport / "100002-etrn").exists()
    assert d.stop() == 0


def test_notified_submission_is_picked_up(daemon_factory: DaemonFactory) -> None:
    d = daemon_factory(env=OK_RULES)
    # Two hash levels: only a NEW datagram (or the 120 s deep scan) can find it.
    relpath = d.submit("c@ok.example", hash_levels=2)
    assert "/" in relpath
    # well under the 120 s deep scan, generous for a loaded machine
    wait_until(lambda: files_gone(d.po, relpath), limit=60, what="NEW pickup")
    assert f"\t{relpath}\t" in (d.root / "ta.log").read_text()


def test_deferral_is_visible_over_mailq(daemon_factory: DaemonFactory) -> None:
    diag = "smtp; 500 (connect to 127.0.0.1: Connection refused)"
    # A fresh thread's first "deferred" lands 10 s after the interval boundary behind
    # the next one (as ZMailer, issue 12): 10 s after the current boundary if the run
    # falls in the first 10 s of an interval (a retry then), else the next boundary
    # + 10 s. An interval whose boundaries are far from now keeps a loaded machine
    # from seeing a second attempt here.
    conf = TESTTA_CONF.replace("interval=1s", f"interval={quiet_interval()}")
    d = daemon_factory(conf, env={**OK_RULES, "TESTTA_DIAG": diag})
    relpath = d.submit("d@later.example")
    # W= appears once the TA has left the thread (the wakeup is final then)
    wait_until(lambda: "\tA=1\tW=" in d.query("SHOW QUEUE THREADS2")[0])
    (threads2,) = d.query("SHOW QUEUE THREADS2")
    assert threads2.startswith("smtp\tlater.example\tN=1\tR=1\tA=1\t")
    (thread,) = d.query("SHOW THREAD smtp later.example")
    header, row = thread.splitlines()[:2]
    assert header.startswith("#smtp/later.example/0 ")
    fields = row.split("\t")
    assert fields[0] == relpath
    assert fields[2] == "sender@example.com"
    assert int(fields[5]) > int(fields[6]) > 0  # wakeup after the last feed
    assert fields[7] == "1"
    assert fields[8].startswith("retry in ")
    assert diag in fields[9]
    assert not files_gone(d.po, relpath)


def test_killed_agent_loses_nothing(daemon_factory: DaemonFactory) -> None:
    d = daemon_factory(env={**OK_RULES, "TESTTA_SLEEP": "1.5"})
    relpath = d.submit("e@ok.example")
    wait_until(lambda: (d.root / "ta.log").exists(), what="the job fed")
    (threads,) = d.query("SHOW QUEUE THREADS")
    pid = int(threads.split("P={")[1].split("}")[0])
    os.kill(pid, signal.SIGKILL)
    wait_until(lambda: files_gone(d.po, relpath), limit=60, what="redelivery")
    assert len((d.root / "ta.log").read_text().splitlines()) >= 2
    (snmp,) = d.query("SHOW SNMP")
    assert "out 1 stored 0\n" in snmp  # (Rcpnts in counts re-reads, S30)


def test_bad_agents_and_bad_files_never_stall_the_daemon(
    daemon_factory: DaemonFactory,
) -> None:
    conf = TESTTA_CONF + 'broken/*\tcommand="/bin/sh -c $host"\n'  # dies at once
    rules = {"TESTTA_RULES": "*@garbage.example=garbage;*@ok.example=ok;*=deferred"}
    d = daemon_factory(conf, env=rules, start=False)
    (d.po.transport / "999001").write_bytes(b"\x00\x01 this is not a control file\n")
    d.start()
    dies = d.submit("broken no-such-command x@y")  # channel host user
    garbage = d.submit("x@garbage.example")
    good = d.submit("f@ok.example")
    wait_until(lambda: files_gone(d.po, good))
    wait_until(lambda: (d.po.freezer / "999001").exists())
    assert "999001" in (d.po.freezer / "999001.reason").read_text()
    # the promise: the garbage-speaking agent's job was attempted (and is retried every
    # second, so how many attempts were counted by now depends on the machine's load)
    wait_until(lambda: _attempts(d.query("SHOW THREAD smtp garbage.example")[0]) >= 1)
    assert not files_gone(d.po, dies)
    assert not files_gone(d.po, garbage)
    (threads2,) = d.query("SHOW QUEUE THREADS2")
    assert "broken\tno-such-command\tN=1" in threads2
    assert d.stop() == 0


def _attempts(thread_dump: str) -> int:
    """The ``A=`` attempt count of a ``SHOW THREAD`` header (0 if absent)."""
    for word in thread_dump.split():
        if word.startswith("A=") and word[2:].isdigit():
            return int(word[2:])
    return 0


def test_etrn_request_file_is_run_and_removed(daemon_factory: DaemonFactory) -> None:
    d = daemon_factory(env=OK_RULES)
    (d.po.transport / "777001-etrn").write_text("T Later.EXAMPLE 127.0.0.1\n")
    assert notify_scheduler(d.po, "777001-etrn")
    wait_until(lambda: not (d.po.transport / "777001-etrn").exists(), limit=60)
    assert not (d.po.freezer / "777001-etrn").exists()
    assert "ETRN" in d.log()


def test_sighup_reload_keeps_old_config_on_error(daemon_factory: DaemonFactory) -> None:
    d = daemon_factory(env=OK_RULES)
    d.conf.write_text(TESTTA_CONF + "bogus/*\tinterval=\n\tnosuchkeyword=1\n")
    d.send(signal.SIGHUP)
    wait_until(lambda: "keeping the current configuration" in d.log())
    assert "reload:" in d.log()
    relpath = d.submit("g@ok.example")
    wait_until(lambda: files_gone(d.po, relpath))
    d.conf.write_text(TESTTA_CONF + 'other/*\tqueueonly command="builtin:testta"\n')
    d.send(signal.SIGHUP)
    wait_until(lambda: "configuration reloaded" in d.log())
    queued = d.submit("other elsewhere u@elsewhere")
    wait_until(lambda: "other/*/0\n" in d.query("SHOW QUEUE SHORT")[0])
    (threads2,) = d.query("SHOW QUEUE THREADS2")
    assert "other\telsewhere\tN=1\tR=1\tA=0\t" in threads2  # queueonly: not started
    assert not files_gone(d.po, queued)
    assert d.stop() == 0


def test_sigterm_stops_agents_and_removes_pid_file(
    daemon_factory: DaemonFactory,
) -> None:
    d = daemon_factory(env={**OK_RULES, "TESTTA_SLEEP": "30"})
    assert d.po.pid_file.read_text() == f"{d.pid}\n"
    d.submit("i@ok.example")
    wait_until(lambda: (d.root / "ta.log").exists())
    (threads,) = d.query("SHOW QUEUE THREADS")
    ta_pid = int(threads.split("P={")[1].split("}")[0])
    assert d.stop() == 0
    assert not d.po.pid_file.exists()
    wait_until(lambda: not _alive(ta_pid), limit=60, what="the TA to exit")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return (
        Path(f"/proc/{pid}/stat").exists()
        and " Z " not in Path(f"/proc/{pid}/stat").read_text()
    )


def test_second_daemon_is_refused(daemon_factory: DaemonFactory) -> None:
    d = daemon_factory(env=OK_RULES)
    argv = [a for a in d.argv if a != str(d.ready)]
    i = argv.index("--ready-file")
    del argv[i : i + 1]
    second = subprocess.run(argv, env=d.env, capture_output=True, timeout=30)
    assert second.returncode == 69  # EX_UNAVAILABLE: another scheduler runs
    assert b"--replace" in second.stderr
    assert d.po.pid_file.read_text() == f"{d.pid}\n"
    assert d.stop() == 0


def test_session_defences_are_set_in_scheduler_conf(
    daemon_factory: DaemonFactory,
) -> None:
    """``PARAMmailq-max-per-peer`` reaches the server: with 2, a third admin session
    from the same address is on probation and, displacing nobody, is refused."""
    conf = (
        "PARAMmailq-max-per-peer = 2\nPARAMmailq-reserved-sessions = 4\n" + TESTTA_CONF
    )
    d = daemon_factory(conf)

    def login() -> tuple[socket.socket, bytes]:
        s = socket.create_connection(d.address, timeout=30)
        f = s.makefile("rb")
        assert f.readline() == b"version zmailer 2.0\n"
        challenge = f.readline().decode().rstrip("\n")
        s.sendall(f"AUTH {ADMIN} {authenticator(challenge, ADMIN_PW)}\n".encode())
        return s, f.readline()

    held = [login() for _ in range(2)]
    try:
        assert [reply for _, reply in held] == [b"+OK\n", b"+OK\n"]
        third, reply = login()
        third.close()
        assert reply == b"-Too many sessions open; try again later\n"
    finally:
        for s, _ in held:
            s.close()
