"""scheduler.lifeline.Lifeline: the helper that signals the children handed to it when
their parent ends. Real processes: a parent script starts the helper and its children,
the test kills the parent and watches what is left."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from tests.procs import gone

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="pidfds are Linux only"
)
DEADLINE = 30.0

PARENT = textwrap.dedent(
    """
    import json, os, signal, subprocess, sys, time
    from scheduler.lifeline import Lifeline

    life = Lifeline.start()
    assert life is not None and life.alive
    kids = [subprocess.Popen(["sleep", "300"], start_new_session=True) for _ in range(3)]
    for kid in kids:
        assert life.adopt(kid.pid)
    kids[0].kill()  # one ends before the parent: the helper lets it go
    kids[0].wait()
    if sys.argv[1] == "stop-helper":  # close() must not wait for it for ever
        os.kill(life.pid, signal.SIGSTOP)
        started = time.monotonic()
        life.close()
        took = time.monotonic() - started
        report = {"took": took, "reaped": not os.path.exists(f"/proc/{life.pid}")}
    elif sys.argv[1] == "kill-helper":
        os.kill(life.pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while life.alive and time.monotonic() < deadline:
            time.sleep(0.01)
        late = subprocess.Popen(["sleep", "300"], start_new_session=True)
        report = {"alive": life.alive, "adopted": life.adopt(late.pid), "late": late.pid}
    else:
        report = {}
    report.update(helper=life.pid, kids=[k.pid for k in kids[1:]])
    print(json.dumps(report), flush=True)
    time.sleep(300)
    """
)


def _start(mode: str) -> tuple[subprocess.Popen[str], dict[str, object]]:
    root = Path(__file__).resolve().parents[2]
    env = dict(os.environ, PYTHONPATH=str(root))
    parent = subprocess.Popen(
        [sys.executable, "-c", PARENT, mode],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
        start_new_session=True,
    )
    assert parent.stdout is not None
    line = parent.stdout.readline()
    assert line, "the parent script failed"
    return parent, json.loads(line)


def _wait_gone(*pids: int) -> None:
    deadline = time.monotonic() + DEADLINE
    while not all(gone(p) for p in pids):
        assert time.monotonic() < deadline, [p for p in pids if not gone(p)]
        time.sleep(0.02)


def _cleanup(parent: subprocess.Popen[str], *pids: int) -> None:
    if parent.poll() is None:
        parent.kill()
        parent.wait()
    if parent.stdout is not None:
        parent.stdout.close()
    for pid in pids:
        if pid and not gone(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def _held(pid: int) -> dict[str, int]:
    """How many sockets and pidfds ``pid`` has open, and anything else but /dev/null."""
    out: dict[str, int] = {}
    for p in Path(f"/proc/{pid}/fd").iterdir():
        target = os.readlink(p)
        kind = (
            "socket"
            if target.startswith("socket:")
            else "pidfd"
            if target == "anon_inode:[pidfd]"
            else target
        )
        if kind != os.devnull:
            out[kind] = out.get(kind, 0) + 1
    return out


def test_children_end_when_the_parent_is_killed() -> None:
    parent, report = _start("run")
    helper = int(report["helper"])  # type: ignore[call-overload]
    kids = [int(k) for k in report["kids"]]  # type: ignore[attr-defined]
    try:
        assert not any(gone(k) for k in kids)
        assert Path(f"/proc/{helper}/comm").read_text() == "sched-lifeline\n"
        # it holds its socket and one pidfd per running child: the ended one let go
        # (it takes them from its socket as it runs: looked at until it has)
        deadline = time.monotonic() + DEADLINE
        while (held := _held(helper)) != {"socket": 1, "pidfd": 2}:
            assert time.monotonic() < deadline, held
            time.sleep(0.02)
        assert os.getsid(helper) == helper  # no terminal's signals
        for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGUSR1, signal.SIGINT):
            os.kill(helper, sig)  # a pkill -f of the daemon's command line
        time.sleep(0.2)
        assert not gone(helper)
        parent.send_signal(signal.SIGKILL)
        parent.wait()
        _wait_gone(helper, *kids)
    finally:
        _cleanup(parent, helper, *kids)


def test_a_helper_that_has_gone_is_seen_and_the_parent_goes_on() -> None:
    parent, report = _start("kill-helper")
    kids = [int(k) for k in report["kids"]]  # type: ignore[attr-defined]
    late = int(report["late"])  # type: ignore[call-overload]
    try:
        assert report["alive"] is False
        assert report["adopted"] is False
        parent.send_signal(signal.SIGKILL)
        parent.wait()
        time.sleep(0.5)
        # nothing signals them now: that is why the daemon falls back to
        # dies_with_parent for the agents it starts after the helper has gone
        assert not any(gone(k) for k in [*kids, late])
    finally:
        _cleanup(parent, late, *kids)


def test_closing_a_stopped_helper_ends_it_within_a_second() -> None:
    parent, report = _start("stop-helper")
    kids = [int(k) for k in report["kids"]]  # type: ignore[attr-defined]
    try:
        assert report["reaped"] is True
        assert 0.9 <= float(report["took"]) < 10  # type: ignore[arg-type]
    finally:
        _cleanup(parent, *kids)
