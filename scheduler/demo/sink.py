"""A small SMTP sink: accepts, defers or rejects each recipient by its domain.

The demo routes every ``smtp`` thread to it (``smtp -F [127.0.0.1] -p PORT``) so that some
destinations take mail and others keep deferring, which keeps the queue realistic. It is
also handy in tests that need a real SMTP peer on loopback.

:class:`SmtpSession` is the pure core (bytes in, reply bytes out, finished messages
recorded as :class:`Delivery`); :class:`SmtpSink` is the asyncio shell.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import re
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

__all__ = [
    "Delivery",
    "SinkPolicy",
    "SmtpSession",
    "SmtpSink",
    "Verdict",
]

log = logging.getLogger(__name__)

MAX_LINE_LENGTH: Final = 4096
MAX_MESSAGE_SIZE: Final = 10 * 1024 * 1024
MAX_BAD_COMMANDS: Final = 20
SESSION_TIMEOUT: Final = 300.0

_ADDRESS = re.compile(rb"^(?:MAIL FROM|RCPT TO):\s*<([^>]*)>(.*)$", re.IGNORECASE)
_MESSAGE_ID = re.compile(rb"^message-id:\s*(\S+)", re.IGNORECASE | re.MULTILINE)


class Verdict(enum.Enum):
    """What the sink answers to ``RCPT TO``."""

    ACCEPT = "accept"
    DEFER = "defer"
    REJECT = "reject"


def _domain_of(address: str) -> str:
    return address.rpartition("@")[2].lower().rstrip(".")


def _matches(domain: str, patterns: frozenset[str]) -> bool:
    return any(domain == p or domain.endswith("." + p) for p in patterns)


@dataclass(frozen=True, slots=True)
class SinkPolicy:
    """Recipient domains (and their subdomains) to defer or reject; others are accepted."""

    defer: frozenset[str] = frozenset()
    reject: frozenset[str] = frozenset()
    defer_texts: tuple[str, ...] = (
        "421 4.7.0 Too many concurrent SMTP connections, try again later",
        "450 4.2.1 Mailbox busy, try again later",
        "450 4.7.1 Greylisted, please retry in 5 minutes",
        "451 4.3.0 Temporary local problem, please try again later",
        "452 4.2.2 Mailbox full",
    )
    reject_text: str = "550 5.1.1 No such user here"

    def defer_reply(self, address: str) -> str:
        """The deferral for ``address``: always the same one for a domain."""
        domain = _domain_of(address)
        return self.defer_texts[zlib.crc32(domain.encode()) % len(self.defer_texts)]

    def verdict(self, address: str) -> Verdict:
        domain = _domain_of(address)
        if _matches(domain, self.reject):
            return Verdict.REJECT
        if _matches(domain, self.defer):
            return Verdict.DEFER
        return Verdict.ACCEPT


@dataclass(frozen=True, slots=True)
class Delivery:
    """One message the sink accepted (for the accepted recipients only)."""

    sender: str
    recipients: tuple[str, ...]
    size: int
    message_id: str
    queue_id: int


class _State(enum.Enum):
    COMMAND = "command"
    DATA = "data"
    CLOSED = "closed"


@dataclass
class _Transaction:
    sender: str | None = None
    recipients: list[str] = field(default_factory=list)
    body: bytearray = field(default_factory=bytearray)
    too_big: bool = False


class SmtpSession:
    """One SMTP conversation, without I/O: feed bytes, get the reply bytes back.

    Finished messages are appended to :attr:`deliveries`; :attr:`closed` turns true after
    ``QUIT`` or abuse, and the shell then closes the connection.
    """

    def __init__(
        self,
        policy: SinkPolicy,
        *,
        hostname: str = "sink.invalid",
        next_queue_id: Callable[[], int] | None = None,
    ) -> None:
        self.policy = policy
        self.hostname = hostname
        self.deliveries: list[Delivery] = []
        self._buffer = bytearray()
        self._state = _State.COMMAND
        self._txn = _Transaction()
        self._bad_commands = 0
        self._counter = 0
        self._next_queue_id = next_queue_id or self._local_queue_id

    @property
    def closed(self) -> bool:
        return self._state is _State.CLOSED

    def greeting(self) -> bytes:
        return f"220 {self.hostname} ESMTP demo sink\r\n".encode()

    def receive_data(self, data: bytes) -> bytes:
        """Consume ``data``; return every reply it caused, in order."""
        self._buffer += data
        out = bytearray()
        while not self.closed:
            end = self._buffer.find(b"\n")
            if end < 0:
                if len(self._buffer) > MAX_LINE_LENGTH:
                    out += self._close(b"500 5.5.2 Line too long")
                break
            line = bytes(self._buffer[:end]).rstrip(b"\r")
            del self._buffer[: end + 1]
            out += self._line(line)
        return bytes(out)

    def _local_queue_id(self) -> int:
        self._counter += 1
        return self._counter

    def _close(self, reply: bytes) -> bytes:
        self._state = _State.CLOSED
        return reply + b"\r\n"

    def _line(self, line: bytes) -> bytes:
        if self._state is _State.DATA:
            return self._data_line(line)
        return self._command(line)

    def _command(self, line: bytes) -> bytes:
        verb = line.split(b" ", 1)[0].upper()
        handler = _HANDLERS.get(verb)
        if handler is None:
            self._bad_commands += 1
            if self._bad_commands > MAX_BAD_COMMANDS:
                return self._close(b"421 4.7.0 Too many bad commands")
            return b"502 5.5.2 Command not recognized\r\n"
        return handler(self, line)

    def _helo(self, line: bytes) -> bytes:
        self._txn = _Transaction()
        return f"250 {self.hostname}\r\n".encode()

    def _ehlo(self, line: bytes) -> bytes:
        self._txn = _Transaction()
        return (
            f"250-{self.hostname}\r\n250-PIPELINING\r\n250-8BITMIME\r\n"
            f"250-SIZE {MAX_MESSAGE_SIZE}\r\n250-DSN\r\n250 ENHANCEDSTATUSCODES\r\n"
        ).encode()

    def _mail(self, line: bytes) -> bytes:
        match = _ADDRESS.match(line)
        if match is None or not line.upper().startswith(b"MAIL FROM"):
            return b"501 5.5.4 Syntax: MAIL FROM:<address>\r\n"
        if self._txn.sender is not None:
            return b"503 5.5.1 Sender already given\r\n"
        self._txn = _Transaction(sender=match.group(1).decode("utf-8", "replace"))
        return b"250 2.1.0 Ok\r\n"

    def _rcpt(self, line: bytes) -> bytes:
        match = _ADDRESS.match(line)
        if match is None or not line.upper().startswith(b"RCPT TO"):
            return b"501 5.5.4 Syntax: RCPT TO:<address>\r\n"
        if self._txn.sender is None:
            return b"503 5.5.1 Need MAIL first\r\n"
        address = match.group(1).decode("utf-8", "replace")
        verdict = self.policy.verdict(address)
        if verdict is Verdict.DEFER:
            return f"{self.policy.defer_reply(address)}\r\n".encode()
        if verdict is Verdict.REJECT:
            return f"{self.policy.reject_text}\r\n".encode()
        self._txn.recipients.append(address)
        return b"250 2.1.5 Ok\r\n"

    def _data(self, line: bytes) -> bytes:
        if self._txn.sender is None:
            return b"503 5.5.1 Need MAIL first\r\n"
        if not self._txn.recipients:
            return b"554 5.5.1 No valid recipients\r\n"
        self._state = _State.DATA
        return b"354 End data with <CR><LF>.<CR><LF>\r\n"

    def _data_line(self, line: bytes) -> bytes:
        if line == b".":
            return self._finish_data()
        if line.startswith(b"."):
            line = line[1:]
        if len(self._txn.body) + len(line) + 2 > MAX_MESSAGE_SIZE:
            self._txn.too_big = True
        else:
            self._txn.body += line + b"\r\n"
        return b""

    def _finish_data(self) -> bytes:
        txn, self._txn = self._txn, _Transaction()
        self._state = _State.COMMAND
        if txn.too_big:
            return b"552 5.3.4 Message too big\r\n"
        head = bytes(txn.body).split(b"\r\n\r\n", 1)[0]
        found = _MESSAGE_ID.search(head)
        queue_id = self._next_queue_id()
        self.deliveries.append(
            Delivery(
                sender=txn.sender or "",
                recipients=tuple(txn.recipients),
                size=len(txn.body),
                message_id=found.group(1).decode("utf-8", "replace") if found else "",
                queue_id=queue_id,
            )
        )
        return f"250 2.0.0 Ok: queued as {queue_id}\r\n".encode()

    def _rset(self, line: bytes) -> bytes:
        self._txn = _Transaction()
        return b"250 2.0.0 Ok\r\n"

    def _noop(self, line: bytes) -> bytes:
        return b"250 2.0.0 Ok\r\n"

    def _vrfy(self, line: bytes) -> bytes:
        return b"252 2.0.0 Cannot VRFY user\r\n"

    def _quit(self, line: bytes) -> bytes:
        return self._close(b"221 2.0.0 Bye")


_HANDLERS: Final[dict[bytes, Callable[[SmtpSession, bytes], bytes]]] = {
    b"HELO": SmtpSession._helo,
    b"EHLO": SmtpSession._ehlo,
    b"LHLO": SmtpSession._ehlo,
    b"MAIL": SmtpSession._mail,
    b"RCPT": SmtpSession._rcpt,
    b"DATA": SmtpSession._data,
    b"RSET": SmtpSession._rset,
    b"NOOP": SmtpSession._noop,
    b"VRFY": SmtpSession._vrfy,
    b"QUIT": SmtpSession._quit,
}


class SmtpSink:
    """The asyncio shell: a loopback SMTP server running :class:`SmtpSession`.

    ``deliveries`` collects every accepted message; ``on_delivery`` (if given) is called
    for each one as it is accepted.
    """

    def __init__(
        self,
        policy: SinkPolicy,
        *,
        hostname: str = "sink.invalid",
        on_delivery: Callable[[Delivery], None] | None = None,
        timeout: float = SESSION_TIMEOUT,
    ) -> None:
        self.policy = policy
        self.hostname = hostname
        self.on_delivery = on_delivery
        self.timeout = timeout
        self.deliveries: list[Delivery] = []
        self._server: asyncio.Server | None = None
        self._sessions: set[asyncio.Task[None]] = set()
        self._queue_ids = 0

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("sink not started")
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> int:
        """Listen on ``host:port`` (0 = any free port); return the port."""
        self._server = await asyncio.start_server(self._serve, host, port)
        log.info("SMTP sink listening on %s:%d", host, self.port)
        return self.port

    async def close(self) -> None:
        """Stop listening and end every open session."""
        if self._server is not None:
            self._server.close()
        for task in list(self._sessions):
            task.cancel()
        for task in list(self._sessions):
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None

    def _next_queue_id(self) -> int:
        self._queue_ids += 1
        return self._queue_ids

    async def _serve(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._sessions.add(task)
        try:
            async with asyncio.timeout(self.timeout):
                await self._converse(reader, writer)
        except (TimeoutError, ConnectionError) as exc:
            log.debug("SMTP sink session ended: %s", type(exc).__name__)
        finally:
            self._sessions.discard(task)
            writer.close()
            with contextlib.suppress(ConnectionError, asyncio.CancelledError):
                await writer.wait_closed()

    async def _converse(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        session = SmtpSession(
            self.policy, hostname=self.hostname, next_queue_id=self._next_queue_id
        )
        writer.write(session.greeting())
        await writer.drain()
        while not session.closed:
            data = await reader.read(65536)
            if not data:
                return
            reply = session.receive_data(data)
            self._record(session)
            if reply:
                writer.write(reply)
                await writer.drain()

    def _record(self, session: SmtpSession) -> None:
        for delivery in session.deliveries:
            self.deliveries.append(delivery)
            log.info(
                "sink accepted %s from <%s> to %s (%d bytes)",
                delivery.message_id or f"#{delivery.queue_id}",
                delivery.sender,
                ", ".join(f"<{r}>" for r in delivery.recipients),
                delivery.size,
            )
            if self.on_delivery is not None:
                self.on_delivery(delivery)
        session.deliveries.clear()
