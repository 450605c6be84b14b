"""The README's main command (``mailq-scheduler demo``), and the pieces it is built from.

The end-to-end test runs ``python -m scheduler demo --port 0`` as a subprocess, waits for
its "Try these commands" banner, queries it with the real ``mailq`` client, waits until the
SMTP sink has taken a delivery and ``Rcpnts out`` has grown, sends SIGINT and checks that
every process is gone and the temporary directory was removed.
"""

from __future__ import annotations

import asyncio
import os
import queue
import re
import signal
import smtplib
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from hypothesis import given, strategies as st

from scheduler.demo import queue as demoqueue
from scheduler.demo.run import TRY_MARKER, DemoPaths, demo_auth, demo_config
from scheduler.demo.sink import Delivery, SinkPolicy, SmtpSession, SmtpSink, Verdict
from spool import controlfile
from spool.ids import message_number, spool_id
from spool.layout import init_postoffice

DEADLINE = 60.0
POLICY = SinkPolicy(
    defer=frozenset({"slow.example"}), reject=frozenset({"bad.example"})
)


# ---------------------------------------------------------------------- the sink core


def converse(session: SmtpSession, chunks: list[bytes]) -> bytes:
    return b"".join(session.receive_data(chunk) for chunk in chunks)


CONVERSATION = (
    b"EHLO client.example\r\n"
    b"MAIL FROM:<a@sender.example> SIZE=100\r\n"
    b"RCPT TO:<x@ok.example> NOTIFY=FAILURE\r\n"
    b"RCPT TO:<y@mx.slow.example>\r\n"
    b"RCPT TO:<z@bad.example>\r\n"
    b"DATA\r\n"
    b"Message-ID: <m1@sender.example>\r\n"
    b"Subject: test\r\n"
    b"\r\n"
    b"..leading dot\r\n"
    b"body\r\n"
    b".\r\n"
    b"QUIT\r\n"
)


def reply_codes(replies: bytes) -> list[str]:
    return [line[:3].decode() for line in replies.split(b"\r\n") if line[3:4] == b" "]


def test_session_accepts_defers_and_rejects_by_domain() -> None:
    session = SmtpSession(POLICY, hostname="sink.test")
    assert session.greeting() == b"220 sink.test ESMTP demo sink\r\n"
    replies = converse(session, [CONVERSATION])
    codes = reply_codes(replies)
    assert codes[:3] == ["250", "250", "250"]
    assert codes[3] == POLICY.defer_reply("y@mx.slow.example")[:3]
    assert codes[3][0] == "4"
    assert codes[4:] == ["550", "354", "250", "221"]
    assert session.closed
    [delivery] = session.deliveries
    assert delivery.sender == "a@sender.example"
    assert delivery.recipients == ("x@ok.example",)
    assert delivery.message_id == "<m1@sender.example>"
    # the dot-stuffed line lost one dot; the size counts the unstuffed body
    body = b"Message-ID: <m1@sender.example>\r\nSubject: test\r\n\r\n.leading dot\r\nbody\r\n"
    assert delivery.size == len(body)


@given(st.lists(st.integers(min_value=1, max_value=len(CONVERSATION)), max_size=40))
def test_session_is_chunking_invariant(cuts: list[int]) -> None:
    points = sorted(set(cuts))
    chunks = [
        CONVERSATION[a:b]
        for a, b in zip([0, *points], [*points, len(CONVERSATION)], strict=True)
    ]
    whole = SmtpSession(POLICY)
    split = SmtpSession(POLICY)
    assert converse(split, chunks) == converse(whole, [CONVERSATION])
    assert split.deliveries == whole.deliveries


def test_session_refuses_data_without_accepted_recipients() -> None:
    session = SmtpSession(POLICY)
    replies = converse(
        session,
        [b"HELO c\nMAIL FROM:<a@b>\nRCPT TO:<y@slow.example>\nDATA\nRCPT TO:<q@r>\n"],
    )
    assert [c[0] for c in reply_codes(replies)] == ["2", "2", "4", "5", "2"]
    assert not session.deliveries


def test_session_closes_on_an_overlong_line() -> None:
    session = SmtpSession(POLICY)
    replies = session.receive_data(b"HELO " + b"x" * 10_000)
    assert replies.startswith(b"500 ")
    assert session.closed


@pytest.mark.parametrize(
    ("address", "verdict"),
    [
        ("u@ok.example", Verdict.ACCEPT),
        ("u@slow.example", Verdict.DEFER),
        ("u@MX.Slow.Example", Verdict.DEFER),
        ("u@notslow.example", Verdict.ACCEPT),
        ("u@bad.example", Verdict.REJECT),
    ],
)
def test_policy_matches_domains_and_subdomains(address: str, verdict: Verdict) -> None:
    assert POLICY.verdict(address) is verdict


@pytest.mark.asyncio
async def test_sink_over_a_real_socket_with_smtplib() -> None:
    seen: list[Delivery] = []
    sink = SmtpSink(POLICY, on_delivery=seen.append)
    port = await sink.start("127.0.0.1", 0)

    def client() -> dict[str, tuple[int, bytes]]:
        with smtplib.SMTP("127.0.0.1", port, timeout=10) as smtp:
            return smtp.sendmail(
                "a@sender.example",
                ["x@ok.example", "y@slow.example"],
                b"Message-ID: <m2@x>\r\n\r\nhello\r\n",
            )

    try:
        refused = await asyncio.to_thread(client)
    finally:
        await sink.close()
    assert list(refused) == ["y@slow.example"]
    assert 400 <= refused["y@slow.example"][0] < 500
    assert [d.recipients for d in sink.deliveries] == [("x@ok.example",)]
    assert seen == sink.deliveries


# ---------------------------------------------------------------------- the demo queue


def test_plan_is_deterministic_and_realistic() -> None:
    plan = demoqueue.plan_queue(300, seed=7)
    assert plan == demoqueue.plan_queue(300, seed=7)
    summary = demoqueue.summarize(plan)
    assert summary.messages == 300
    assert summary.hosts >= 24
    assert {"smtp", "smtp-etrn", "local"} <= set(summary.by_kind)
    policy = demoqueue.sink_policy()
    staying = [
        m
        for m in plan
        if any(
            r.channel != "smtp" or policy.verdict(r.user) is Verdict.DEFER
            for r in m.recipients
        )
    ]
    assert len(staying) >= 100
    assert any(m.deferrals for m in plan)
    assert max(m.age for m in plan) > 86400
    assert max(m.age for m in plan) <= demoqueue.MAX_AGE


def test_write_message_backdates_and_appends_history(tmp_path: Path) -> None:
    po = init_postoffice(tmp_path / "po")
    now = int(time.time())
    msg = next(m for m in demoqueue.plan_queue(200, seed=3) if len(m.deferrals) >= 2)
    relpath = demoqueue.write_message(po, msg, now, hash_levels=2)
    assert re.fullmatch(r"[A-Z]/[A-Z]/[0-9]+", relpath)
    parsed = controlfile.parse(po.control_path(relpath).read_bytes())
    assert [(r.channel, r.host, r.user) for r in parsed.recipients] == [
        (r.channel, r.host, r.user) for r in msg.recipients
    ]
    offsets = {r.offset for r in parsed.recipients}
    assert len(parsed.diagnostics) == len(msg.deferrals)
    for diag in parsed.diagnostics:
        assert diag.reported
        assert diag.rcpt_offset in offsets
        assert diag.notary.split("\x01")[1] == "delayed"
        assert now - msg.age <= diag.time <= now
    mtime_ns = po.message_path(relpath).stat().st_mtime_ns
    assert mtime_ns // 10**9 == now - msg.age
    sid = spool_id(message_number(relpath), mtime_ns // 10**9, mtime_ns % 10**9)
    assert sid.startswith(f"S{message_number(relpath)}")


def test_demo_config_routes_smtp_through_the_sink(tmp_path: Path) -> None:
    from scheduler.config.clauses import parse_config

    paths = DemoPaths(tmp_path)
    text = demo_config(paths, 2525)
    assert 'command="builtin:smtp -h demo.invalid -F [127.0.0.1] -p 2525"' in text
    config = parse_config(text, str(paths.config))
    for channel, host in [
        ("smtp", "aperture.example"),
        ("smtp-etrn", "dialup.example"),
    ]:
        clause = config.match(channel, host)
        assert clause is not None
        assert "2525" in clause.argv
    etrn = config.match("smtp-etrn", "dialup.example")
    assert etrn is not None
    assert etrn.queueonly


def test_demo_auth_has_zmailers_loopback_default_and_an_admin() -> None:
    lines = demo_auth("s3cret", 1234).splitlines()
    assert "nobody:nobody:SNMP QQ TT ETRN:[127.0.0.0]/8 [ipv6.0::1]/128" in lines
    assert "admin:s3cret:ALL:[127.0.0.0]/8 [ipv6.0::1]/128" in lines
    assert "admin:s3cret:ALL:unix:1234" in lines


# ---------------------------------------------------------------------- end to end


class Output:
    """The demo's stdout, read by a thread so that waiting never blocks the test."""

    def __init__(self, stream: object) -> None:
        self.lines: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self._thread.start()

    def _read(self, stream: object) -> None:
        assert hasattr(stream, "readline")
        for raw in iter(stream.readline, b""):
            self._queue.put(raw.decode(errors="replace").rstrip("\n"))
        self._queue.put(None)

    def wait_for(self, pattern: str, deadline: float) -> re.Match[str]:
        for line in self.lines:
            if found := re.search(pattern, line):
                return found
        while (left := deadline - time.monotonic()) > 0:
            try:
                item = self._queue.get(timeout=left)
            except queue.Empty:
                break
            if item is None:
                pytest.fail(f"demo ended before {pattern!r}:\n" + "\n".join(self.lines))
            line = item
            self.lines.append(line)
            if found := re.search(pattern, line):
                return found
        pytest.fail(f"no {pattern!r} in time:\n" + "\n".join(self.lines))

    def join(self) -> None:
        self._thread.join(timeout=DEADLINE)


def mailq(
    port: int, *args: str, env: dict[str, str]
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mailq", "-p", str(port), *args],
        capture_output=True,
        text=True,
        timeout=30,
        env=env,
        check=False,
    )


def processes_using(root: Path) -> list[int]:
    """Pids whose cwd or command line is inside ``root``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cwd = os.readlink(entry / "cwd")
            cmdline = (entry / "cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        if cwd.startswith(str(root)) or str(root) in cmdline:
            found.append(int(entry.name))
    return found


@pytest.fixture
def demo_env(tmp_path: Path) -> dict[str, str]:
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("LISTEN_")}
    env |= {"TMPDIR": str(tmp), "PYTHONUNBUFFERED": "1"}
    return env


def test_demo_runs_serves_mailq_delivers_and_cleans_up(
    demo_env: dict[str, str],
) -> None:
    deadline = time.monotonic() + DEADLINE
    proc = subprocess.Popen(
        [sys.executable, "-m", "scheduler", "demo", "--port", "0", "--trickle", "1"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=demo_env,
    )
    assert proc.stdout is not None
    out = Output(proc.stdout)
    try:
        pid = int(out.wait_for(r"scheduler pid (\d+)", deadline).group(1))
        port = int(out.wait_for(r"server on 127\.0\.0\.1:(\d+)", deadline).group(1))
        po = Path(out.wait_for(r"^postoffice (\S+)$", deadline).group(1))
        out.wait_for(TRY_MARKER, deadline)
        root = po.parent
        env = demo_env | {"POSTOFFICE": str(po)}

        threads = mailq(port, "-Q", env=env)
        assert threads.returncode == 0, threads.stderr
        assert "smtp/" in threads.stdout
        assert "smtp-etrn/" in threads.stdout
        plain = mailq(port, env=env)
        assert plain.returncode == 0, plain.stderr
        assert any(f"smtp/{d}" in plain.stdout for d in demoqueue.DEFERRING_DOMAINS)

        out.wait_for(r"^sink: delivered ", deadline)
        while True:
            report = mailq(port, "-QQQ", env=env)
            assert report.returncode == 0, report.stderr
            rcpts_out = re.search(r"Rcpnts in \d+ out (\d+)", report.stdout)
            msgs = re.search(r"Msgs: +(\d+)", report.stdout)
            assert rcpts_out, report.stdout
            assert msgs, report.stdout
            if int(rcpts_out.group(1)) > 0:
                break
            assert time.monotonic() < deadline, report.stdout
            time.sleep(0.5)
        assert int(msgs.group(1)) >= 100, report.stdout
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
        try:
            returncode = proc.wait(timeout=DEADLINE)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise
        out.join()
        proc.stdout.close()
    assert returncode == 0, "\n".join(out.lines)
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    with pytest.raises(ProcessLookupError):
        os.killpg(pid, 0)
    assert processes_using(root) == []
    assert not root.exists()
    assert list(Path(demo_env["TMPDIR"]).iterdir()) == []
