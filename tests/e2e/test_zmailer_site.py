"""A ZMailer site swaps our daemon in (issue 12 items 4-6, 8; issue 14 item 11): its
zmailer.conf names the counter file, the bind address and ``$MAILBIN`` whose ``ta/``
programs a relative ``command=`` runs."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mailq.protocol.auth import authenticator
from spool.counterfile import open_counters, read_counters
from tests.e2e.conftest import (
    ADMIN_PW,
    DaemonFactory,
    DaemonProc,
    files_gone,
    wait_until,
)

FIXTURES = Path(__file__).parents[1] / "spool" / "fixtures" / "zmailer_counters"

OK_RULES = {"TESTTA_RULES": "*=ok"}


def site(d: DaemonProc, **extra: str) -> Path:
    """A site zmailer.conf (where the daemon's ZCONFIG points); returns $MAILBIN."""
    mailbin = d.root / "bin"
    (mailbin / "ta").mkdir(parents=True, exist_ok=True)
    lines = {
        "POSTOFFICE": str(d.po.root),
        "MAILBIN": str(mailbin),
        "SNMPSHAREDFILE": str(d.po.root / ".zmailer.SNMP.block"),
        **extra,
    }
    Path(d.env["ZCONFIG"]).write_text("".join(f"{k}={v}\n" for k, v in lines.items()))
    return mailbin


def site_agent(mailbin: Path, name: str, marker: Path) -> None:
    """A site program in $MAILBIN/ta/ that notes its start, then serves as testta."""
    agent = mailbin / "ta" / name
    agent.write_text(
        "#!/bin/sh\n"
        f'echo "{name} $*" >> {marker}\n'
        f'exec {sys.executable} -m scheduler.ta.testta "$@"\n'
    )
    agent.chmod(0o755)


def counters(d: DaemonProc) -> dict[str, str]:
    (text,) = d.query("SHOW COUNTERS")
    return dict(re.findall(r"^(\S+) +(.*)$", text, re.M))


def test_relative_command_runs_the_sites_program(daemon_factory: DaemonFactory) -> None:
    conf = '*/*\tinterval=1s retries="1"\nsmtp/*\tcommand="smtp -c $channel"\n'
    d = daemon_factory(conf, env=OK_RULES, start=False)
    marker = d.root / "site-agents.log"
    site_agent(site(d), "smtp", marker)
    d.start()
    relpath = d.submit("user@example.net")
    wait_until(lambda: files_gone(d.po, relpath), what="delivery by the site's smtp")
    assert marker.read_text().startswith("smtp -c smtp")
    assert d.stop() == 0


def test_builtin_agent_is_explicit(daemon_factory: DaemonFactory) -> None:
    conf = '*/*\tinterval=1s\nsmtp/*\tcommand="builtin:testta -c $channel"\n'
    d = daemon_factory(conf, env=OK_RULES, start=False)
    site_agent(site(d), "testta", d.root / "never")
    d.start()
    relpath = d.submit("user@example.net")
    wait_until(lambda: files_gone(d.po, relpath), what="delivery by our testta")
    assert not (d.root / "never").exists()
    assert d.stop() == 0


def test_a_zmailer_counter_file_is_used_and_kept(daemon_factory: DaemonFactory) -> None:
    d = daemon_factory(env=OK_RULES, start=False)
    site(d)
    block = d.po.root / ".zmailer.SNMP.block"
    with open_counters(str(block)) as theirs:  # as a ZMailer scheduler left it
        theirs.set("SYS.SchedulerMasterStarts", 41)
        theirs.set("TA-SMTP.SmtpConnects", 9)
        created = theirs.creation_time
    d.start()
    seen = counters(d)
    assert seen["SYS.SchedulerMasterStarts"] == "42"
    assert seen["TA-SMTP.SmtpConnects"] == "9"
    assert seen["Block_creation_time"] == str(created)
    assert seen["SC.SchedulerTimeserverPID"] == str(d.pid)
    assert seen["SC.SchedulerTimeserverStarts"] == "1"
    assert abs(int(seen["SC.SchedulerTimeserverTime"]) - time.time()) < 600
    assert int(seen["SYS.TportSpoolFreeFiles-G"]) > 0
    assert d.stop() == 0
    assert block.stat().st_size == 4096
    with read_counters(str(block)) as after:
        assert after.get("SYS.SchedulerMasterStarts") == 42
    assert not (d.po.root / ".mailq-spool.counters").exists()


def test_log_gauges_measure_the_log_file(daemon_factory: DaemonFactory) -> None:
    d = daemon_factory(env=OK_RULES)  # stderr is the daemon.log file
    st = os.statvfs(d.log_path)
    free_files = int(counters(d)["SYS.LogFreeFiles-G"])
    assert abs(free_files - st.f_favail) < max(st.f_favail // 100, 10_000)
    assert d.stop() == 0


def test_bindaddr_limits_the_mailqsock_listener(daemon_factory: DaemonFactory) -> None:
    conf = 'PARAMmailqsock = "TCP:0"\n*/*\tinterval=1s\nlocal/*\tqueueonly\n'
    d = daemon_factory(conf, env=OK_RULES, start=False)
    d.argv[d.argv.index("-l") : d.argv.index("-l") + 2] = []
    site(d, BINDADDR="[127.0.0.1]")
    d.start()
    assert d.ready.read_text().split() == [f"127.0.0.1:{d.address[1]}"]
    assert d.stop() == 0
    site(d)  # no BINDADDR: every address, as before
    d.ready.unlink(missing_ok=True)
    d.start()
    assert d.ready.read_text().split()[0].startswith(("[::]:", "0.0.0.0:"))
    assert d.stop() == 0


def test_a_bindaddr_that_names_nothing_stops_the_start(
    daemon_factory: DaemonFactory,
) -> None:
    conf = 'PARAMmailqsock = "TCP:0"\n*/*\tinterval=1s\nlocal/*\tqueueonly\n'
    d = daemon_factory(conf, env=OK_RULES, start=False)
    d.argv[d.argv.index("-l") : d.argv.index("-l") + 2] = []
    site(d, BINDADDR="iface:no-such0")
    done = subprocess.run(d.argv, env=d.env, capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    assert "BINDADDR 'iface:no-such0': no IPv4 address" in done.stderr
    assert "Traceback" not in done.stderr


def test_full_disk_counter_file_is_one_error_line(
    daemon_factory: DaemonFactory, tmp_path: Path
) -> None:
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("needs root to mount a tmpfs")
    mnt = tmp_path / "full"
    mnt.mkdir()
    if subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mnt)]
    ).returncode:
        pytest.skip("cannot mount a tmpfs")
    try:
        with open(mnt / "filler", "wb", buffering=0) as f:
            while f.write(b"\1" * 512):
                pass
    except OSError:
        pass
    try:
        d = daemon_factory(env=OK_RULES, start=False)
        site(d, SNMPSHAREDFILE=str(mnt / "snmp"))
        d.start()  # it runs, counting in memory
        relpath = d.submit("user@example.net")
        wait_until(lambda: files_gone(d.po, relpath), what="delivery")
        assert d.stop() == 0
        errors = [x for x in d.log().splitlines() if "counter file" in x]
        assert len(errors) == 1
        assert "No space left on device" in errors[0]
        assert "counting in memory" in errors[0]
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


# The session script whose counter deltas were recorded from the real scheduler
# (tests/spool/fixtures/zmailer_counters/mq2-session-deltas.txt).
MQ2_SESSIONS: list[tuple[str, str, list[str]]] = [
    (
        "admin",
        ADMIN_PW,
        [
            *("SHOW QUEUE THREADS", "SHOW QUEUE THREADS2", "SHOW SNMP"),
            *("SHOW QUEUE SHORT", "SHOW THREAD smtp x", "BOGUS", "ETRN x.example"),
            *("KILL MSG 1", "QUIT"),
        ],
    ),
    ("admin", "wrong", []),
    ("nobody", "nobody", ["SHOW QUEUE THREADS"]),
]


def _session(d: DaemonProc, user: str, password: str, commands: list[str]) -> str:
    """One session without QUIT unless asked (the recording closes the socket); the
    last multi-line body."""
    body: list[bytes] = []
    with socket.create_connection(d.address, timeout=20) as sock:
        reader = sock.makefile("rb")
        reader.readline()
        challenge = reader.readline().decode().rstrip("\n")
        sock.sendall(f"AUTH {user} {authenticator(challenge, password)}\n".encode())
        reader.readline()
        for command in commands:
            sock.sendall(command.encode() + b"\n")
            if reader.readline().startswith(b"+OK until"):
                body = []
                while (line := reader.readline()) not in (b".\n", b""):
                    body.append(line)
        reader.close()
    return b"".join(body).decode()


def mq2_counters(d: DaemonProc) -> dict[str, int]:
    text = _session(d, "admin", ADMIN_PW, ["SHOW COUNTERS"])
    return {k: int(v) for k, v in re.findall(r"^(SC\.MQ2\S+) +(\d+)$", text, re.M)}


def test_mq2_counters_count_as_zmailers_do(daemon_factory: DaemonFactory) -> None:
    d = daemon_factory(env=OK_RULES, start=False)
    d.auth.write_text(
        f"admin:{ADMIN_PW}:ALL:[127.0.0.0]/8\nnobody:nobody:SNMP:[127.0.0.0]/8\n"
    )
    d.start()
    before = mq2_counters(d)
    for user, password, commands in MQ2_SESSIONS:
        _session(d, user, password, commands)
    socket.create_connection(d.address, timeout=20).close()
    after = mq2_counters(d)
    recorded = (FIXTURES / "mq2-session-deltas.txt").read_text().split("\n")
    expected = dict(line.split() for line in recorded if line)
    assert {k: str(after[k] - before[k]) for k in after} == expected
    assert d.stop() == 0
