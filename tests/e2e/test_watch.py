"""WATCH over real sockets against the real daemon: delivery events as TAB lines, the
WHERE filter, the stop line, its own right; and a watcher that never reads loses events
with a "lost" line instead of slowing anybody."""

from __future__ import annotations

import asyncio
import socket
import time
from pathlib import Path

from mailq.protocol.auth import authenticator
from mailq.server.shell import MailqServer, ServerConfig
from mailq.server.watch import parse_where
from scheduler.daemon.deliveries import Delivery, EventHub
from tests.e2e.conftest import ADMIN, ADMIN_PW, DaemonFactory, DaemonProc
from tests.mailq.server.fakeview import FakeCounters, FakeOps, FakeQueue

RULES = {"TESTTA_RULES": "*@ok.example=ok;*@fail.example=error;*=deferred"}


class Session:
    def __init__(self, d: DaemonProc, user: str = ADMIN, password: str = ADMIN_PW):
        self.sock = socket.create_connection(d.address, timeout=30)
        self.file = self.sock.makefile("rb")
        assert self.file.readline() == b"version zmailer 2.0\n"
        challenge = self.file.readline().decode().rstrip("\n")
        self.send(f"AUTH {user} {authenticator(challenge, password)}")
        assert self.file.readline() == b"+OK\n"

    def send(self, line: str) -> None:
        self.sock.sendall(line.encode() + b"\n")

    def line(self) -> str:
        return self.file.readline().decode()

    def close(self) -> None:
        self.file.close()
        self.sock.close()


def read_until(s: Session, kinds: set[str], limit: float = 60) -> list[list[str]]:
    seen: list[list[str]] = []
    deadline = time.monotonic() + limit
    while not kinds <= {f[1] for f in seen}:
        assert time.monotonic() < deadline, seen
        line = s.line()
        assert line.endswith("\n"), seen
        seen.append(line.rstrip("\n").split("\t"))
    return seen


def test_watch_streams_deliveries_until_a_line(daemon_factory: DaemonFactory) -> None:
    d = daemon_factory(env=RULES)
    s = Session(d)
    try:
        s.send("WATCH WHERE channel=smtp")
        assert s.line() == "+OK until LF.LF\n"
        d.submit("a@ok.example", "b@fail.example", "c@later.example")
        seen = read_until(s, {"delivered", "bounced", "deferred", "agent-started"})
        for fields in seen:
            assert len(fields) == 7
            assert fields[0].isdigit()
            assert fields[2] == "smtp"
        delivered = next(f for f in seen if f[1] == "delivered")
        assert delivered[3] == "ok.example"
        assert delivered[4].startswith("S")
        assert delivered[5].isdigit()
        deferred = next(f for f in seen if f[1] == "deferred")
        assert deferred[3] == "later.example"
        s.send("")  # any line ends the stream
        rest = []
        while (line := s.line()) != ".\n":
            rest.append(line)
        s.send("SHOW SNMP")  # the session goes on
        assert s.line() == "+OK until LF.LF\n"
        assert s.line().startswith("Kids:")
    finally:
        s.close()
    (metrics,) = d.query("SHOW METRICS")
    assert "zmailer_scheduler_watchers 0\n" in metrics


def test_watch_where_filters_and_bad_filter(daemon_factory: DaemonFactory) -> None:
    d = daemon_factory(env=RULES)
    s = Session(d)
    try:
        s.send("WATCH WHERE colour=red")
        # the same text as SHOW MSGS WHERE colour=red gives, after "-WATCH: "
        assert s.line().startswith(
            "-WATCH: bad filter term 1 'colour=red': unknown key"
        )
        s.send("WATCH WHERE host=*.example kind=delivered")
        assert s.line() == "+OK until LF.LF\n"
        d.submit("x@later.example", "y@ok.example")
        (fields,) = read_until(s, {"delivered"})
        assert fields[3] == "ok.example"
        s.send("stop")
        assert s.line() == ".\n"
    finally:
        s.close()


def test_watch_needs_its_right(daemon_factory: DaemonFactory) -> None:
    d = daemon_factory()
    d.auth.write_text(
        f"{ADMIN}:{ADMIN_PW}:ALL:[127.0.0.0]/8\n"
        "peek:pw:SNMP QQ TT:[127.0.0.0]/8\n"
        "watcher:pw:WATCH:[127.0.0.0]/8\n"
    )
    s = Session(d, "peek", "pw")
    try:
        s.send("WATCH")
        assert s.line().startswith("-MAILQ2 Unknown command, or refused")
    finally:
        s.close()
    s = Session(d, "watcher", "pw")
    try:
        s.send("WATCH")
        assert s.line() == "+OK until LF.LF\n"
        s.send("")
        assert s.line() == ".\n"
    finally:
        s.close()


async def _watching(
    tmp_path: Path,
) -> tuple[EventHub, MailqServer, asyncio.StreamReader, asyncio.StreamWriter]:
    """A server over a fake queue with an event hub, and one session in WATCH."""
    auth = tmp_path / "scheduler.auth"
    auth.write_text("w:pw:WATCH:[127.0.0.0]/8\n")
    auth.chmod(0o600)
    hub = EventHub()
    queue = FakeQueue([], FakeCounters())
    server = MailqServer(queue, FakeOps(queue), ServerConfig(authfile=auth))
    server.service.events = hub
    await server.start(["127.0.0.1:0"])
    host, _, port = server.addresses[0].rpartition(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    await reader.readline()
    challenge = (await reader.readline()).decode().rstrip("\n")
    writer.write(f"AUTH w {authenticator(challenge, 'pw')}\nWATCH\n".encode())
    assert await reader.readline() == b"+OK\n"
    assert await reader.readline() == b"+OK until LF.LF\n"
    while not hub.subscribers:  # noqa: ASYNC110 - the hub has no event to wait on
        await asyncio.sleep(0.01)
    return hub, server, reader, writer


def test_a_watcher_that_never_reads_loses_events_not_the_scheduler(
    tmp_path: Path,
) -> None:

    async def main() -> None:
        hub, server, reader, writer = await _watching(tmp_path)
        started = time.monotonic()
        for i in range(200_000):  # the client reads nothing meanwhile
            hub.publish(Delivery(1.0, "delivered", "smtp", f"h{i}", "S1", i))
        publish_time = time.monotonic() - started
        lines = []
        while True:
            line = await reader.readline()
            lines.append(line)
            if b"\tlost\t" in line:
                break
        writer.write(b"\n")
        while (await reader.readline()) != b".\n":
            pass
        writer.close()
        server.close()
        await server.wait_closed()
        assert publish_time < 60  # bounded work per event, never a wait on the client
        assert len(lines) <= 1001
        assert lines[-1].endswith(b" events lost\n")

    asyncio.run(main())


def test_where_parser() -> None:
    ev = Delivery(1.0, "deferred", "smtp", "MX.Example.org")
    assert parse_where("")(ev)
    assert parse_where("WHERE host=*.example.ORG")(ev)
    assert not parse_where("where channel=local")(ev)
    assert parse_where("WHERE kind=def* channel=s?tp")(ev)
    # the operator filter language: negation, substrings, quotes, the spool-id
    assert not parse_where("WHERE kind!=deferred")(ev)
    assert parse_where("WHERE host~EXAMPLE channel!=local")(ev)
    sid = Delivery(1.0, "delivered", "smtp", "h", "S100AbC", 3, "")
    assert parse_where("WHERE id=S100*")(sid)
    assert not parse_where("WHERE id=S2*")(sid)
    bounced = Delivery(1.0, "bounced", "smtp", "h", "S1", 0, "550 no such user")
    assert parse_where('WHERE diag~"no such"')(bounced)
    assert not parse_where('WHERE diag~"greylisted"')(bounced)
    for bad in (
        "channel=smtp",
        "WHERE",
        "WHERE host",
        "WHERE host=",
        "WHERE x=y",
        "WHERE rcpt=a@b",  # a key events do not have
        "WHERE age>1h",
    ):
        try:
            parse_where(bad)
        except ValueError:
            continue
        raise AssertionError(bad)


def test_server_shutdown_ends_a_watch_with_its_dot(tmp_path: Path) -> None:

    async def main() -> list[bytes]:
        hub, server, reader, writer = await _watching(tmp_path)
        server.close()
        rest = (await reader.read()).split(b"\n")
        writer.close()
        await server.wait_closed()
        assert not hub.subscribers
        return rest

    assert asyncio.run(main())[:2] == [b".", b"-MAILQ2 scheduler shutting down"]


def test_watch_sees_holds_and_releases(daemon_factory: DaemonFactory) -> None:
    d = daemon_factory(env=RULES)
    relpath = d.submit("x@later.example")
    deadline = time.monotonic() + 60
    while relpath not in d.query("SHOW MSGS")[0]:
        assert time.monotonic() < deadline, "the message never loaded"
        time.sleep(0.05)
    s = Session(d)
    try:
        s.send("WATCH WHERE host=later.example")
        assert s.line() == "+OK until LF.LF\n"
        (held,) = d.query(f"HOLD {relpath} waiting for legal")
        assert held.startswith("+OK op=")
        (released,) = d.query(f"RELEASE {relpath}")
        assert released.startswith("+OK op=")
        seen = read_until(s, {"held", "released"})
        hold = next(f for f in seen if f[1] == "held")
        assert hold[2:4] == ["smtp", "later.example"]
        assert hold[4].startswith("S")
        assert hold[6].endswith("waiting for legal")
        assert next(f for f in seen if f[1] == "released")[4] == hold[4]
        s.send("")
        while s.line() != ".\n":
            pass
    finally:
        s.close()
