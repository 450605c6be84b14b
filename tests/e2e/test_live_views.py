"""``mailq --top`` driven in a pseudo-terminal, and ``mailq --watch`` stopped with Ctrl-C,
both against the real daemon over real sockets."""

from __future__ import annotations

import contextlib
import os
import pty
import re
import select
import signal
import subprocess
import sys
import time

from mailq.client.top import Snapshot, from_metrics, render
from tests.e2e.conftest import ADMIN, ADMIN_PW, DaemonFactory, DaemonProc, wait_until

RULES = {"TESTTA_RULES": "*@ok.example=ok;*=deferred"}
DEADLINE = 60.0
_ESC = re.compile(rb"\x1b\[[0-9;?]*[A-Za-z]|\x1b[()][0-9A-Za-z]|\x1b[=>]")


def mailq_argv(d: DaemonProc, *args: str) -> list[str]:
    return [sys.executable, "-m", "mailq", "-p", str(d.address[1]),
            "-U", f"{ADMIN}/{ADMIN_PW}", *args, d.address[0]]  # fmt: skip


def test_top_in_a_pty_shows_the_queue_and_quits_on_q(
    daemon_factory: DaemonFactory,
) -> None:
    d = daemon_factory(env=RULES)
    d.submit("a@later.example", "b@later.example", "c@ok.example")
    wait_until(lambda: "later.example" in d.query("SHOW QUEUE THREADS2")[0])
    pid, fd = pty.fork()
    if pid == 0:  # the child: becomes mailq in the terminal
        os.environ.update(d.env, TERM="xterm", COLUMNS="100", LINES="30")
        os.execv(sys.executable, mailq_argv(d, "--top"))
    screen = b""
    try:
        deadline = time.monotonic() + DEADLINE
        wanted = [b"Busiest destinations", b"later.example", b"Agents", b"Rates"]
        while not all(w in _ESC.sub(b"", screen) for w in wanted):
            assert time.monotonic() < deadline, screen[-2000:]
            ready, _, _ = select.select([fd], [], [], 1.0)
            if ready:
                screen += os.read(fd, 65536)
        text = _ESC.sub(b"", screen)
        assert b"2 recipients" in text or b"3 recipients" in text
        os.write(fd, b"q")
        deadline = time.monotonic() + DEADLINE
        while True:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                break
            assert time.monotonic() < deadline, "mailq --top did not quit on q"
            ready, _, _ = select.select([fd], [], [], 0.2)
            if ready:
                with contextlib.suppress(OSError):
                    os.read(fd, 65536)
        assert os.waitstatus_to_exitcode(status) == 0
    finally:
        try:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass
        os.close(fd)


def test_watch_prints_events_and_stops_on_ctrl_c(daemon_factory: DaemonFactory) -> None:
    d = daemon_factory(env=RULES)
    proc = subprocess.Popen(
        mailq_argv(d, "--watch", "--where", "kind=delivered"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=d.env,
    )
    try:
        assert proc.stdout is not None
        wait_until(lambda: "zmailer_scheduler_watchers 1" in d.query("SHOW METRICS")[0])
        d.submit("w@ok.example", "x@later.example")
        line = proc.stdout.readline().decode()
        fields = line.rstrip("\n").split("\t")
        assert fields[1:4] == ["delivered", "smtp", "ok.example"]
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=DEADLINE) == 0
        assert proc.stdout.read() == b""  # only delivered events were asked for
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()


def test_render_rates_and_bounds() -> None:
    text = [
        "zmailer_scheduler_recipients 7",
        "zmailer_scheduler_messages 3",
        'zmailer_scheduler_transport_agents{state="running"} 2',
        "zmailer_scheduler_received_recipients_total 100",
        'zmailer_scheduler_recipients_delivered_total{channel="smtp"} 40',
        'zmailer_scheduler_destination_recipients{channel="smtp",host="a.example"} 5',
        'zmailer_scheduler_destination_oldest_age_seconds{channel="smtp",host="a.example"} 90',
        'zmailer_scheduler_destination_recipients{channel="other",host="other"} 2',
    ]
    prev = from_metrics(text, 1000.0)
    cur = from_metrics(
        [t.replace(" 40", " 50").replace(" 100", " 120") for t in text], 1002.0
    )
    assert isinstance(cur, Snapshot)
    lines = render("mx", cur, prev, 80, 24)
    joined = "\n".join(lines)
    assert "in 10.0/s" in joined
    assert "delivered 5.0/s" in joined
    assert "smtp/a.example" in joined
    assert "other" not in joined
    assert all(len(line) < 80 for line in lines)
    assert len(render("mx", cur, None, 40, 5)) == 5
