"""SMTP servers scripted per test case, on any loopback address (127.0.0.x, ::1).

``ScriptedSmtp(host, port, greeting=..., extensions=[...], rcpt={pattern: reply},
delay={"MAIL": 2.0}, tls=ctx)``; ``servers(...)`` starts several on one port (the agent
has one ``-p``). Each keeps ``commands`` (every line), ``raw_data`` (DATA bytes exactly
as received, dot-stuffed, up to and without the final ``.CRLF``), ``sessions`` and
``accepted`` (``(mail_from, [rcpts])`` for each 250 after DATA).
"""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import ssl
from dataclasses import dataclass, field

from tests.threadloop import LoopThread

DEFAULT_EXT = ["PIPELINING", "SIZE 10240000", "8BITMIME", "DSN", "SMTPUTF8"]


@dataclass
class ScriptedSmtp:
    host: str
    port: int = 0
    greeting: str = "220 scripted ESMTP"
    extensions: list[str] = field(default_factory=lambda: list(DEFAULT_EXT))
    rcpt: dict[str, str] = field(default_factory=dict)
    delay: dict[str, float] = field(default_factory=dict)
    data_reply: str = "250 2.0.0 queued"
    close_after_data: bool = False  # hang up after each message (an idle time-out)
    drop_on: set[str] = field(default_factory=set)  # hang up at these verbs
    tls: ssl.SSLContext | None = None
    commands: list[str] = field(default_factory=list)
    raw_data: list[bytes] = field(default_factory=list)
    accepted: list[tuple[str, list[str]]] = field(default_factory=list)
    sessions: int = 0
    tls_sessions: int = 0

    async def start(self) -> None:
        self._tasks: set[asyncio.Task[None]] = set()
        self._server = await asyncio.start_server(self._client, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._server.wait_closed(), 2)

    async def _client(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self.sessions += 1
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            await self._session(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError):
            pass
        finally:
            self._tasks.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _say(self, writer: asyncio.StreamWriter, verb: str, text: str) -> None:
        if verb in self.delay:
            await asyncio.sleep(self.delay[verb])
        writer.write(text.encode() + b"\r\n")
        await writer.drain()

    async def _session(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        await self._say(writer, "GREETING", self.greeting)
        if not self.greeting.startswith("2"):
            return
        tls = False
        mail, rcpts = "", list[str]()
        while raw := await reader.readline():
            line = raw.decode("utf-8", "surrogateescape").rstrip("\r\n")
            self.commands.append(line)
            verb = line.split(" ", 1)[0].upper()
            arg = line.partition(":")[2].strip()
            if verb in self.drop_on:
                return
            if verb == "EHLO":
                ext = [e for e in self.extensions if e != "STARTTLS" or not tls]
                if self.tls is not None and not tls:
                    ext.append("STARTTLS")
                lines = ["scripted", *ext]
                text = (
                    "\r\n".join(f"250-{x}" for x in lines[:-1]) + f"\r\n250 {lines[-1]}"
                )
                await self._say(writer, verb, text)
            elif verb == "STARTTLS" and self.tls is not None:
                await self._say(writer, verb, "220 2.0.0 go ahead")
                await writer.start_tls(self.tls)
                tls = True
                self.tls_sessions += 1
            elif verb == "MAIL":
                mail, rcpts = arg.split(">")[0].lstrip("<"), []
                await self._say(writer, verb, "250 2.1.0 ok")
            elif verb == "RCPT":
                addr = arg.split(">")[0].lstrip("<")
                reply = next(
                    (r for p, r in self.rcpt.items() if fnmatch.fnmatchcase(addr, p)),
                    "250 2.1.5 ok",
                )
                if reply.startswith("2"):
                    rcpts.append(addr)
                await self._say(writer, verb, reply)
            elif verb == "DATA":
                if not rcpts:
                    await self._say(writer, verb, "554 5.5.1 no valid recipients")
                    continue
                await self._say(writer, verb, "354 go ahead")
                chunks = []
                while (chunk := await reader.readline()) != b".\r\n":
                    if not chunk:
                        return
                    chunks.append(chunk)
                self.raw_data.append(b"".join(chunks))
                if self.data_reply.startswith("2"):
                    self.accepted.append((mail, rcpts))
                await self._say(writer, "DOT", self.data_reply)
                if self.close_after_data:
                    return
            elif verb == "QUIT":
                await self._say(writer, verb, "221 2.0.0 bye")
                return
            elif verb in ("RSET", "NOOP", "HELO"):
                mail, rcpts = "", list[str]()
                await self._say(writer, verb, "250 2.0.0 ok")
            else:
                await self._say(writer, verb, "502 5.5.2 what")


class Servers:
    """Several :class:`ScriptedSmtp` on one port, on a loop in a thread."""

    def __init__(self, *servers: ScriptedSmtp) -> None:
        self.servers = servers
        self._loop = LoopThread()
        self.port = 0

    def __enter__(self) -> Servers:
        self._loop.start()
        for _ in range(20):
            try:
                self._loop.run(self._start_all())
                return self
            except OSError:
                continue
        raise OSError("no common free port")

    async def _start_all(self) -> None:
        port = 0
        started: list[ScriptedSmtp] = []
        try:
            for s in self.servers:
                s.port = port
                await s.start()
                started.append(s)
                port = s.port
        except OSError:
            for s in started:
                await s.close()
            for s in self.servers:
                s.port = 0
            raise
        self.port = port

    def __exit__(self, *exc: object) -> None:
        for s in self.servers:
            self._loop.run(s.close())
        self._loop.stop()
