"""Shared pieces of the reliability suite: a real MAILQ v2 server on 127.0.0.1 port 0
over a (possibly huge) fake queue, and a raw socket client that speaks the protocol
byte by byte, so hostile behaviour can be scripted exactly."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Awaitable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import pytest_asyncio

from mailq.protocol.auth import authenticator
from mailq.server.shell import MailqServer, ServerConfig
from tests.mailq.server.fakeview import (
    FakeCounters,
    FakeGroup,
    FakeOps,
    FakeQueue,
    FakeThread,
    FakeVertex,
)

USER = "watcher"
PASSWORD = "s3cret-Pa55word"
ADMIN = "root"
ADMIN_PASSWORD = "r00t-Pa55word"
NOW = 1_795_312_216
AUTH_TEXT = (
    f"{USER}:{PASSWORD}:SNMP QQ TT ETRN:[127.0.0.0]/8 [IPv6:::1]\n"
    f"{ADMIN}:{ADMIN_PASSWORD}:ALL:[127.0.0.1] [IPv6:::1]\n"
)


def _vertex(n: int) -> FakeVertex:
    return FakeVertex(
        path=f"A/B/{100000 + n}",
        sender=f"sender{n}@example.org",
        offsets=[100, 200, 300],
        expiry=NOW + 86400,
        message="smtp; 450 4.2.0 try later " + "x" * 60,
        mtime=NOW - 600,
        spoolid=f"S{100000 + n}AbmKVBkC35DCm",
    )


FAT_HOST = "fat.example.net"


def big_queue(threads: int = 2000, vertices: int = 3, fat: int = 0) -> FakeQueue:
    """A queue of ``threads`` small threads plus, if ``fat``, one thread
    ``smtp fat.example.net`` whose ``SHOW THREAD`` dump is ``fat`` vertices long
    (about 500 bytes each)."""
    thread_list = []
    n = 0
    for t in range(threads):
        vlist = [_vertex(n + v) for v in range(vertices)]
        n += vertices
        thread_list.append(
            FakeThread("smtp", f"host{t}.example.net", NOW + 300, vertex_list=vlist)
        )
    if fat:
        vlist = [_vertex(n + v) for v in range(fat)]
        thread_list.append(FakeThread("smtp", FAT_HOST, NOW + 300, vertex_list=vlist))
    group = FakeGroup("smtp", thread_list=thread_list)
    counters = FakeCounters()
    counters.values = dict.fromkeys(counters.values, 0)  # start from zero
    return FakeQueue([group], counters, NOW - 100)


@dataclass
class ServerHandle:
    server: MailqServer
    queue: FakeQueue
    ops: FakeOps
    host: str
    port: int
    authfile: Path
    clients: list[RawClient] = field(default_factory=list)

    async def connect(self) -> RawClient:
        if self.port == 0:
            reader, writer = await asyncio.open_unix_connection(self.host)
        else:
            reader, writer = await asyncio.open_connection(self.host, self.port)
        client = RawClient(reader, writer)
        self.clients.append(client)
        return client

    async def login(self, user: str = USER, password: str = PASSWORD) -> RawClient:
        client = await self.connect()
        await client.greet()
        reply = await client.auth(user, password)
        assert reply == b"+OK\n", reply
        return client


@dataclass
class RawClient:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    challenge: str = ""

    async def greet(self) -> bytes:
        version = await asyncio.wait_for(self.reader.readline(), 10)
        second = await asyncio.wait_for(self.reader.readline(), 10)
        self.challenge = second.decode().rstrip("\n")
        return version + second

    async def auth(self, user: str, password: str) -> bytes:
        digest = authenticator(self.challenge, password)
        return await self.command(f"AUTH {user} {digest}".encode())

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def line(self) -> bytes:
        return await asyncio.wait_for(self.reader.readline(), 10)

    async def command(self, line: bytes) -> bytes:
        await self.send(line + b"\n")
        return await self.reply(kill=line.startswith(b"KILL"))

    async def reply(self, *, kill: bool = False) -> bytes:
        """One reply: a status line, or a whole ``+OK until LF.LF`` body."""
        first = await self.line()
        if first != b"+OK until LF.LF\n":
            if kill and first.startswith((b"+OK; KILL", b"-Unknown", b"-No such")):
                first += await self.line()  # B2: the extra empty line
            return first
        out = [first]
        while True:
            body = await self.line()
            out.append(body)
            if body in (b".\n", b""):
                return b"".join(out)

    async def read_to_eof(self, limit: float = 10) -> bytes:
        return await asyncio.wait_for(self.reader.read(), limit)

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError, OSError):
            await self.writer.wait_closed()


class StartServer(Protocol):
    """``await mq_server(queue=None, auth=AUTH_TEXT, spec="127.0.0.1:0", **config)``."""

    def __call__(
        self,
        queue: FakeQueue | None = None,
        auth: str = AUTH_TEXT,
        spec: str | None = "127.0.0.1:0",
        sockets: Sequence[socket.socket] = (),
        **config: object,
    ) -> Awaitable[ServerHandle]: ...


@pytest_asyncio.fixture
async def mq_server(tmp_path: Path) -> AsyncIterator[StartServer]:
    """Start real servers on port 0; all are closed (and checked) at teardown."""
    handles: list[ServerHandle] = []

    async def start(
        queue: FakeQueue | None = None,
        auth: str = AUTH_TEXT,
        spec: str | None = "127.0.0.1:0",
        sockets: Sequence[socket.socket] = (),
        **config: object,
    ) -> ServerHandle:
        authfile = tmp_path / f"scheduler{len(handles)}.auth"
        authfile.write_text(auth)
        authfile.chmod(0o600)
        q = queue if queue is not None else big_queue(20, 2)
        ops = FakeOps(q)
        cfg = ServerConfig.from_mapping({"authfile": authfile, **config})
        server = MailqServer(q, ops, cfg, clock=lambda: float(NOW))
        await server.start([spec] if spec else [], sockets)
        address = server.addresses[0]
        if address.startswith("UNIX:"):
            host, port = address[5:], "0"
        else:
            host, _, port = address.rpartition(":")
            if host.startswith("[::ffff:"):
                host = host[8:]  # a v4-mapped listener: connect over IPv4
        handle = ServerHandle(server, q, ops, host.strip("[]"), int(port), authfile)
        handles.append(handle)
        return handle

    yield start
    for handle in handles:
        for client in handle.clients:
            await client.close()
        handle.server.close()
        await handle.server.wait_closed()
        assert handle.server.session_count == 0
