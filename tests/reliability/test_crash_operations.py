"""SIGKILL in the middle of a bulk HOLD, RELEASE, DELETE or UNDO (the crash-harness
approach: the real daemon, killed at varied points, restarted on the same postoffice).

After every kill and restart, each message is either before or after the operation:
loaded (held or not, as the holds file says) or whole in the trash (control and message
file together), never lost, never half-moved, and no control file is corrupt.
"""

from __future__ import annotations

import re
import signal
import socket
import subprocess
import sys
import threading

import pytest

from mailq.protocol.auth import authenticator
from spool import opstate
from spool.submit import submit
from tests.e2e.conftest import (  # noqa: F401 - fixtures
    ADMIN,
    ADMIN_PW,
    DaemonFactory,
    DaemonProc,
    daemon_factory,
    short_root,
    wait_until,
)

CONF = """\
*/*\tinterval=1s idlemax=30s expiry=5d retries="60 60"

smtp/*\tqueueonly command="builtin:smtp -h e2e.test"
"""
MESSAGES = 300
KILL_DELAYS = (0.0, 0.002, 0.01, 0.03, 0.08)


def _fill(d: DaemonProc) -> set[str]:
    names = set()
    for i in range(MESSAGES):
        rel = submit(
            d.po,
            "s@example.com",
            [f"r{i}@h{i % 3}.example"],
            b"Subject: x\n\nbody\n",
            notify=False,
        )
        names.add(rel.rpartition("/")[2])
    return names


def _count(d: DaemonProc) -> int:
    (body,) = d.query("SHOW MSGS")
    return len(body.splitlines())


def _fire_and_kill(d: DaemonProc, commands: list[str], delay: float) -> None:
    """Send the commands on one session and SIGKILL the daemon ``delay`` after the last
    one was written (without waiting for its reply)."""
    with socket.create_connection(d.address, timeout=20) as sock:
        reader = sock.makefile("rb")
        reader.readline()
        challenge = reader.readline().decode().rstrip("\n")
        sock.sendall(f"AUTH {ADMIN} {authenticator(challenge, ADMIN_PW)}\n".encode())
        reader.readline()
        for command in commands[:-1]:
            sock.sendall(command.encode() + b"\n")
            reader.readline()
        sock.sendall(commands[-1].encode() + b"\n")
        timer = threading.Timer(delay, d.send, (signal.SIGKILL,))
        timer.start()
        timer.join()
    assert d.proc is not None
    d.proc.wait(timeout=20)


def _token(d: DaemonProc, command: str) -> str:
    (preview,) = d.query(command)
    m = re.search(r"CONFIRM (\S+)", preview)
    assert m is not None, preview
    return m.group(1)


def _check(d: DaemonProc, names: set[str]) -> dict[str, str]:
    """Restart, then every message is loaded or whole in the trash; returns the states."""
    d.ready.unlink(missing_ok=True)  # a killed daemon leaves its ready file
    d.start()
    root = d.po.root
    trash = {p.name for p in (root / opstate.TRASH_DIR).rglob("*") if p.is_file()}
    in_transport = {p.name for p in d.po.transport.rglob("*") if p.is_file()}
    in_queue = {p.name for p in d.po.queue.rglob("*") if p.is_file()}
    for name in names:
        if name in in_transport:
            assert name in in_queue, f"{name}: control file without message file"
            assert name not in trash, f"{name}: in the spool and in the trash"
        else:
            assert name in trash, f"{name}: lost"
            assert name not in in_queue, f"{name}: message file left in queue/"
    live = {n for n in names if n in in_transport}
    wait_until(lambda: _count(d) == len(live), what="reloading", limit=150)
    (body,) = d.query("SHOW MSGS")
    states = {
        line.split("\t")[1].rpartition("/")[2]: line.split("\t")[2]
        for line in body.splitlines()
    }
    assert set(states) == live
    assert set(states.values()) <= {"queued", "held"}
    check = subprocess.run(
        [sys.executable, "-m", "spool", "check", "-P", str(root)],
        capture_output=True,
        text=True,
        env=d.env,
    )
    assert "corrupt" not in check.stdout + check.stderr
    return states


@pytest.mark.slow
def test_sigkill_during_bulk_operations(
    daemon_factory: DaemonFactory,  # noqa: F811 - the fixture imported above
) -> None:
    d = daemon_factory(CONF)
    names = _fill(d)
    d.stop()
    d.start()
    wait_until(lambda: _count(d) == MESSAGES, what="loading", limit=60)
    where = "WHERE channel=smtp"
    for delay in KILL_DELAYS:
        # HOLD, then RELEASE, each killed mid-way
        token = _token(d, f"HOLD {where}")
        _fire_and_kill(d, [f"HOLD {where} CONFIRM {token}"], delay)
        states = _check(d, names)
        token = _token(d, f"RELEASE {where}")
        _fire_and_kill(d, [f"RELEASE {where} CONFIRM {token}"], delay)
        states = _check(d, names)
        assert set(states.values()) <= {"queued", "held"}
    # DELETE then UNDO, killed mid-way
    for delay in KILL_DELAYS:
        token = _token(d, "DELETE WHERE host=h0.example")
        _fire_and_kill(d, [f"DELETE WHERE host=h0.example CONFIRM {token}"], delay)
        _check(d, names)
        for op, _mtime, _n in opstate.list_trash(d.po.root):
            _fire_and_kill(d, [f"UNDO {op}"], delay)
            _check(d, names)
    # in the end everything can be brought back and nothing was lost
    for op, _mtime, _n in opstate.list_trash(d.po.root):
        d.query(f"UNDO {op}")
    wait_until(lambda: _count(d) == MESSAGES, what="all back", limit=150)
