"""A fake MAILQ v2 server that replays recorded conversations (tests only).

A :class:`Script` is the greeting plus, in command order, each command line the real
client sent and the bytes the real server answered (from a recording's ``.log``).
The server sends the version line and a *fresh* challenge, checks AUTH digests against
the passwords it is given (or accepts any AUTH), answers ``QUIT``/``EXIT`` with
``+Bye bye``, and answers every other line with the next recorded reply when the line
matches the recorded command, else with a ``-REPLAY MISMATCH`` line. Every line it
receives is kept in :attr:`ReplayServer.received`.

:class:`ReplayServer` is asyncio; :class:`ThreadedReplayServer` runs one in a thread
for blocking callers (click's CliRunner, subprocesses).
"""

from __future__ import annotations

import ast
import asyncio
import contextlib
import re
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

from mailq.protocol.auth import new_challenge, verify
from tests.recordings import RECORDINGS
from tests.threadloop import LoopThread

__all__ = [
    "TRANSCRIPTS",
    "Exchange",
    "ReplayServer",
    "Script",
    "ThreadedReplayServer",
    "script_from_log",
]

TRANSCRIPTS = RECORDINGS
_LOG_LINE = re.compile(r"^\s*[\d.]+ ([CS]): (.*)$")
VERSION = b"version zmailer 2.0\n"


@dataclass(frozen=True)
class Exchange:
    """One command line (without LF) and the raw reply; ``close`` = hang up after it."""

    command: str
    reply: bytes
    close: bool = False


@dataclass
class Script:
    exchanges: list[Exchange]
    refuse: bytes | None = None
    """A second greeting line that is not a challenge (``550 ...``): sent, then close."""
    passwords: dict[str, str] | None = None
    """user -> password; None accepts any AUTH with ``+OK``."""


def script_from_log(path: Path, passwords: dict[str, str] | None = None) -> Script:
    """Build a script from a recording's ``.log`` (one command per client chunk)."""
    greeting = b""
    exchanges: list[Exchange] = []
    command: str | None = None
    reply = b""
    for raw in path.read_text().splitlines():
        m = _LOG_LINE.match(raw)
        if m is None or m.group(2) == "<EOF>":
            continue
        data: bytes = ast.literal_eval(m.group(2))
        if m.group(1) == "S":
            if command is None:
                greeting += data
            else:
                reply += data
            continue
        if command is not None:
            exchanges.append(Exchange(command, reply))
        command, reply = data.decode().rstrip("\n"), b""
    if command is not None:
        exchanges.append(Exchange(command, reply))
    lines = greeting.split(b"\n")
    refuse = None
    if len(lines) > 1 and not lines[1].startswith(b"220 "):
        refuse = lines[1] + b"\n"
    return Script(exchanges, refuse=refuse, passwords=passwords)


def auth_passwords() -> dict[str, str]:
    """user -> password from the recorded ``scheduler.auth``."""
    out: dict[str, str] = {}
    for line in (TRANSCRIPTS / "configs" / "scheduler.auth").read_text().splitlines():
        if line and not line.startswith("#") and line.count(":") >= 3:
            user, password = line.split(":")[:2]
            out.setdefault(user, password)
    return out


@dataclass
class _Session:
    script: Script
    challenge: str
    pending: list[Exchange] = field(default_factory=list)


class ReplayServer:
    """Listens on 127.0.0.1 port 0 and, if ``unix_path`` is given, on a Unix socket."""

    def __init__(self, script: Script, unix_path: str | None = None) -> None:
        self.script = script
        self.unix_path = unix_path
        self.received: list[str] = []
        self.mismatches: list[str] = []
        self.connections = 0
        self.port = 0
        self._servers: list[asyncio.Server] = []
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        tcp = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = tcp.sockets[0].getsockname()[1]
        self._servers.append(tcp)
        if self.unix_path is not None:
            self._servers.append(
                await asyncio.start_unix_server(self._serve, self.unix_path)
            )

    async def stop(self) -> None:
        for server in self._servers:
            server.close()
            await server.wait_closed()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def __aenter__(self) -> ReplayServer:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    async def _serve(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            await self._session(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self._tasks.discard(task)
            writer.close()
            with contextlib.suppress(ConnectionError, OSError):
                await writer.wait_closed()

    async def _session(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self.connections += 1
        script = self.script
        if script.refuse is not None:
            writer.write(VERSION + script.refuse)
            await writer.drain()
            return
        session = _Session(
            script, new_challenge(self.connections), list(script.exchanges)
        )
        writer.write(VERSION + session.challenge.encode() + b"\n")
        await writer.drain()
        while True:
            raw = await reader.readline()
            if not raw:
                return
            line = raw.decode("utf-8", "surrogateescape").rstrip("\n").replace("\r", "")
            self.received.append(line)
            reply, close = self._answer(session, line)
            writer.write(reply)
            await writer.drain()
            if close:
                return

    def _answer(self, session: _Session, line: str) -> tuple[bytes, bool]:
        verb = line.split(" ", 1)[0]
        pending = session.pending
        if verb.upper() in ("QUIT", "EXIT"):
            if pending and pending[0].command.upper() in ("QUIT", "EXIT"):
                pending.pop(0)
            return b"+Bye bye\n", True
        if verb == "AUTH":
            if pending and pending[0].command.startswith("AUTH "):
                pending.pop(0)
            return self._auth(session, line), False
        if not pending or pending[0].command != line:
            expected = pending[0].command if pending else "<nothing>"
            self.mismatches.append(f"expected {expected!r}, got {line!r}")
            return f"-REPLAY MISMATCH expected {expected!r}\n".encode(), False
        exchange = pending.pop(0)
        return exchange.reply, exchange.close

    def _auth(self, session: _Session, line: str) -> bytes:
        parts = line.split(" ", 2)
        passwords = session.script.passwords
        if passwords is None:
            return b"+OK\n"
        if len(parts) < 3 or parts[1] not in passwords:
            return b"-BAD USER OR AUTHENTICATOR OR CONTACT ADDRESS\n"
        if not verify(session.challenge, passwords[parts[1]], parts[2]):
            return b"-BAD USER OR PASSWORD\n"
        return b"+OK\n"


class ThreadedReplayServer:
    """A :class:`ReplayServer` on its own event loop in a daemon thread."""

    def __init__(self, script: Script, unix_path: str | None = None) -> None:
        self.server = ReplayServer(script, unix_path)
        self._loop = LoopThread()

    @property
    def port(self) -> int:
        return self.server.port

    @property
    def received(self) -> list[str]:
        return self.server.received

    def __enter__(self) -> ThreadedReplayServer:
        self._loop.start()
        self._loop.run(self.server.start())
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._loop.run(self.server.stop())
        self._loop.stop()
