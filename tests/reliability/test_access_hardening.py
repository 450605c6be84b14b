"""Issue 14, access: low-right sessions never lock out users with more rights, one
address cannot take every seat, AUTH guessing is throttled per address, junk cannot
amplify the log, ACL words are exact, the Unix socket's owner/group/mode are settable,
replies are not held back by Nagle. All over real sockets against a real server."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from pathlib import Path

import pytest

from mailq.server.shell import TOO_MANY
from tests.reliability.conftest import (
    ADMIN,
    ADMIN_PASSWORD,
    PASSWORD,
    USER,
    RawClient,
    ServerHandle,
    StartServer,
)

pytestmark = pytest.mark.asyncio

LOW, LOW_PW = "nobody", "nobody"
RIGHTS_AUTH = (
    f"{LOW}:{LOW_PW}:SNMP:\n"  # ZMailer's shipped file: nobody may connect from anywhere
    f"{USER}:{PASSWORD}:SNMP QQ TT ETRN:[127.0.0.0]/8\n"
    f"{ADMIN}:{ADMIN_PASSWORD}:ALL:[127.0.0.0]/8\n"
)


async def connect_from(h: ServerHandle, source: str) -> RawClient:
    reader, writer = await asyncio.open_connection(
        h.host, h.port, local_addr=(source, 0)
    )
    client = RawClient(reader, writer)
    h.clients.append(client)
    return client


async def try_login(
    h: ServerHandle, user: str, password: str, source: str = "127.0.0.1"
) -> bytes:
    """The AUTH reply ("" if the connection was closed before or instead)."""
    client = await connect_from(h, source)
    try:
        if not (await client.greet()).startswith(b"version"):
            return b""
        return await client.auth(user, password)
    except (ConnectionError, asyncio.IncompleteReadError):
        return b""


async def logged_in(h: ServerHandle, user: str, pw: str, source: str) -> RawClient:
    client = await connect_from(h, source)
    await client.greet()
    assert await client.auth(user, pw) == b"+OK\n"
    return client


async def still_served(client: RawClient) -> bool:
    """Whether the session answers a command (a closed one gives EOF or a reset)."""
    try:
        return (await client.command(b"SHOW SNMP")).startswith(b"+OK")
    except (ConnectionError, asyncio.IncompleteReadError):
        return False


async def wait_for(predicate: object, what: str, limit: float = 20.0) -> None:
    deadline = time.monotonic() + limit
    while not predicate():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


# ---------------------------------------------------------------- 1. lockout


async def test_low_right_sessions_never_lock_out_an_admin(
    mq_server: StartServer,
) -> None:
    h = await mq_server(auth=RIGHTS_AUTH, max_sessions=5, max_per_peer=0)
    holders = [await logged_in(h, LOW, LOW_PW, "127.0.0.2") for _ in range(6)]
    # every normal seat is taken by 'nobody'; one more 'nobody' is not seated
    assert await try_login(h, LOW, LOW_PW, "127.0.0.2") == TOO_MANY.encode() + b"\n"
    admitted = 0
    for _ in range(5):
        if await try_login(h, ADMIN, ADMIN_PASSWORD) == b"+OK\n":
            admitted += 1
    assert admitted == 5  # ZMailer (and we, before): 0 of 5
    served = [await still_served(holder) for holder in holders]
    assert served.count(False) == 5  # one 'nobody' made room for each admin
    # the last 'nobody' goes too; then an admin does not displace another admin
    assert await try_login(h, ADMIN, ADMIN_PASSWORD) == b"+OK\n"
    assert await try_login(h, ADMIN, ADMIN_PASSWORD) == TOO_MANY.encode() + b"\n"


async def test_one_address_cannot_take_every_seat(mq_server: StartServer) -> None:
    h = await mq_server(auth=RIGHTS_AUTH, max_sessions=20, max_per_peer=3)
    mine = [await logged_in(h, USER, PASSWORD, "127.0.0.3") for _ in range(3)]
    assert await try_login(h, USER, PASSWORD, "127.0.0.3") == TOO_MANY.encode() + b"\n"
    # other addresses are not affected by that address's cap
    assert await try_login(h, USER, PASSWORD, "127.0.0.4") == b"+OK\n"
    # more rights from the same address displace one of its sessions
    assert await try_login(h, ADMIN, ADMIN_PASSWORD, "127.0.0.3") == b"+OK\n"
    served = [await still_served(c) for c in mine]
    assert served.count(False) == 1


# ---------------------------------------------------------------- 2. brute force


async def test_auth_failures_of_one_address_slow_its_auths(
    mq_server: StartServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    h = await mq_server(
        max_auth_failures=3, auth_free_failures=3, auth_delay=0.4, auth_max_delay=0.8
    )
    for _ in range(3):  # the free budget: answered at once
        assert await try_login(h, USER, "wrong") == b"-BAD USER OR PASSWORD\n"
    started = time.monotonic()
    for _ in range(4):  # turns 0, 0.4, 0.8, 0.8 s apart (a lower bound only)
        assert await try_login(h, USER, "wrong") == b"-BAD USER OR PASSWORD\n"
    assert time.monotonic() - started >= 1.5
    # parallel connections wait too (each up to auth_max_delay)
    started = time.monotonic()
    replies = await asyncio.gather(*(try_login(h, USER, "wrong") for _ in range(4)))
    assert replies == [b"-BAD USER OR PASSWORD\n"] * 4
    assert time.monotonic() - started >= 0.7
    # the right password still works (after its turn)
    assert await try_login(h, USER, PASSWORD) == b"+OK\n"
    throttle_lines = [r for r in caplog.records if "AUTH throttle for" in r.message]
    assert len(throttle_lines) == 1  # once per burst, not per try
    assert h.server.throttle.failures("127.0.0.1") == 11


# ---------------------------------------------------------------- 3. log amplification


class _Bytes(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.bytes = 0
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        text = self.format(record)
        self.bytes += len(text) + 1
        self.lines.append(text)


async def test_junk_before_auth_does_not_amplify_the_log(
    mq_server: StartServer,
) -> None:
    counter = _Bytes()
    root = logging.getLogger("mailq")
    old_level = root.level
    root.setLevel(logging.INFO)
    root.addHandler(counter)
    try:
        h = await mq_server(log_burst=20, log_rate=1.0)
        junk = b"".join(b"JUNK%06d x\n" % i for i in range(80_000))  # ~1 MB
        client = await h.connect()
        await client.greet()
        await client.send(junk)
        await client.send(b"QUIT\n")
        await client.read_to_eof(limit=60)
        await client.close()
        await wait_for(lambda: h.server.session_count == 0, "the session to end")
    finally:
        root.removeHandler(counter)
        root.setLevel(old_level)
    assert counter.bytes < len(junk) // 100  # was 40 bytes of log per junk byte
    assert any("suppressed (rate limit)" in line for line in counter.lines)


# ---------------------------------------------------------------- 4. ACL words


@pytest.mark.parametrize(
    "acl", ["[127.0.0.1] # unix admins", "[127.0.0.1] xunix", "[127.0.0.1] unixes"]
)
async def test_unix_only_as_a_whole_acl_word(
    mq_server: StartServer, tmp_path: Path, acl: str
) -> None:
    path = tmp_path / "mq.sock"
    h = await mq_server(
        auth=f"{ADMIN}:{ADMIN_PASSWORD}:ALL:{acl}\n", spec=f"UNIX:{path}"
    )
    client = await h.connect()
    greeting = await client.greet()
    assert greeting.startswith(b"version zmailer 2.0\n")
    assert b"NO ACCESS" in greeting
    ok = await mq_server(
        auth=f"{ADMIN}:{ADMIN_PASSWORD}:ALL:[127.0.0.1] unix # others\n",
        spec=f"UNIX:{tmp_path / 'ok.sock'}",
    )
    await ok.login(ADMIN, ADMIN_PASSWORD)


# ---------------------------------------------------------------- 5. Unix socket


@pytest.mark.skipif(os.geteuid() != 0, reason="chown to another group needs root")
async def test_unix_socket_owner_group_and_mode(
    mq_server: StartServer, tmp_path: Path
) -> None:
    path = tmp_path / "mq.sock"
    await mq_server(
        spec=f"UNIX:{path}", unix_owner=4321, unix_group=1234, unix_mode=0o660
    )
    st = path.stat()
    assert (st.st_uid, st.st_gid, st.st_mode & 0o7777) == (4321, 1234, 0o660)


# ---------------------------------------------------------------- 14. Nagle


async def test_tcp_nodelay_on_accepted_sockets(mq_server: StartServer) -> None:
    h = await mq_server()
    await h.login()
    (session,) = h.server._sessions  # white-box: the option is on the server's socket
    sock = session.writer.get_extra_info("socket")
    assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0


async def test_tcp_nodelay_on_the_client_socket(mq_server: StartServer) -> None:
    from mailq.client.library import MailqClient

    h = await mq_server()
    client = MailqClient(timeout=20)
    await client.connect(h.host, h.port)
    sock = client._writer.get_extra_info("socket") if client._writer else None
    assert sock is not None
    assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
    await client.close()
