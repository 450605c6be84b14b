"""Hostile clients against a real MAILQ v2 server on 127.0.0.1 port 0.

Connection floods beyond the session limit, slow-loris readers and writers, over-long
lines, binary garbage, NUL bytes, invalid UTF-8 and AUTH brute force. In every case a
legitimate client is still served, and what the server holds for an abuser stays
bounded (its write buffer, the bytes it accepts before closing). Latency figures are
in ``bench/flood_mq2.py``; these tests only assert behaviour.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket

import pytest

from mailq.server.shell import MailqServer
from tests.reliability.conftest import (
    FAT_HOST,
    PASSWORD,
    USER,
    RawClient,
    ServerHandle,
    StartServer,
    big_queue,
)

pytestmark = pytest.mark.asyncio

SNMP_REPLY_START = b"+OK until LF.LF\nKids:"


async def wait_for(predicate: object, what: str, limit: float = 15.0) -> None:
    """Poll ``predicate()`` until true (a bounded wait, not a timing assertion)."""
    assert callable(predicate)
    loop = asyncio.get_running_loop()
    end = loop.time() + limit
    while not predicate():
        if loop.time() > end:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


async def legit_round(handle: ServerHandle) -> None:
    """A well-behaved client: greeting, AUTH, SHOW SNMP, QUIT, all answered."""
    client = await handle.login()
    reply = await client.command(b"SHOW SNMP")
    assert reply.startswith(SNMP_REPLY_START), reply
    assert await client.command(b"QUIT") == b"+Bye bye\n"
    assert await client.read_to_eof() == b""
    await client.close()


async def outcome(handle: ServerHandle) -> tuple[RawClient, bytes]:
    """Connect and read what the server says first: the greeting, or b"" (refused)."""
    client = await handle.connect()
    try:
        first = await asyncio.wait_for(client.reader.readline(), 10)
    except ConnectionError:
        first = b""
    return client, first


def write_buffers(server: MailqServer) -> list[int]:
    """Bytes queued in each session's transport (white-box: the session registry)."""
    return [
        s.writer.transport.get_write_buffer_size()
        for s in server._sessions  # white-box: the registry is what we measure
    ]


# ---------------------------------------------------------------- connection floods


async def test_flood_beyond_session_limit_is_refused_silently(
    mq_server: StartServer,
) -> None:
    handle = await mq_server(max_sessions=5, reserved_sessions=0)
    results = await asyncio.gather(*(outcome(handle) for _ in range(40)))
    greeted = [c for c, first in results if first == b"version zmailer 2.0\n"]
    refused = [c for c, first in results if first == b""]
    # B11 keep: "more than max_sessions open" refuses, so max_sessions + 1 are served;
    # the others are closed without a single byte.
    assert len(greeted) == 6
    assert len(refused) == 34
    assert handle.server.session_count == 6
    counters = handle.queue.counters
    assert counters.get("SC.MQ2Connects") == 40
    # While the flood holds every slot, a newcomer is refused too (documented DoS
    # surface of the ZMailer limit; see docs/reliability.md).
    _, first = await outcome(handle)
    assert first == b""
    # One flood connection goes away: the legitimate client gets in at once.
    await greeted.pop().close()
    await wait_for(lambda: handle.server.session_count <= 5, "a free slot")
    await legit_round(handle)
    for client in greeted:
        await client.close()
    await wait_for(lambda: handle.server.session_count == 0, "sessions to end")


async def test_connect_close_churn_does_not_starve_a_legit_client(
    mq_server: StartServer,
) -> None:
    handle = await mq_server(auth_free_failures=10**6)  # churn, not brute force
    stop = asyncio.Event()
    churned = 0

    async def churn() -> None:
        nonlocal churned
        while not stop.is_set():
            _, writer = await asyncio.open_connection(handle.host, handle.port)
            writer.write(b"AUTH x y\nGARBAGE\n")  # abandon it mid-conversation
            writer.transport.abort()
            churned += 1
            await asyncio.sleep(0)

    churners = [asyncio.create_task(churn()) for _ in range(8)]
    try:
        for _ in range(10):
            await legit_round(handle)
    finally:
        stop.set()
        await asyncio.gather(*churners)
    assert churned > 10
    await wait_for(lambda: handle.server.session_count == 0, "sessions to end")
    assert handle.queue.counters.get("SC.MQ2Connects") >= churned + 10


# ---------------------------------------------------------------- slow loris


def _loris_socket(handle: ServerHandle) -> socket.socket:
    """A blocking socket with a tiny receive buffer that logs in and then stops reading."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    sock.connect((handle.host, handle.port))
    return sock


async def _loris_login(sock: socket.socket) -> None:
    from mailq.protocol.auth import authenticator

    loop = asyncio.get_running_loop()
    sock.setblocking(False)
    data = b""
    while data.count(b"\n") < 2:
        data += await loop.sock_recv(sock, 4096)
    challenge = data.split(b"\n")[1].decode()
    digest = authenticator(challenge, PASSWORD)
    await loop.sock_sendall(sock, f"AUTH {USER} {digest}\n".encode())
    reply = b""
    while not reply.endswith(b"\n"):
        reply += await loop.sock_recv(sock, 4096)
    assert reply == b"+OK\n"


async def test_slow_loris_reader_of_a_big_dump_is_bounded(
    mq_server: StartServer,
) -> None:
    handle = await mq_server(queue=big_queue(5, 2, fat=20000))
    loris = [_loris_socket(handle) for _ in range(3)]
    try:
        for sock in loris:
            await _loris_login(sock)
            # ~10 MB of report, asked for twice, never read.
            cmd = f"SHOW THREAD smtp {FAT_HOST}\n".encode() * 2
            await asyncio.get_running_loop().sock_sendall(sock, cmd)
        await wait_for(
            lambda: sum(write_buffers(handle.server)) > 0, "the dump to back up"
        )
        await asyncio.sleep(0.3)  # let the server push as far as it can
        buffers = write_buffers(handle.server)
        # Streaming with drain(): the server holds about one chunk per loris, never
        # the whole dump.
        assert max(buffers) < 512 * 1024, buffers
        # Meanwhile legitimate clients are served, including a full big dump.
        for _ in range(3):
            await legit_round(handle)
        client = await handle.login()
        dump = await client.command(f"SHOW THREAD smtp {FAT_HOST}".encode())
        assert len(dump) > 9_000_000
        assert dump.endswith(b"\n.\n")
        await client.close()
    finally:
        for sock in loris:
            sock.close()
    await wait_for(lambda: handle.server.session_count == 0, "loris sessions to end")


async def test_slow_loris_reader_is_cut_at_the_lifetime(
    mq_server: StartServer,
) -> None:
    handle = await mq_server(queue=big_queue(5, 2, fat=20000), lifetime=1.5)
    sock = _loris_socket(handle)
    try:
        await _loris_login(sock)
        await asyncio.get_running_loop().sock_sendall(
            sock, f"SHOW THREAD smtp {FAT_HOST}\n".encode()
        )
        await wait_for(lambda: handle.server.session_count == 0, "the deadline")
    finally:
        sock.close()
    assert handle.queue.counters.get("SC.MQ2TimedOut") == 1


async def test_slow_writer_one_byte_per_100ms(mq_server: StartServer) -> None:
    handle = await mq_server()
    slow = await handle.login()
    done = asyncio.Event()

    async def dribble() -> bytes:
        for byte in b"SHOW SNMP\n":
            await slow.send(bytes([byte]))
            await asyncio.sleep(0.1)
        done.set()
        return await slow.reply()

    task = asyncio.create_task(dribble())
    served = 0
    while not done.is_set():
        await legit_round(handle)
        served += 1
    reply = await task
    assert reply.startswith(SNMP_REPLY_START)
    assert served >= 1


async def test_dribbling_writer_without_newline_is_cut_at_the_lifetime(
    mq_server: StartServer,
) -> None:
    handle = await mq_server(lifetime=1.0)
    client = await handle.connect()
    await client.greet()
    received = b""
    with contextlib.suppress(ConnectionError):
        for _ in range(100):
            client.writer.write(b"A")
            await client.writer.drain()
            with contextlib.suppress(TimeoutError):
                received += await asyncio.wait_for(client.reader.read(100), 0.1)
            if client.reader.at_eof():
                break
    assert client.reader.at_eof()
    assert received == b""  # closed silently at the deadline
    assert handle.queue.counters.get("SC.MQ2TimedOut") == 1


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize("authenticated", [False, True])
async def test_over_long_line_closes_and_memory_stays_bounded(
    mq_server: StartServer, authenticated: bool, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, "mailq.server.shell")
    handle = await mq_server()
    client = await (handle.login() if authenticated else handle.connect())
    if not authenticated:
        await client.greet()
    chunk = b"A" * 65536
    accepted = 0
    limit = 64 * 1024 * 1024
    with contextlib.suppress(ConnectionError, TimeoutError):
        while accepted < limit:
            client.writer.write(chunk)
            await asyncio.wait_for(client.writer.drain(), 5)
            accepted += len(chunk)
    # The server closed the session long before 64 MiB were taken (it reads at most
    # max_line + one read before giving up; the rest is kernel buffering).
    assert accepted < limit
    with contextlib.suppress(ConnectionError):
        assert await client.read_to_eof() == b""
    assert any("line longer than 16384 bytes" in r.getMessage() for r in caplog.records)
    await wait_for(lambda: handle.server.session_count == 0, "the session to end")
    await legit_round(handle)


async def test_line_length_boundary(mq_server: StartServer) -> None:
    handle = await mq_server(max_line=1024)
    client = await handle.login()
    ok_line = b"X" * 1024  # exactly max_line bytes: still a line
    reply = await client.command(ok_line)
    assert reply.startswith(b"-MAILQ2 Unknown command")
    await client.send(b"Y" * 1025 + b"\n")
    assert await client.read_to_eof() == b""


async def test_garbage_nul_and_invalid_utf8(mq_server: StartServer) -> None:
    handle = await mq_server()
    client = await handle.connect()
    await client.greet()
    # Before AUTH: every line, whatever its bytes, is refused the same way.
    for junk in (b"\x00\x01\x02\xff\xfe", b"\xc3\x28\xa0\xa1", b"\r\r\r", b"\x1b[2J"):
        assert await client.command(junk) == b"-BAD; USER MUST AUTHENTICATE\n"
    assert await client.auth(USER, PASSWORD) == b"+OK\n"
    # After AUTH: the unknown reply echoes the bytes back unchanged (B8 keep)...
    reply = await client.command(b"\xff\xfeVERB \xc3\x28 rest")
    assert reply == (
        b"-MAILQ2 Unknown command, or refused by access control; "
        b"VERB='\xff\xfeVERB' REST='\xc3\x28 rest'\n"
    )
    # ...a NUL truncates the line (MQ2-REF 5.1), CRs anywhere vanish.
    assert (await client.command(b"SHOW SN\rMP\x00 trailing junk")).startswith(
        SNMP_REPLY_START
    )
    # An LF hidden in the echo cannot end a reply early: it is the line end.
    assert (await client.command(b"\x00\x00\x00")).startswith(b"-MAILQ2 Unknown")
    assert await client.command(b"QUIT") == b"+Bye bye\n"
    assert handle.ops.calls == []


async def test_pipelined_flood_without_reading_is_bounded(
    mq_server: StartServer,
) -> None:
    """A million pipelined commands, replies never read: the server stops reading
    input while its output is blocked, so neither side's buffer grows without bound."""
    handle = await mq_server(queue=big_queue(200, 2))
    sock = _loris_socket(handle)
    try:
        await _loris_login(sock)
        loop = asyncio.get_running_loop()
        payload = b"SHOW QUEUE THREADS\n" * 1_000_000
        sender = loop.create_task(loop.sock_sendall(sock, payload))
        await wait_for(
            lambda: sum(write_buffers(handle.server)) > 0, "the output to back up"
        )
        await asyncio.sleep(0.3)
        assert max(write_buffers(handle.server)) < 512 * 1024
        assert not sender.done()  # back-pressure reached the sender
        await legit_round(handle)
        sender.cancel()
        with contextlib.suppress(asyncio.CancelledError, OSError):
            await sender
    finally:
        sock.close()
    await wait_for(lambda: handle.server.session_count == 0, "the session to end")


# ---------------------------------------------------------------- AUTH brute force


async def test_auth_brute_force_is_limited_per_session(
    mq_server: StartServer,
) -> None:
    handle = await mq_server(max_auth_failures=3, auth_free_failures=10**6)
    tried = 0
    for _ in range(5):  # five sessions of guessing
        client = await handle.connect()
        await client.greet()
        replies = []
        for guess in range(10):
            with contextlib.suppress(ConnectionError):
                await client.send(f"AUTH {USER} {guess:032x}\n".encode())
            line = await client.line()
            if not line:
                break
            replies.append(line)
            tried += 1
        assert replies == [b"-BAD USER OR PASSWORD\n"] * 3
        assert client.reader.at_eof()
        await client.close()
    assert tried == 15
    assert handle.queue.counters.get("SC.MQ2AuthRej") == 15
    # Unknown users burn the same budget.
    client = await handle.connect()
    await client.greet()
    await client.send(b"AUTH nobody 0\n" * 5 + b"SHOW SNMP\n")
    data = await client.read_to_eof()
    assert data == b"-BAD USER OR AUTHENTICATOR OR CONTACT ADDRESS\n" * 3
    await legit_round(handle)


async def test_right_password_within_the_budget_is_accepted(
    mq_server: StartServer,
) -> None:
    handle = await mq_server(max_auth_failures=3)
    client = await handle.connect()
    await client.greet()
    assert await client.auth(USER, "wrong") == b"-BAD USER OR PASSWORD\n"
    assert await client.auth(USER, "wrong2") == b"-BAD USER OR PASSWORD\n"
    assert await client.auth(USER, PASSWORD) == b"+OK\n"
    assert (await client.command(b"SHOW SNMP")).startswith(SNMP_REPLY_START)
