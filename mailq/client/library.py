"""The MAILQ v2 client library: :class:`MailqClient` (asyncio) and a blocking wrapper.

A thin shell over :class:`mailq.client.proto.ClientConnection`: it resolves and connects
(stopping at the first address that answers, C1 fixed), reads the greeting, sends
commands and returns typed results from :mod:`mailq.client.parse`.

    async with MailqClient() as mq:
        await mq.connect("127.0.0.1", 174)
        await mq.auth("nobody", "nobody")
        snmp = await mq.show_snmp()

Errors: :mod:`mailq.client.errors` (``ConnectError``, ``AuthError``/``AccessDenied``,
``ProtocolError``, ``CommandRefused``).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import os
import socket
from collections.abc import Callable
from types import TracebackType
from typing import Any, TypeVar

from mailq.client.errors import (
    AccessDenied,
    AuthError,
    CommandRefused,
    ConnectError,
    ProtocolError,
)
from mailq.client.parse import (
    QueueShort,
    Snmp,
    ThreadDetail,
    ThreadLine,
    parse_counters,
    parse_queue_short,
    parse_snmp,
    parse_thread_body,
    parse_threads2,
)
from mailq.client.proto import (
    NEED_DATA,
    AccessRefused,
    Body,
    ClientConnection,
    Closed,
    Event,
    Greeting,
    Reply,
)

__all__ = ["DEFAULT_PORT", "BlockingMailqClient", "MailqClient", "resolve_port"]

log = logging.getLogger(__name__)

DEFAULT_PORT = 174
UNIX_HOST_LABEL = "<NO-HOST-?>"
_T = TypeVar("_T")


def resolve_port(spec: str | None) -> int | str:
    """``-p``: digits = TCP port, ``/path`` = Unix socket, else a service name (C2 fixed).

    No spec: the ``mailq`` tcp service, else 174. Raises ``ValueError`` for an unknown
    service name.
    """
    if spec is None or spec == "":
        try:
            return socket.getservbyname("mailq", "tcp")
        except OSError:
            return DEFAULT_PORT
    if spec.startswith("/"):
        return spec
    if spec.isdigit():
        return int(spec)
    try:
        return socket.getservbyname(spec, "tcp")
    except OSError:
        raise ValueError(f"unknown tcp service {spec!r}") from None


def order_addresses(infos: list[tuple[Any, ...]], family: int) -> list[tuple[Any, ...]]:
    """The preferred family first, keeping the resolver's order otherwise."""
    first = [i for i in infos if i[0] == family]
    return first + [i for i in infos if i[0] != family]


class MailqClient:
    """One MAILQ v2 session. Not safe for concurrent commands (the protocol is serial)."""

    def __init__(
        self,
        *,
        timeout: float | None = 60.0,
        line_observer: Callable[[str], None] | None = None,
        on_connect_failed: Callable[[str, str], None] | None = None,
    ) -> None:
        self.timeout = timeout
        self.label = ""
        self.greeting: Greeting | None = None
        self._observer = line_observer
        self._on_connect_failed = on_connect_failed
        self._conn = ClientConnection(line_observer=line_observer)
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._local = False

    # -- connection --------------------------------------------------------------------
    async def connect(
        self,
        host: str = "127.0.0.1",
        port: int | str = DEFAULT_PORT,
        *,
        family: int = socket.AF_INET6,
    ) -> Greeting:
        """Connect to ``host:port`` (or the Unix socket ``port`` = ``/path``), read the greeting.

        ``family`` is tried first when the host has both IPv4 and IPv6 addresses
        (ZMailer's ``-4``/``-6``); the first address that connects is used.
        ``on_connect_failed(name, reason)`` is called for each address that fails.
        """
        if isinstance(port, str):
            self.label = UNIX_HOST_LABEL
            try:
                self._reader, self._writer = await asyncio.open_unix_connection(port)
            except OSError as exc:
                raise ConnectError(
                    f"path: '{port}'", exc.strerror or str(exc)
                ) from None
        else:
            self.label = host
            self._reader, self._writer = await self._open_tcp(host, port, family)
        self._local = self._check_local()
        return await self._read_greeting()

    async def _open_tcp(
        self, host: str, port: int, family: int
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        loop = asyncio.get_running_loop()
        try:
            infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except socket.gaierror as exc:
            raise ConnectError(host, str(exc), unknown_host=True) from None
        reason = "no address"
        for info in order_addresses(list(infos), family):
            fam, kind, proto, _, addr = info
            sock = socket.socket(fam, kind, proto)
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # pipelining
                sock.setblocking(False)
                await self._within(loop.sock_connect(sock, addr))
                return await asyncio.open_connection(sock=sock)
            except (OSError, TimeoutError) as exc:
                sock.close()
                errno = getattr(exc, "errno", None)
                reason = os.strerror(errno) if errno else (str(exc) or "timed out")
                log.debug("connect to %s failed: %s", addr, reason)
                if self._on_connect_failed is not None:
                    self._on_connect_failed(host, reason)
        raise ConnectError(host, reason)

    @property
    def is_local(self) -> bool:
        """Whether the server runs on this machine (known once connected; C10)."""
        return self._local

    def _check_local(self) -> bool:
        """A Unix socket, a loopback peer, or a peer address equal to our own end's."""
        if self._writer is None:
            return False
        if self.label == UNIX_HOST_LABEL:
            return True
        peer = self._writer.get_extra_info("peername")
        mine = self._writer.get_extra_info("sockname")
        if not peer:
            return False
        try:
            address = ipaddress.ip_address(str(peer[0]).split("%")[0])
        except ValueError:
            return False
        mapped = getattr(address, "ipv4_mapped", None)
        if address.is_loopback or (mapped is not None and mapped.is_loopback):
            return True
        return bool(mine) and str(mine[0]) == str(peer[0])

    async def _read_greeting(self) -> Greeting:
        event = await self._next_event()
        if isinstance(event, AccessRefused):
            await self.close()
            raise AccessDenied(self.label, event.line)
        if not isinstance(event, Greeting):
            raise ProtocolError("unexpected greeting", repr(event))
        self.greeting = event
        return event

    async def auth(self, user: str = "nobody", password: str = "nobody") -> None:
        """``AUTH``; raises :class:`AuthError` with the reply text on refusal."""
        reply = await self._request_line(self._conn.auth(user, password))
        if not reply.ok:
            raise AuthError(user, self.label, reply.text)

    # -- commands -------------------------------------------------------------------
    async def show_queue_threads2(self) -> list[ThreadLine]:
        return parse_threads2(await self.show_body("SHOW QUEUE THREADS2"))

    async def show_queue_threads(self) -> list[str]:
        return await self.show_body("SHOW QUEUE THREADS")

    async def show_queue_short(self) -> QueueShort:
        return parse_queue_short(await self.show_body("SHOW QUEUE SHORT"))

    async def show_snmp(self) -> Snmp:
        return parse_snmp(await self.show_body("SHOW SNMP"))

    async def show_counters(self) -> dict[str, int | float]:
        return parse_counters(await self.show_body("SHOW COUNTERS"))

    async def show_thread(self, channel: str, host: str) -> ThreadDetail:
        lines = await self.show_body(f"SHOW THREAD {channel} {host}")
        return parse_thread_body(channel, host, lines)

    async def etrn(self, domain: str) -> Reply:
        """``ETRN domain``; returns the reply line, ``+`` or ``-`` (never raises on ``-``)."""
        return await self.command(f"ETRN {domain}")

    async def kill_msg(self, ident: str) -> Reply:
        return await self.command(f"KILL MSG {ident}")

    async def kill_thread(self, channel: str, host: str) -> Reply:
        return await self.command(f"KILL THREAD {channel} {host}")

    async def requeue_msg(self, ident: str) -> Reply:
        return await self.command(f"REQUEUE MSG {ident}")

    async def show_body(self, command: str) -> list[str]:
        """Send a command that answers with a body; ``-`` -> :class:`CommandRefused`."""
        event = await self._request(self._conn.command(command))
        if isinstance(event, Body):
            return list(event.lines)
        if isinstance(event, Reply) and not event.ok:
            raise CommandRefused(command, event.line)
        raise ProtocolError(f"unexpected reply to {command}", repr(event))

    async def command(self, command: str) -> Reply:
        """Send a command that answers with one status line."""
        return await self._request_line(self._conn.command(command))

    async def quit(self) -> None:
        """Send ``QUIT``, read ``+Bye bye`` if it comes, and close."""
        if self._writer is None:
            return
        try:
            await self._send(self._conn.command("QUIT"))
            await self._next_event()
        except (OSError, ProtocolError, TimeoutError):
            pass
        await self.close()

    async def close(self) -> None:
        writer, self._writer = self._writer, None
        if writer is None:
            return
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()

    async def __aenter__(self) -> MailqClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc is None and self._writer is not None and self.greeting is not None:
            await self.quit()
        else:
            await self.close()

    # -- plumbing -------------------------------------------------------------------
    async def _within(self, aw: Any) -> Any:
        async with asyncio.timeout(self.timeout):
            return await aw

    async def _send(self, data: bytes) -> None:
        if self._writer is None:
            raise ProtocolError("not connected")
        self._writer.write(data)
        await self._within(self._writer.drain())

    async def _request(self, data: bytes) -> Event:
        try:
            await self._send(data)
        except OSError as exc:
            raise ProtocolError(f"write failed: {exc}") from None
        event = await self._next_event()
        if isinstance(event, Closed):
            raise ProtocolError("connection closed by the server")
        return event

    async def _request_line(self, data: bytes) -> Reply:
        event = await self._request(data)
        if not isinstance(event, Reply):
            raise ProtocolError("expected a status line", repr(event))
        return event

    async def _next_event(self) -> Event:
        try:
            async with asyncio.timeout(self.timeout):
                return await self._read_event()
        except TimeoutError:
            raise ProtocolError("timed out waiting for the server") from None

    async def _read_event(self) -> Event:
        while True:
            event = self._conn.next_event()
            if event is not NEED_DATA:
                assert not isinstance(event, type(NEED_DATA))
                return event
            if self._reader is None:
                raise ProtocolError("not connected")
            try:
                data = await self._reader.read(65536)
            except OSError as exc:
                raise ProtocolError(f"read failed: {exc}") from None
            if data:
                self._conn.receive_data(data)
            else:
                self._conn.receive_eof()


class BlockingMailqClient:
    """The same API without ``await``: each call runs on a private event loop."""

    def __init__(self, **kwargs: Any) -> None:
        self._loop = asyncio.new_event_loop()
        self.client = MailqClient(**kwargs)

    def _run(self, aw: Any) -> Any:
        return self._loop.run_until_complete(aw)

    def connect(
        self, host: str = "127.0.0.1", port: int | str = DEFAULT_PORT, **kw: Any
    ) -> Greeting:
        greeting: Greeting = self._run(self.client.connect(host, port, **kw))
        return greeting

    def auth(self, user: str = "nobody", password: str = "nobody") -> None:
        self._run(self.client.auth(user, password))

    def show_queue_threads2(self) -> list[ThreadLine]:
        result: list[ThreadLine] = self._run(self.client.show_queue_threads2())
        return result

    def show_queue_threads(self) -> list[str]:
        result: list[str] = self._run(self.client.show_queue_threads())
        return result

    def show_queue_short(self) -> QueueShort:
        result: QueueShort = self._run(self.client.show_queue_short())
        return result

    def show_snmp(self) -> Snmp:
        result: Snmp = self._run(self.client.show_snmp())
        return result

    def show_counters(self) -> dict[str, int | float]:
        result: dict[str, int | float] = self._run(self.client.show_counters())
        return result

    def show_thread(self, channel: str, host: str) -> ThreadDetail:
        result: ThreadDetail = self._run(self.client.show_thread(channel, host))
        return result

    def etrn(self, domain: str) -> Reply:
        result: Reply = self._run(self.client.etrn(domain))
        return result

    def kill_msg(self, ident: str) -> Reply:
        result: Reply = self._run(self.client.kill_msg(ident))
        return result

    def kill_thread(self, channel: str, host: str) -> Reply:
        result: Reply = self._run(self.client.kill_thread(channel, host))
        return result

    def requeue_msg(self, ident: str) -> Reply:
        result: Reply = self._run(self.client.requeue_msg(ident))
        return result

    def quit(self) -> None:
        self._run(self.client.quit())

    def close(self) -> None:
        if self._loop.is_closed():
            return
        try:
            self._run(self.client.close())
        finally:
            self._loop.close()

    def __enter__(self) -> BlockingMailqClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc is None and not self._loop.is_closed():
            self._run(self.client.quit())
        self.close()
