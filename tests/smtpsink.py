"""An asyncio SMTP sink for tests and benchmarks, scripted per recipient.

``SmtpSink(rules={"*@fail.example": "550 5.1.1 <{rcpt}>... User unknown",
"*@later.example": "451 4.3.0 try again later", "*@drop.example": "drop"})`` answers each
RCPT by the first matching pattern (fnmatch on the lower-cased address; default ``250``),
``drop`` closes the connection at that RCPT. ``data_reply`` scripts the end-of-data reply.
EHLO offers PIPELINING, SIZE, 8BITMIME, DSN (and STARTTLS when ``tls`` is an
``ssl.SSLContext``); ``ehlo=False`` rejects EHLO so the client must fall back to HELO.

Usable as ``async with SmtpSink(...) as sink`` or, for subprocess tests, from a thread:
``with ThreadedSmtpSink(...) as sink``. ``sink.port`` is the bound port on 127.0.0.1,
``sink.transactions`` the accepted transactions, ``sink.sessions`` the connection count.

Why this is not built on :mod:`scheduler.demo.sink` (the demo's runtime sink): the two share
only line framing and dot-unstuffing. This one is scripted per recipient *pattern* with
free reply texts, can ``drop`` the connection mid-transaction, switches to TLS mid-stream
(``STARTTLS`` needs the shell, not a bytes-in/bytes-out core), toggles EHLO/DSN/PIPELINING,
and records every command line, MAIL/RCPT parameters and the HELO name, which the SMTP
transport agent's tests assert on. The runtime sink decides by domain policy with fixed
replies and enforces size/line/abuse limits. Folding these test-only knobs into the
shipped sink would grow it for no runtime use.
"""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import TracebackType

from tests.threadloop import LoopThread

__all__ = ["SmtpSink", "ThreadedSmtpSink", "Transaction"]


@dataclass
class Transaction:
    """One MAIL … DATA transaction as the sink saw it."""

    helo: str
    mail_from: str
    mail_params: list[str]
    rcpts: list[tuple[str, list[str]]] = field(default_factory=list)
    data: bytes = b""  # dot-unstuffed, CRLF line ends as received
    tls: bool = False


def _address(arg: str) -> tuple[str, list[str]]:
    """``<a@b> X=Y`` -> ("a@b", ["X=Y"])."""
    arg = arg.strip()
    if arg.startswith("<"):
        end = arg.find(">")
        return arg[1:end], arg[end + 1 :].split()
    words = arg.split()
    return (words[0] if words else ""), words[1:]


class SmtpSink:
    """The asyncio SMTP server."""

    def __init__(
        self,
        rules: Mapping[str, str] | None = None,
        *,
        data_reply: str = "250 2.0.0 Ok: queued",
        ehlo: bool = True,
        dsn: bool = True,
        pipelining: bool = True,
        tls: ssl.SSLContext | None = None,
        host: str = "127.0.0.1",
    ) -> None:
        self.rules = dict(rules or {})
        self.data_reply = data_reply
        self.ehlo = ehlo
        self.dsn = dsn
        self.pipelining = pipelining
        self.tls = tls
        self.host = host
        self.port = 0
        self.sessions = 0
        self.transactions: list[Transaction] = []
        self.commands: list[str] = []
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._client, self.host, 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            await self._server.wait_closed()
            self._server = None

    async def __aenter__(self) -> SmtpSink:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def reply_for(self, rcpt: str) -> str:
        low = rcpt.lower()
        for pattern, reply in self.rules.items():
            if fnmatch.fnmatchcase(low, pattern.lower()):
                return reply.replace("{rcpt}", rcpt)
        return "250 2.1.5 Ok"

    def _extensions(self, tls_active: bool) -> list[str]:
        ext = ["SIZE 10240000", "8BITMIME"]
        if self.pipelining:
            ext.append("PIPELINING")
        if self.dsn:
            ext.append("DSN")
        if self.tls is not None and not tls_active:
            ext.append("STARTTLS")
        return ext

    async def _client(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self.sessions += 1
        try:
            await self._session(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError):
            pass
        finally:
            self._tasks.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _session(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        async def say(line: str) -> None:
            writer.write(line.encode() + b"\r\n")
            await writer.drain()

        await say("220 sink.test ESMTP smtpsink")
        helo = ""
        tls_active = False
        txn: Transaction | None = None
        while True:
            raw = await reader.readline()
            if not raw:
                return
            line = raw.decode("utf-8", "surrogateescape").rstrip("\r\n")
            self.commands.append(line)
            verb, _, arg = line.partition(" ")
            verb = verb.upper()
            if verb == "EHLO":
                if not self.ehlo:
                    await say("502 5.5.2 EHLO not implemented")
                    continue
                helo = arg
                ext = self._extensions(tls_active)
                lines = ["sink.test", *ext]
                out = [f"250-{x}" for x in lines[:-1]] + [f"250 {lines[-1]}"]
                await say("\r\n".join(out))
            elif verb == "HELO":
                helo = arg
                await say("250 sink.test")
            elif verb == "STARTTLS" and self.tls is not None and not tls_active:
                await say("220 2.0.0 Ready to start TLS")
                await writer.start_tls(self.tls)
                tls_active = True
                helo = ""
            elif verb == "MAIL":
                addr, params = _address(arg.partition(":")[2])
                txn = Transaction(helo, addr, params, tls=tls_active)
                await say("250 2.1.0 Ok")
            elif verb == "RCPT":
                addr, params = _address(arg.partition(":")[2])
                if txn is None:
                    await say("503 5.5.1 need MAIL")
                    continue
                reply = self.reply_for(addr)
                if reply == "drop":
                    return
                if reply.startswith("2"):
                    txn.rcpts.append((addr, params))
                await say(reply)
            elif verb == "DATA":
                if txn is None or not txn.rcpts:
                    await say("554 5.5.1 no valid recipients")
                    continue
                await say("354 End data with <CR><LF>.<CR><LF>")
                txn.data = await self._read_data(reader)
                if self.data_reply == "drop":
                    return
                if self.data_reply.startswith("2"):
                    self.transactions.append(txn)
                await say(self.data_reply)
                txn = None
            elif verb == "RSET":
                txn = None
                await say("250 2.0.0 Ok")
            elif verb == "NOOP":
                await say("250 2.0.0 Ok")
            elif verb == "QUIT":
                await say("221 2.0.0 Bye")
                return
            else:
                await say("502 5.5.2 command not recognized")

    @staticmethod
    async def _read_data(reader: asyncio.StreamReader) -> bytes:
        chunks: list[bytes] = []
        while True:
            raw = await reader.readline()
            if not raw:
                raise ConnectionError("EOF in DATA")
            if raw in (b".\r\n", b".\n"):
                return b"".join(chunks)
            chunks.append(raw[1:] if raw.startswith(b".") else raw)


class ThreadedSmtpSink:
    """Run an :class:`SmtpSink` on its own event loop in a thread (for subprocess tests)."""

    def __init__(
        self, rules: Mapping[str, str] | None = None, **kwargs: object
    ) -> None:
        self.sink = SmtpSink(rules, **kwargs)  # type: ignore[arg-type]
        self._loop = LoopThread()

    @property
    def port(self) -> int:
        return self.sink.port

    @property
    def transactions(self) -> list[Transaction]:
        return list(self.sink.transactions)

    @property
    def sessions(self) -> int:
        return self.sink.sessions

    def __enter__(self) -> ThreadedSmtpSink:
        self._loop.start()
        self._loop.run(self.sink.start())
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._loop.run(self.sink.close())
        self._loop.stop()
