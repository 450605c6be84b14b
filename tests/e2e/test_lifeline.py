"""Nothing the daemon or the demo started keeps running when they are SIGKILLed or their
terminal goes away (scheduler.lifeline): real processes, real signals, a real
pseudo-terminal."""

from __future__ import annotations

import contextlib
import fcntl
import os
import pty
import re
import signal
import subprocess
import sys
import termios
import time
from pathlib import Path

import pytest

from tests.e2e.conftest import TESTTA_CONF, DaemonFactory, wait_until
from tests.e2e.test_demo import Output, processes_using
from tests.procs import gone

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux only"
)
DEADLINE = 60.0
PID = re.compile(rb"scheduler pid (\d+)")
PO = re.compile(rb"(?m)^postoffice (\S+)\r?$")


def reap(*pids: int) -> None:
    """After a failure: leave nothing behind (what the test looked for, by pid)."""
    for pid in pids:
        if pid and not gone(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def test_agents_end_when_the_daemon_is_killed(daemon_factory: DaemonFactory) -> None:
    # an agent that never reads its stdin, so never sees the scheduler's EOF
    conf = TESTTA_CONF.replace(
        'command="testta -c $channel"', 'command="/bin/sleep 300"'
    )
    d = daemon_factory(conf)
    d.submit("x@slow.example")
    wait_until(lambda: "P={" in d.query("SHOW QUEUE THREADS")[0], what="an agent")
    (threads,) = d.query("SHOW QUEUE THREADS")
    agent = int(threads.split("P={")[1].split("}")[0])
    assert not gone(agent)
    assert d.proc is not None
    d.proc.send_signal(signal.SIGKILL)  # the daemon alone, not its process group
    d.proc.wait()
    try:
        wait_until(lambda: gone(agent), limit=DEADLINE, what="the agent to end")
    finally:
        reap(agent)


def _start_demo(env: dict[str, str], **kwargs: object) -> subprocess.Popen[bytes]:
    return subprocess.Popen(  # type: ignore[no-any-return]
        [sys.executable, "-m", "scheduler", "demo", "--port", "0", "--trickle", "0"],
        env=env | {"PYTHONUNBUFFERED": "1"},
        **kwargs,  # type: ignore[call-overload]
    )


def test_scheduler_and_agents_end_when_the_demo_is_killed(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LISTEN_")}
    env["TMPDIR"] = str(tmp_path)
    proc = _start_demo(
        env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    assert proc.stdout is not None
    out = Output(proc.stdout)
    deadline = time.monotonic() + DEADLINE
    scheduler = 0
    try:
        scheduler = int(out.wait_for(r"scheduler pid (\d+)", deadline).group(1))
        po = Path(out.wait_for(r"^postoffice (\S+)$", deadline).group(1))
        root = po.parent
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        wait_until(lambda: gone(scheduler), limit=DEADLINE, what="the scheduler")
        wait_until(
            lambda: not processes_using(root), limit=DEADLINE, what="its children"
        )
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        reap(scheduler)
        out.join()
        proc.stdout.close()


def test_demo_and_its_children_end_when_the_terminal_closes(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LISTEN_")}
    env["TMPDIR"] = str(tmp_path)
    master, slave = pty.openpty()

    def take_terminal() -> None:  # after setsid: the pty becomes the controlling tty
        fcntl.ioctl(0, termios.TIOCSCTTY, 0)

    proc = _start_demo(
        env,
        stdin=slave,
        stdout=slave,
        stderr=slave,
        start_new_session=True,
        preexec_fn=take_terminal,
    )
    os.close(slave)
    text = b""
    deadline = time.monotonic() + DEADLINE
    scheduler = 0
    try:
        while not (PID.search(text) and PO.search(text)):
            assert time.monotonic() < deadline, text.decode(errors="replace")
            try:
                text += os.read(master, 4096)
            except OSError:
                break
        scheduler = int(PID.search(text)[1])  # type: ignore[index]
        root = Path(PO.search(text)[1].decode()).parent  # type: ignore[index]
        os.close(master)  # the terminal hangs up: SIGHUP to the demo
        master = -1
        proc.wait(timeout=DEADLINE)
        wait_until(lambda: gone(scheduler), limit=DEADLINE, what="the scheduler")
        wait_until(
            lambda: not processes_using(root), limit=DEADLINE, what="its children"
        )
        assert not root.exists()  # the demo stopped cleanly and removed its files
    finally:
        if master >= 0:
            os.close(master)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        reap(scheduler)


AGENT = """\
#!{python}
import ctypes, os, sys, time
sig = ctypes.c_int()
ctypes.CDLL(None).prctl(2, ctypes.byref(sig), 0, 0, 0)  # PR_GET_PDEATHSIG
with open(f"{{sys.argv[1]}}.{{os.getpid()}}.tmp", "w") as f:
    f.write(str(sig.value))
os.rename(f"{{sys.argv[1]}}.{{os.getpid()}}.tmp", f"{{sys.argv[1]}}.{{os.getpid()}}")
time.sleep(300)
"""


def _children(pid: int) -> dict[int, str]:
    """``pid -> comm`` of the children of ``pid``."""
    out = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                stat = (entry / "stat").read_text()
                if int(stat.rpartition(")")[2].split()[1]) == pid:
                    out[int(entry.name)] = (entry / "comm").read_text().strip()
    return out


def test_agents_started_without_a_preexec_end_through_the_lifeline_helper(
    daemon_factory: DaemonFactory, tmp_path: Path
) -> None:
    """Agents are handed to the lifeline helper (so subprocess can vfork); a helper
    that is killed is replaced at once and the new one takes over the running agents;
    all end with the daemon."""
    script = tmp_path / "agent.py"
    script.write_text(AGENT.format(python=sys.executable))
    script.chmod(0o755)
    out = tmp_path / "pdeathsig"
    conf = TESTTA_CONF.replace(
        'command="builtin:testta -c $channel"', f'command="{script} {out}"'
    )
    d = daemon_factory(conf)
    assert d.proc is not None
    daemon = d.proc.pid

    def reported() -> dict[int, str]:
        return {
            int(p.name.rsplit(".", 1)[1]): p.read_text()
            for p in tmp_path.glob("pdeathsig.*")
            if not p.name.endswith(".tmp")
        }

    def helpers() -> list[int]:
        return [p for p, comm in _children(daemon).items() if comm == "sched-lifeline"]

    (helper,) = helpers()
    agents: list[int] = []
    try:
        d.submit("x@one.example")
        wait_until(lambda: len(reported()) == 1, limit=DEADLINE, what="an agent")
        agents = list(reported())
        assert list(reported().values()) == ["0"]  # no preexec_fn: started by vfork
        os.kill(helper, signal.SIGKILL)
        wait_until(lambda: helpers() not in ([], [helper]), what="another helper")
        d.submit("y@two.example")
        wait_until(lambda: len(reported()) == 2, limit=DEADLINE, what="a second agent")
        agents = list(reported())
        assert list(reported().values()) == ["0", "0"]
        assert "took over 1 running TA(s)" in d.log_path.read_text()
        d.proc.send_signal(signal.SIGKILL)  # the daemon alone, not its process group
        d.proc.wait()
        wait_until(lambda: all(map(gone, agents)), limit=DEADLINE, what="the agents")
    finally:
        reap(helper, *helpers(), *agents)
