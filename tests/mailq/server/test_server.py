"""The asyncio shell end to end over real sockets (TCP v4/v6 and Unix)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from mailq.protocol.auth import authenticator
from mailq.protocol.errors import ListenError
from mailq.server.shell import MailqServer, ServerConfig
from tests.mailq.server import fakeview
from tests.mailq.server.fakeview import FakeOps, FakeQueue

ADMIN = (
    "admin:adminpw:ALL:[127.0.0.0]/8 [ipv6.0::1]/128\nnobody:nobody:SNMP QQ TT ETRN:\n"
)
NOW = 1795312216


class Peer:
    """A minimal test client over asyncio streams."""

    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self.reader = reader
        self.writer = writer
        self.challenge = ""

    @classmethod
    async def open(cls, address: str) -> Peer:
        if address.startswith("UNIX:"):
            r, w = await asyncio.open_unix_connection(address[5:])
        else:
            host, port = address.rsplit(":", 1)
            r, w = await asyncio.open_connection(host.strip("[]"), int(port))
        return cls(r, w)

    async def greet(self) -> bytes:
        first = await self.reader.readline()
        second = await self.reader.readline()
        self.challenge = second.decode().rstrip("\n")
        return first + second

    async def auth(self, user: str = "admin", password: str = "adminpw") -> bytes:
        return await self.command(
            f"AUTH {user} {authenticator(self.challenge, password)}"
        )

    async def command(self, line: str) -> bytes:
        self.writer.write(line.encode() + b"\n")
        await self.writer.drain()
        head = await self.reader.readline()
        if head != b"+OK until LF.LF\n":
            if line.startswith("KILL") and head != b"-No KILL allowed for you.\n":
                head += await self.reader.readline()
            return head
        body = head
        while True:
            part = await self.reader.readline()
            body += part
            if part in (b".\n", b""):
                return body

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError):
            await self.writer.wait_closed()


@pytest.fixture
def authfile(tmp_path: Path) -> Path:
    path = tmp_path / "scheduler.auth"
    path.write_text(ADMIN)
    path.chmod(0o600)
    return path


@pytest.fixture
def queue() -> FakeQueue:
    return fakeview.main_run()


@pytest_asyncio.fixture
async def server(authfile: Path, queue: FakeQueue) -> AsyncIterator[MailqServer]:
    srv = MailqServer(
        queue, FakeOps(queue), ServerConfig(authfile=authfile), clock=lambda: NOW
    )
    await srv.start(["127.0.0.1:0"])
    yield srv
    srv.close()
    await asyncio.wait_for(srv.wait_closed(), 10)


@pytest.mark.asyncio
async def test_greeting_auth_and_quit(server: MailqServer) -> None:
    peer = await Peer.open(server.addresses[0])
    greeting = await peer.greet()
    assert greeting.startswith(b"version zmailer 2.0\n220 MAILQ-V2-CHALLENGE: ")
    token = peer.challenge.split(": ", 1)[1]
    assert len(token.split(".")[-1]) >= 32  # >= 128 random bits
    assert await peer.auth(password="wrong") == b"-BAD USER OR PASSWORD\n"
    assert await peer.auth() == b"+OK\n"
    assert await peer.command("quit") == b"+Bye bye\n"
    assert await peer.reader.read() == b""
    await peer.close()


@pytest.mark.asyncio
async def test_auth_budget_closes_the_session(server: MailqServer) -> None:
    peer = await Peer.open(server.addresses[0])
    await peer.greet()
    for _ in range(2):
        assert await peer.auth(password="x") == b"-BAD USER OR PASSWORD\n"
    assert (
        await peer.auth("ghost") == b"-BAD USER OR AUTHENTICATOR OR CONTACT ADDRESS\n"
    )
    assert await peer.reader.read() == b""
    await peer.close()


@pytest.mark.asyncio
async def test_session_limit_21_served_then_silent_close(
    authfile: Path, queue: FakeQueue, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mailq.server import shell

    # no squatter eviction (the peers are unauthenticated): ZMailer's B11 alone
    monkeypatch.setattr(shell, "PRE_AUTH_GRACE", 600.0)
    monkeypatch.setattr(shell, "STALL_GRACE", 600.0)
    srv = MailqServer(
        queue,
        FakeOps(queue),
        ServerConfig(
            authfile=authfile, max_sessions=20, reserved_sessions=0, max_per_peer=0
        ),
    )
    await srv.start(["127.0.0.1:0"])
    peers = []
    try:
        for _ in range(21):
            peer = await Peer.open(srv.addresses[0])
            assert (await peer.greet()).startswith(b"version zmailer 2.0\n220 ")
            peers.append(peer)
        for _ in range(4):
            extra = await Peer.open(srv.addresses[0])
            assert await extra.reader.read() == b""  # raw/91: no bytes at all
            await extra.close()
        assert queue.counters.get("SC.MQ2Parallel-G") == 21
        await peers[0].command("QUIT")
        await peers[0].reader.read()
        again = await Peer.open(srv.addresses[0])  # a slot is free again
        assert (await again.greet()).startswith(b"version")
        peers.append(again)
    finally:
        for peer in peers:
            await peer.close()
        srv.close()
        await srv.wait_closed()
    assert queue.counters.get("SC.MQ2Parallel-G") == 0


@pytest.mark.asyncio
async def test_lifetime_is_a_real_deadline(authfile: Path, queue: FakeQueue) -> None:
    before = queue.counters.get("SC.MQ2TimedOut")
    srv = MailqServer(
        queue, FakeOps(queue), ServerConfig(authfile=authfile, lifetime=0.2)
    )
    await srv.start(["127.0.0.1:0"])
    peer = await Peer.open(srv.addresses[0])
    await peer.greet()
    assert await peer.auth() == b"+OK\n"
    assert await asyncio.wait_for(peer.reader.read(), 10) == b""
    await peer.close()
    srv.close()
    await srv.wait_closed()
    assert queue.counters.get("SC.MQ2TimedOut") == before + 1


@pytest.mark.asyncio
async def test_missing_auth_file_gives_550(tmp_path: Path, queue: FakeQueue) -> None:
    srv = MailqServer(queue, FakeOps(queue), ServerConfig(authfile=tmp_path / "none"))
    await srv.start(["127.0.0.1:0"])
    peer = await Peer.open(srv.addresses[0])
    assert await peer.reader.read() == b"version zmailer 2.0\n550 NO ACCESS FOR YOU\n"
    await peer.close()
    srv.close()
    await srv.wait_closed()


@pytest.mark.asyncio
async def test_over_long_line_closes_only_that_session(server: MailqServer) -> None:
    good = await Peer.open(server.addresses[0])
    await good.greet()
    bad = await Peer.open(server.addresses[0])
    await bad.greet()
    bad.writer.write(b"A" * 20000)
    await bad.writer.drain()
    assert await asyncio.wait_for(bad.reader.read(), 10) == b""
    assert await good.auth() == b"+OK\n"
    assert (await good.command("SHOW SNMP")).endswith(b"\n.\n")
    await bad.close()
    await good.close()


@pytest.mark.asyncio
async def test_pipelined_commands_answered_in_order(server: MailqServer) -> None:
    peer = await Peer.open(server.addresses[0])
    await peer.greet()
    auth = f"AUTH admin {authenticator(peer.challenge, 'adminpw')}"
    peer.writer.write(f"{auth}\r\nSHOW SNMP\r\nFOO\r\nQUIT\r\nSHOW SNMP\r\n".encode())
    data = await peer.reader.read()
    assert data.startswith(b"+OK\n+OK until LF.LF\nKids: 2")
    assert data.endswith(
        b".\n-MAILQ2 Unknown command, or refused by access control; VERB='FOO' REST=''\n+Bye bye\n"
    )
    await peer.close()


@pytest.mark.asyncio
async def test_state_changing_commands_and_audit_log(
    server: MailqServer, queue: FakeQueue, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    peer = await Peer.open(server.addresses[0])
    await peer.greet()
    await peer.auth()
    assert (
        await peer.command("ETRN Example.NET  1.2.3.4@mx")
        == b"+OK; an ETRN started something.\n"
    )
    # issue 12 item 10: ZMailer's bytes, and nothing deleted
    assert (
        await peer.command("KILL THREAD SMTP example.org ") == b"-Unknown request.\n\n"
    )
    assert (
        await peer.command("KILL THREAD smtp example.org") == b"-Unknown request.\n\n"
    )
    assert await peer.command("KILL MSG nope") == b"-No such message.\n\n"
    assert await peer.command("KILL MSG") == b"-No such message.\n\n"
    assert await peer.command("REQUEUE MSG 100001") == b"-No such message.\n"
    assert await peer.command("REQUEUE ROUTER x y") == (
        b"-MAILQ2 Unknown command, or refused by access control; VERB='REQUEUE' REST='ROUTER x y'\n"
    )
    assert await peer.command("REROUTE MSG 123") == (
        b"-MAILQ2 Unknown command, or refused by access control; VERB='REROUTE' REST='MSG'\n"
    )
    assert (
        await peer.command("SHOW THREAD SMTP Example.Net  ") != b"+OK until LF.LF\n.\n"
    )
    await peer.command("QUIT")
    await peer.close()
    c = queue.counters
    assert c.get("SC.MQ2CommandKillThr") == 0  # as ZMailer: never counted
    assert c.get("SC.MQ2CommandKillMsg") == 0  # as ZMailer: never counted
    assert c.get("SC.MQ2CommandETRN") == 1
    audit = [r.getMessage() for r in caplog.records if r.name == "mailq.audit"]
    assert any("ETRN 'example.net'" in m and "user=admin" in m for m in audit)
    assert any("KILL 'THREAD smtp example.org' result=unknown" in m for m in audit)
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "adminpw" not in text
    assert authenticator(peer.challenge, "adminpw") not in text


@pytest.mark.asyncio
async def test_requeue_needs_kill_right(server: MailqServer) -> None:
    peer = await Peer.open(server.addresses[0])
    await peer.greet()
    await peer.auth("nobody", "nobody")
    assert await peer.command("REQUEUE MSG 100001") == (
        b"-MAILQ2 Unknown command, or refused by access control; VERB='REQUEUE' REST='MSG 100001'\n"
    )
    assert (
        await peer.command("KILL THREAD smtp example.org")
        == b"-No KILL allowed for you.\n"
    )
    await peer.close()


@pytest.mark.asyncio
async def test_requeue_found(authfile: Path, queue: FakeQueue) -> None:
    ops = FakeOps(queue, requeueable={"100001"})
    srv = MailqServer(queue, ops, ServerConfig(authfile=authfile))
    await srv.start(["127.0.0.1:0"])
    peer = await Peer.open(srv.addresses[0])
    await peer.greet()
    await peer.auth()
    assert await peer.command("REQUEUE MSG 100001") == b"+OK; REQUEUEd something.\n"
    assert ops.calls == [("requeue_msg", "100001")]
    await peer.close()
    srv.close()
    await srv.wait_closed()


class ExplodingOps(FakeOps):
    def etrn(self, domain: str) -> int:
        raise RuntimeError("secret internal detail")


@pytest.mark.asyncio
async def test_internal_error_closes_without_leaking(
    authfile: Path, queue: FakeQueue, caplog: pytest.LogCaptureFixture
) -> None:
    srv = MailqServer(queue, ExplodingOps(queue), ServerConfig(authfile=authfile))
    await srv.start(["127.0.0.1:0"])
    peer = await Peer.open(srv.addresses[0])
    await peer.greet()
    await peer.auth()
    peer.writer.write(b"ETRN x\n")
    assert await peer.reader.read() == b""
    assert any(r.exc_info for r in caplog.records if r.name == "mailq.server.shell")
    other = await Peer.open(srv.addresses[0])
    await other.greet()
    assert await other.auth() == b"+OK\n"
    await peer.close()
    await other.close()
    srv.close()
    await srv.wait_closed()


@pytest.mark.asyncio
async def test_graceful_shutdown(authfile: Path, queue: FakeQueue) -> None:
    srv = MailqServer(
        queue, FakeOps(queue), ServerConfig(authfile=authfile, graceful_timeout=2)
    )
    await srv.start(["127.0.0.1:0"])
    forever = asyncio.create_task(srv.serve_forever())
    peer = await Peer.open(srv.addresses[0])
    await peer.greet()
    await peer.auth()
    srv.close()
    assert (
        await asyncio.wait_for(peer.reader.read(), 10)
        == b"-MAILQ2 scheduler shutting down\n"
    )
    await asyncio.wait_for(srv.wait_closed(), 10)
    await asyncio.wait_for(forever, 10)
    srv.close()  # idempotent
    await peer.close()


@pytest.mark.asyncio
async def test_strict_counters_option(authfile: Path, queue: FakeQueue) -> None:
    authfile.write_text("qq:pw:QQ:\n")  # noqa: ASYNC240 - a tiny test file
    srv = MailqServer(
        queue, FakeOps(queue), ServerConfig(authfile=authfile, strict_counters=True)
    )
    await srv.start(["127.0.0.1:0"])
    peer = await Peer.open(srv.addresses[0])
    await peer.greet()
    await peer.auth("qq", "pw")
    assert await peer.command("SHOW COUNTERS") == (
        b"-MAILQ2 Unknown command, or refused by access control; VERB='SHOW' REST='COUNTERS'\n"
    )
    await peer.close()
    srv.close()
    await srv.wait_closed()


@pytest.mark.asyncio
async def test_counters_are_kept(server: MailqServer, queue: FakeQueue) -> None:
    c = queue.counters
    start = {
        k: c.get(k)
        for k in (
            "SC.MQ2Connects",
            "SC.MQ2Commands",
            "SC.MQ2CommandsRej",
            "SC.MQ2CommandAUTH",
            "SC.MQ2CommandQUIT",
            "SC.MQ2CommandShowQueueThreads",
            "SC.MQ2CommandShowQueueThreads2",
            "SC.MQ2AuthRej",
        )
    }
    peer = await Peer.open(server.addresses[0])
    await peer.greet()
    await peer.command("SHOW SNMP")
    await peer.auth(password="bad")
    await peer.auth()
    await peer.command("SHOW QUEUE THREADS")
    await peer.command("SHOW QUEUE THREADS2")
    await peer.command("QUIT")
    await peer.close()
    delta = {k: c.get(k) - v for k, v in start.items()}
    # B6 kept: ZMailer counts SHOW QUEUE THREADS in the THREADS2 counter
    assert delta == {
        "SC.MQ2Connects": 1, "SC.MQ2Commands": 6, "SC.MQ2CommandsRej": 1,
        "SC.MQ2CommandAUTH": 2, "SC.MQ2CommandQUIT": 1, "SC.MQ2AuthRej": 1,
        "SC.MQ2CommandShowQueueThreads": 0, "SC.MQ2CommandShowQueueThreads2": 2,
    }  # fmt: skip


def _has_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.mark.asyncio
@pytest.mark.skipif(not _has_ipv6_loopback(), reason="no ::1")
async def test_ipv6_and_dual_stack(authfile: Path, queue: FakeQueue) -> None:
    srv = MailqServer(queue, FakeOps(queue), ServerConfig(authfile=authfile))
    await srv.start(["[::1]:0", "TCP:0"])
    v6, wildcard = srv.addresses
    assert v6.startswith("[::1]:")
    assert wildcard.startswith("[::]:")
    for address in (v6, "127.0.0.1:" + wildcard.rsplit(":", 1)[1]):
        peer = await Peer.open(address)
        await peer.greet()
        assert await peer.auth() == b"+OK\n"  # v4-mapped peers match [127.0.0.0]/8
        await peer.close()
    srv.close()
    await srv.wait_closed()


@pytest.mark.asyncio
async def test_unix_socket_and_unix_acl_extension(
    tmp_path: Path, queue: FakeQueue
) -> None:
    authfile = tmp_path / "scheduler.auth"
    uid = os.getuid()
    authfile.write_text(
        f"admin:adminpw:ALL:[127.0.0.0]/8 unix:{uid}\nother:pw:ALL:unix:{uid + 1}\n"
    )
    path = tmp_path / "mq.sock"
    with socket.socket(socket.AF_UNIX) as stale:
        stale.bind(str(path))  # a stale socket is replaced (other files are refused)
    srv = MailqServer(
        queue, FakeOps(queue), ServerConfig(authfile=authfile, unix_mode=0o660)
    )
    await srv.start([f"UNIX:{path}"])
    assert oct(path.stat().st_mode & 0o777) == oct(0o660)
    peer = await Peer.open(f"UNIX:{path}")
    await peer.greet()
    assert (
        await peer.auth("other", "pw")
        == b"-BAD USER OR AUTHENTICATOR OR CONTACT ADDRESS\n"
    )
    assert await peer.auth() == b"+OK\n"
    assert (await peer.command("SHOW QUEUE THREADS2")).count(b"\n") == 7
    await peer.close()
    authfile.write_text(
        "admin:adminpw:ALL:[127.0.0.0]/8\n"
    )  # A4: no line for unix peers
    peer = await Peer.open(f"UNIX:{path}")
    assert await peer.reader.read() == b"version zmailer 2.0\n550 NO ACCESS FOR YOU\n"
    await peer.close()
    srv.close()
    await srv.wait_closed()
    assert not path.exists()


@pytest.mark.asyncio
async def test_already_open_socket(authfile: Path, queue: FakeQueue) -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(5)
    srv = MailqServer(queue, FakeOps(queue), ServerConfig(authfile=authfile))
    await srv.start(sockets=[sock])
    peer = await Peer.open(srv.addresses[0])
    assert (await peer.greet()).startswith(b"version zmailer 2.0\n220 ")
    await peer.close()
    srv.close()
    await srv.wait_closed()


@pytest.mark.asyncio
async def test_bind_failure_is_explained(authfile: Path, queue: FakeQueue) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        srv = MailqServer(queue, FakeOps(queue), ServerConfig(authfile=authfile))
        with pytest.raises(ListenError) as info:
            await srv.start([f"127.0.0.1:{port}"])
    message = str(info.value)
    assert f"127.0.0.1:{port}" in message
    assert "-l" in message
    assert "PARAMmailqsock" in message


@pytest.mark.asyncio
async def test_big_dump_to_slow_reader_does_not_block_others(authfile: Path) -> None:
    queue = fakeview.big_queue(threads=2, vertices=2, rcpts=100_000)
    srv = MailqServer(
        queue, FakeOps(queue), ServerConfig(authfile=authfile), clock=lambda: NOW
    )
    await srv.start(["127.0.0.1:0"])
    slow = await Peer.open(srv.addresses[0])
    await slow.greet()
    await slow.auth()
    slow.writer.write(b"SHOW THREAD smtp host0.example\nSHOW QUEUE THREADS2\n")
    first = await slow.reader.readexactly(1000)  # then stop reading for a while
    assert first.startswith(b"+OK until LF.LF\n#smtp/host0.example/0")
    for _ in range(10):
        other = await Peer.open(srv.addresses[0])
        await other.greet()
        assert await other.auth() == b"+OK\n"
        assert (await other.command("SHOW SNMP")).startswith(b"+OK until LF.LF\nKids:")
        await other.close()
    # the scheduler changes state while the dump streams: threads and vertices vanish
    for thread in queue.group_list[0].thread_list:
        thread.vertex_list = []
    queue.group_list[0].thread_list = []
    slow.writer.write(b"QUIT\n")
    data = first + await asyncio.wait_for(slow.reader.read(), 30)
    dump, threads2 = data.split(b"\n.\n", 1)
    assert dump.count(b"\n") == 200_000 + 1  # header, # line, one row per recipient
    assert threads2 == b"+OK until LF.LF\n.\n+Bye bye\n"  # the emptied queue
    await slow.close()
    srv.close()
    await srv.wait_closed()


@pytest.mark.asyncio
async def test_pipelined_session_yields_between_replies(
    server: MailqServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A client that pipelines many small commands does not hold the loop: the
    session yields between replies once its time slice (here 0) is used up."""
    from mailq.server import shell

    monkeypatch.setattr(shell, "FORMAT_SLICE", 0.0)
    order: list[str] = []
    handle = server.service.handle

    def recording(*args: object, **kwargs: object) -> object:
        order.append("reply")
        return handle(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(server.service, "handle", recording)
    peer = await Peer.open(server.addresses[0])
    await peer.greet()
    await peer.auth()
    order.clear()
    stop = False

    async def probe() -> None:
        while not stop:
            order.append("other")
            await asyncio.sleep(0)

    task = asyncio.ensure_future(probe())
    peer.writer.write(b"FOO\n" * 200 + b"QUIT\n")  # one-line replies
    data = await asyncio.wait_for(peer.reader.read(), 30)
    stop = True
    await task
    assert data.count(b"-MAILQ2 Unknown command") == 200
    replies = [i for i, what in enumerate(order) if what == "reply"]
    between = order[replies[0] : replies[-1]]
    assert between.count("other") >= 100  # the loop ran others between the replies
    await peer.close()
