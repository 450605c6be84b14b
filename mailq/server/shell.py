"""The asyncio shell of the MAILQ v2 server: listeners, sessions, streaming, shutdown.

The shell reads bytes, feeds :class:`~mailq.protocol.connection.ServerConnection`, hands events
to :class:`~mailq.server.service.Service` and writes what the connection serialises. Reports
are formatted a batch of lines at a time and written in chunks of about 64 KiB with
``await writer.drain()`` after each (it suspends only while the peer's buffer is full;
a chunk's pieces go to the socket in one ``writev``, not joined first);
the session yields to the loop after every ``FORMAT_SLICE`` (2 ms) of formatting, so a
huge dump never blocks the loop or sits whole in memory, and a slow reader only stalls
itself. Each session has a real deadline (``lifetime``, B12 fix).

Usage::

    server = MailqServer(view, ops, ServerConfig(authfile="/etc/mail/scheduler.auth"))
    await server.start(["TCP:174", "UNIX:/var/spool/postoffice/.mailq.sock"])
    ...
    server.close()
    await server.wait_closed()
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import pwd
import socket
import struct
import time
from collections.abc import Callable, Sequence
from types import TracebackType

from mailq.protocol import replies
from mailq.protocol.auth import new_challenge
from mailq.protocol.commands import Right
from mailq.protocol.connection import (
    AuthAccepted,
    AuthRejected,
    AuthRequest,
    Greeting,
    MultilineReply,
    Reply,
    ServerConnection,
    ServerReply,
    encode_body_lines,
)
from mailq.protocol.errors import AuthFileError, RemoteProtocolError
from mailq.protocol.lines import BODY_END, BODY_START
from mailq.protocol.states import State
from mailq.server.authfile import AuthFile, IPPeer, Peer, UnixPeer, read_auth_file
from mailq.server.config import ServerConfig
from mailq.server.guard import AuthThrottle, PeerLogLimiter, peer_context
from mailq.server.listeners import BACKLOG, bind_listeners, describe_socket
from mailq.server.opviews import AsyncBody, Deferred
from mailq.server.service import Client, Service
from mailq.server.views import QueueOperations, QueueView
from mailq.server.watch import WatchRequest, stream

__all__ = ["MailqServer", "ServerConfig"]

logger = logging.getLogger(__name__)

READ_BYTES = 65536
FORMAT_SLICE = 0.002  # seconds of report work before yielding to the loop
PIECE_BYTES = 1  # report pieces of one formatting batch (BATCH_LINES lines, ~1 ms)
WRITE_BYTES = 65536  # report bytes gathered per write (fewer, bigger writes)
PRE_AUTH_GRACE = (
    0.05  # past the session limit, unauthenticated sessions older than this go first
)
STALL_GRACE = 5.0  # ... then a session that made no progress for this long
AUTH_GRACE = 2.0  # a newcomer's AUTH may close a session unauthenticated this long
TOO_MANY = "-Too many sessions open; try again later"
LIMITED_LOGGERS = (
    "mailq.server.shell",
    "mailq.server.service",
    "mailq.server.reports",
    "mailq.server.views",
    "mailq.server.authfile",
)


def _rank(rights: Right) -> int:
    return bin(int(rights)).count("1")


def _fewer(have: Right, than: Right) -> bool:
    """``have`` is a strict subset of ``than``."""
    return have != than and (have & than) == have


def _peer_key(peer: Peer) -> str:
    return str(peer)


def _peer_of(writer: asyncio.StreamWriter) -> Peer:
    sock = writer.get_extra_info("socket")
    if sock is not None and sock.family == socket.AF_UNIX:
        uid: int | None = None
        name: str | None = None
        if hasattr(socket, "SO_PEERCRED"):
            with contextlib.suppress(OSError):
                creds = sock.getsockopt(
                    socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i")
                )
                uid = struct.unpack("3i", creds)[1]
        if uid is not None:
            with contextlib.suppress(KeyError):
                name = pwd.getpwuid(uid).pw_name
        return UnixPeer(uid, name)
    return _ip_peer(str(writer.get_extra_info("peername")[0]))


_ip_peers: dict[str, IPPeer] = {}


def _ip_peer(host: str) -> IPPeer:
    """``IPPeer.from_host``, remembered: the same few clients connect again and again."""
    peer = _ip_peers.get(host)
    if peer is None:
        if len(_ip_peers) >= 4096:
            _ip_peers.clear()
        peer = _ip_peers[host] = IPPeer.from_host(host)
    return peer


def _peer_text(writer: asyncio.StreamWriter, peer: Peer) -> str:
    if isinstance(peer, UnixPeer):
        return str(peer)
    port = writer.get_extra_info("peername")[1]
    return f"[{peer}]:{port}" if peer.address.version == 6 else f"{peer}:{port}"


class _NoAuth(Exception):
    """The session did not authenticate within ``auth_timeout``."""

    def __init__(self, limit: float) -> None:
        super().__init__(limit)
        self.limit = limit


class _Session:
    """One connection: greeting, the read/execute/write loop, the deadline."""

    def __init__(
        self,
        server: MailqServer,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        self.server = server
        self.reader = reader
        self.writer = writer
        self.task = asyncio.current_task()
        self.idle = False
        self.shutdown_requested = False
        self.hard_cancel = False
        self.conn: ServerConnection | None = None
        self.where = "?"
        self.born = time.monotonic()
        self.progress = self.born  # last time bytes came in or a drain completed
        self.deadline: asyncio.Timeout  # the session's lifetime (set by run)
        self.closing = asyncio.Event()
        self.key = "?"  # the peer address (a Unix peer: its uid)
        self.probation = False  # admitted past a limit: must outrank someone at AUTH
        self.rights = Right.NONE

    @property
    def authenticated(self) -> bool:
        return self.conn is not None and self.conn.state is State.READY

    @property
    def evicted(self) -> bool:
        return self.hard_cancel

    def request_shutdown(self) -> None:
        self.shutdown_requested = True
        self.closing.set()  # ends a WATCH stream
        if self.idle and self.task is not None:
            self.task.cancel()

    def cancel(self) -> None:
        self.hard_cancel = True
        if self.task is not None:
            self.task.cancel()

    def evict(self) -> None:
        """Close the connection under the session (it then ends on EOF/lost)."""
        self.hard_cancel = True
        self.writer.transport.abort()

    async def run(self) -> None:
        service = self.server.service
        try:
            peer = _peer_of(self.writer)
        except (OSError, ValueError, IndexError, TypeError):
            logger.warning("cannot determine the peer address; closing")
            return
        self.where = _peer_text(self.writer, peer)
        self.key = _peer_key(peer)
        peer_context(self.key)
        self.server.admit(self)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.server.config.lifetime
        try:
            async with asyncio.timeout_at(deadline) as self.deadline:
                await self._serve(peer)
        except TimeoutError:
            service.count("TimedOut")
            logger.info(
                "%s lifetime of %gs over; closed",
                self.where,
                self.server.config.lifetime,
            )
        except _NoAuth as exc:
            service.count("TimedOut")
            logger.info("%s no AUTH within %gs; closed", self.where, exc.limit)
        except RemoteProtocolError as exc:
            logger.warning("%s closed: %s", self.where, exc.reason)
        except ConnectionError as exc:
            service.count("ReadFails" if self.idle else "WriteFails")
            logger.info("%s connection lost: %s", self.where, exc)
        except OSError as exc:
            service.count("ReadFails" if self.idle else "WriteFails")
            logger.info("%s I/O error: %s", self.where, exc)
        except asyncio.CancelledError:
            if self.hard_cancel or not self.shutdown_requested:
                raise
            if self.task is not None:
                self.task.uncancel()
            await self._say_goodbye()
        except Exception:
            logger.exception("%s internal error; session closed", self.where)

    async def _say_goodbye(self) -> None:
        conn = self.conn
        if conn is None or conn.state not in (State.AWAIT_AUTH, State.READY):
            return
        with contextlib.suppress(ConnectionError, OSError, TimeoutError):
            self.writer.write(conn.send(Reply(replies.SHUTTING_DOWN)))
            async with asyncio.timeout(1.0):
                await self.writer.drain()
        conn.close()
        logger.info("%s closed: server shutting down", self.where)

    async def _serve(self, peer: Peer) -> None:
        server = self.server
        service = server.service
        auth = server.load_auth()
        allowed = auth is not None and auth.admits_any(peer)
        challenge = new_challenge(server.next_challenge_number()) if allowed else ""
        conn = ServerConnection(
            challenge,
            max_line=server.config.max_line,
            max_auth_failures=server.config.max_auth_failures,
        )
        self.conn = conn
        client = Client(peer, challenge)
        self.writer.write(conn.send(Greeting(allowed)))
        if not allowed:
            service.count("AuthRej")
            logger.info(
                "%s refused: NO ACCESS (no auth-file line admits it)", self.where
            )
            await self.writer.drain()
            return
        logger.debug("%s connected", self.where)
        await self.writer.drain()
        while True:
            if self.shutdown_requested:
                await self._say_goodbye()
                return
            self.idle = True
            if conn.state is State.AWAIT_AUTH:
                data = await self._read_before_auth()
            else:
                data = await self.reader.read(READ_BYTES)
            self.idle = False
            self.progress = time.monotonic()
            if not data:
                service.count("ReadEOF")
            conn.receive_data(data)
            if not await self._process(conn, client):
                return

    async def _read_before_auth(self) -> bytes:
        """Read, but no later than ``auth_timeout`` after the connection came in."""
        limit = self.server.config.auth_timeout
        try:
            async with asyncio.timeout_at(
                asyncio.get_running_loop().time()
                + limit
                - (time.monotonic() - self.born)
            ):
                return await self.reader.read(READ_BYTES)
        except TimeoutError:
            raise _NoAuth(limit) from None

    async def _process(self, conn: ServerConnection, client: Client) -> bool:
        """Answer every complete line; False once the session is over.

        Pipelined commands share one ``FORMAT_SLICE``: once it is used up the session
        yields to the loop before the next reply, so a greedy client cannot hold it."""
        service = self.server.service
        server = self.server
        slice_start = time.perf_counter()
        while True:
            event = conn.next_event()
            if event is None:
                return True
            if time.perf_counter() - slice_start >= FORMAT_SLICE:
                await asyncio.sleep(0)
                slice_start = time.perf_counter()
            if isinstance(event, AuthRequest):
                wait = server.throttle.wait_before_auth(self.key)
                if wait > 0:
                    self.idle = True  # a shutdown may interrupt the wait
                    await asyncio.sleep(wait)
                    self.idle = False
            reply = service.handle(event, client, server.load_auth)
            if isinstance(reply, AuthRejected):
                server.throttle.failed(self.key)
            elif isinstance(reply, AuthAccepted) and not server.seat(
                self, reply.rights
            ):
                self.writer.write(conn.send(Reply(TOO_MANY)))
                await self.writer.drain()
                return False
            if isinstance(reply, WatchRequest):
                if not await self._watch(reply):
                    return False
                continue

            if isinstance(reply, Deferred):
                # operator bulk work, in loop-sized slices; shielded: a session that
                # ends meanwhile does not leave an operation half done and unsaved
                deferred = await asyncio.shield(asyncio.ensure_future(reply.run()))
                if isinstance(deferred, AsyncBody):
                    await self._write_async_body(conn, deferred)
                    continue
                reply = deferred
            if reply is None:
                logger.debug("%s closed by peer (%s)", self.where, client.user or "-")
                return False
            await self._write(conn, reply)
            if conn.state is not State.READY and conn.state is not State.AWAIT_AUTH:
                return False
            if self.shutdown_requested:
                await self._say_goodbye()
                return False

    async def _watch(self, request: WatchRequest) -> bool:
        """WATCH (mailq.server.watch): no lifetime while it streams, a fresh one after."""
        self.deadline.reschedule(None)
        alive = await stream(request, self.reader, self.writer, self.closing)
        loop = asyncio.get_running_loop()
        self.deadline.reschedule(loop.time() + self.server.config.lifetime)
        return alive

    async def _write_async_body(self, conn: ServerConnection, body: AsyncBody) -> None:
        """``+OK until LF.LF``, each batch as the generator produces it, ``.``."""
        writer = self.writer
        writer.write(BODY_START)
        try:
            async for lines in body.batches:
                writer.write(encode_body_lines(lines))
                await writer.drain()
                self.progress = time.monotonic()
        finally:
            writer.write(BODY_END)
        await writer.drain()

    async def _write(self, conn: ServerConnection, reply: ServerReply) -> None:
        writer = self.writer
        if not isinstance(reply, MultilineReply):
            writer.write(conn.send(reply))
            if writer.transport.get_write_buffer_size():  # else drain() has no work
                await writer.drain()
            self.progress = time.monotonic()
            return
        clock = time.perf_counter
        started = clock()
        parts: list[bytes] = []
        size = 0
        for piece in conn.send_chunks(reply, PIECE_BYTES):
            parts.append(piece)  # cached bytes are gathered, not copied (writev)
            size += len(piece)
            if size >= WRITE_BYTES:
                write_parts(writer, parts)
                parts, size = [], 0
                await writer.drain()  # suspends only while the peer is not reading
                self.progress = time.monotonic()
            if clock() - started >= FORMAT_SLICE:
                await asyncio.sleep(0)  # formatting is CPU: let others run
                started = clock()
        if parts:
            write_parts(writer, parts)
            transport = writer.transport
            if transport.get_write_buffer_size() or transport.is_closing():
                await writer.drain()  # else it has no work (as for one line above)


GATHER_MAX = 64  # at most this many pieces in one writev (IOV_MAX is 1024)


def write_parts(writer: asyncio.StreamWriter, parts: list[bytes]) -> None:
    """``writer.write(b"".join(parts))``, without the join when the socket takes it.

    While the transport holds no bytes of its own, the pieces go to the socket in one
    ``writev`` (a cached ``SHOW THREAD`` body is not copied into a joined buffer first);
    what the socket does not take, and everything while the transport is buffering,
    closing or the call fails, goes through ``writer.write`` as before (which then
    reports a broken connection as usual)."""
    if len(parts) == 1:
        writer.write(parts[0])
        return
    transport = writer.transport
    sock = transport.get_extra_info("socket")
    if (
        sock is None
        or transport.get_extra_info("sslcontext") is not None  # never around TLS
        or len(parts) > GATHER_MAX
        or transport.is_closing()
        or transport.get_write_buffer_size()
    ):
        writer.write(b"".join(parts))
        return
    try:
        sent = os.writev(sock.fileno(), parts)
    except (BlockingIOError, InterruptedError):
        sent = 0
    except OSError:  # the transport's own write reports it (connection lost)
        writer.write(b"".join(parts))
        return
    if sent == 0:
        writer.write(b"".join(parts))
        return
    if sent == sum(map(len, parts)):  # the usual case: the socket took it all
        return
    rest: list[bytes | memoryview] = []
    for part in parts:
        if sent >= len(part):
            sent -= len(part)
        elif sent:
            rest.append(memoryview(part)[sent:])
            sent = 0
        else:
            rest.append(part)
    if rest:
        writer.write(b"".join(rest))


class MailqServer:
    """The MAILQ v2 server over a scheduler's ``QueueView`` and ``QueueOperations``."""

    def __init__(
        self,
        view: QueueView,
        ops: QueueOperations,
        config: ServerConfig,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.service = Service(
            view,
            ops,
            clock,
            strict_counters=config.strict_counters,
            report_cache_bytes=config.report_cache_bytes,
        )
        self._servers: list[asyncio.Server] = []
        self._sockets: list[socket.socket] = []
        self._unix_paths: list[str] = []
        self._sessions: set[_Session] = set()
        self._challenges = 0
        self._closing = False
        self._started = False
        self._closed: asyncio.Event | None = None
        self._shutdown_task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._auth_cache: tuple[tuple[int, int, int, int], AuthFile] | None = None
        self.throttle = AuthThrottle(
            config.auth_free_failures,
            config.auth_delay,
            config.auth_max_delay,
            config.auth_forget,
        )
        self.log_limiter = PeerLogLimiter(config.log_burst, config.log_rate)

    # -- lifecycle ---------------------------------------------------------------------

    async def start(
        self, specs: Sequence[str] = (), sockets: Sequence[socket.socket] = ()
    ) -> None:
        """Bind ``specs`` (ListenError on failure) and serve them plus ``sockets``."""
        if self._started:
            raise RuntimeError("MailqServer already started")
        self._started = True
        self._loop = asyncio.get_running_loop()
        self._closed = asyncio.Event()
        created: list[socket.socket] = []
        try:
            for spec in specs:
                created.extend(
                    bind_listeners(
                        spec,
                        self.config.unix_mode,
                        self.config.unix_owner,
                        self.config.unix_group,
                    )
                )
        except BaseException:
            for sock in created:
                sock.close()
            raise
        for sock in created:
            if sock.family == socket.AF_UNIX:
                self._unix_paths.append(str(sock.getsockname()))
        for sock in [*created, *sockets]:
            sock.setblocking(False)
            if sock.family == socket.AF_UNIX:
                srv = await asyncio.start_unix_server(
                    self._on_connect, sock=sock, backlog=BACKLOG
                )
            else:
                srv = await asyncio.start_server(
                    self._on_connect, sock=sock, backlog=BACKLOG
                )
            self._servers.append(srv)
            self._sockets.append(sock)
            logger.info("MAILQ v2 listening on %s", describe_socket(sock))
        for name in LIMITED_LOGGERS:
            logging.getLogger(name).addFilter(self.log_limiter)
        problems = []
        with contextlib.suppress(OSError):
            from mailq.server.authfile import check_auth_file_permissions

            problems = check_auth_file_permissions(self.config.authfile)
        for problem in problems:
            logger.warning("%s", problem)

    @property
    def addresses(self) -> list[str]:
        """Bound addresses: ``127.0.0.1:1174``, ``[::]:174``, ``UNIX:/path``."""
        return [describe_socket(s) for s in self._sockets if s.fileno() >= 0]

    @property
    def sockets(self) -> list[socket.socket]:
        return list(self._sockets)

    @property
    def session_count(self) -> int:
        return len(self._sessions)

    def close(self) -> None:
        """Stop accepting; let running replies finish within ``graceful_timeout``.

        Call it from the server's event loop (``loop.call_soon_threadsafe`` otherwise).
        """
        if self._closing or self._loop is None:
            return
        self._closing = True
        for srv in self._servers:
            srv.close()
        for session in list(self._sessions):
            session.request_shutdown()
        self._shutdown_task = self._loop.create_task(self._finish())

    async def _finish(self) -> None:
        tasks = [s.task for s in self._sessions if s.task is not None]
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=self.config.graceful_timeout)
            for session in list(self._sessions):
                if session.task in pending:
                    session.cancel()
            if pending:
                await asyncio.wait(pending)
        for srv in self._servers:
            await srv.wait_closed()
        for path in self._unix_paths:
            with contextlib.suppress(OSError):
                os.unlink(path)
        for name in LIMITED_LOGGERS:
            logging.getLogger(name).removeFilter(self.log_limiter)
        if self._closed is not None:
            self._closed.set()
        logger.info("MAILQ v2 server closed")

    async def wait_closed(self) -> None:
        """Wait until ``close()`` has finished every session and listener."""
        if self._shutdown_task is None:
            if self._closed is not None:
                await self._closed.wait()
            return
        await asyncio.shield(self._shutdown_task)

    async def serve_forever(self) -> None:
        """Serve until :meth:`close` is called (from a signal handler, say)."""
        if not self._started:
            raise RuntimeError("call start() first")
        assert self._closed is not None
        await self._closed.wait()

    async def __aenter__(self) -> MailqServer:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
        await self.wait_closed()

    # -- sessions ----------------------------------------------------------------------

    def next_challenge_number(self) -> int:
        self._challenges += 1
        return self._challenges

    def load_auth(self) -> AuthFile | None:
        """The auth file as it is now (ZMailer re-reads it for every connection and AUTH).

        The file is stat()ed every time and re-parsed whenever its inode, size, mtime or
        ctime changed, so edits take effect at once. None if it cannot be read.
        """
        try:
            st = os.stat(self.config.authfile)
            key = (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
            if self._auth_cache is not None and self._auth_cache[0] == key:
                return self._auth_cache[1]
            auth = read_auth_file(self.config.authfile)
        except (AuthFileError, OSError) as exc:
            self._auth_cache = None
            logger.warning("auth file unreadable, refusing everybody: %s", exc)
            return None
        self._auth_cache = (key, auth)
        return auth

    def _make_room(self) -> bool:
        """True if a new connection may come in, closing a squatter at the hard cap.

        Up to ``max_sessions + 1`` sessions are served as in ZMailer, and up to
        ``reserved_sessions`` more on probation (see :meth:`admit`). At that hard cap we
        first close the oldest session that has not authenticated after
        ``PRE_AUTH_GRACE`` seconds, else the one that has made no progress (nothing
        read, no write drained) for the longest time, if that is at least
        ``STALL_GRACE`` seconds; only then is the newcomer refused (silently, B11).
        """
        live = self._live()
        if len(live) < self.config.max_sessions + 1 + self.config.reserved_sessions:
            return True
        now = time.monotonic()
        waiting = [
            s for s in live if not s.authenticated and now - s.born >= PRE_AUTH_GRACE
        ]
        if waiting:
            victim = min(waiting, key=lambda s: s.born)
            why = "not authenticated"
        else:
            victim = min(live, key=lambda s: s.progress)
            if now - victim.progress < STALL_GRACE:
                return False
            why = "no progress"
        logger.info(
            "%s closed to make room (%s for %.1fs)",
            victim.where,
            why,
            now - (victim.born if why == "not authenticated" else victim.progress),
        )
        victim.evict()
        return True

    def _live(self, but: _Session | None = None) -> list[_Session]:
        return [s for s in self._sessions if not s.evicted and s is not but]

    def _over(self, session: _Session) -> tuple[bool, list[_Session]]:
        """Whether ``session`` is past a limit, and the sessions it may displace."""
        others = self._live(session)
        same = [s for s in others if s.key == session.key]
        cap = self.config.max_per_peer
        if cap and len(same) >= cap:
            return True, same
        return len(others) >= self.config.max_sessions + 1, others

    def admit(self, session: _Session) -> None:
        """A new session: served, or served on probation (past a limit)."""
        over, _ = self._over(session)
        session.probation = over
        if over:
            logger.info("%s admitted on probation (sessions full)", session.where)

    def seat(self, session: _Session, rights: Right) -> bool:
        """``session`` authenticated with ``rights``: may it stay?

        A session on probation stays only if it can displace an open one that has
        strictly fewer rights (or has not authenticated for ``AUTH_GRACE`` seconds),
        from the same address when that address is at its cap; the one with the fewest
        rights, idle the longest, is closed. So low-right sessions can never starve
        users with more rights, and one address cannot take every seat.
        """
        session.rights = rights
        over, pool = self._over(session)
        if not over:
            session.probation = False
            return True
        now = time.monotonic()
        candidates = [
            s
            for s in pool
            if (s.authenticated and _fewer(s.rights, rights))
            or (not s.authenticated and now - s.born >= AUTH_GRACE)
        ]
        if not candidates:
            logger.info(
                "%s AUTH ok but refused: sessions full, none with fewer rights",
                session.where,
            )
            return False
        victim = min(
            candidates,
            key=lambda s: (_rank(s.rights) if s.authenticated else -1, s.progress),
        )
        logger.info(
            "%s closed to make room for %s with more rights",
            victim.where,
            session.where,
        )
        victim.evict()
        session.probation = False
        return True

    async def _on_connect(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self.service.count("Connects")
        if self._closing or not self._make_room():
            logger.info(
                "connection refused: %d sessions open (limit %d + 1)",
                len(self._sessions),
                self.config.max_sessions,
            )
            writer.transport.abort()  # silently, no bytes (B11 keep)
            return
        sock = writer.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        session = _Session(self, reader, writer)
        self._sessions.add(session)
        self.service.set_parallel(len(self._sessions))
        try:
            await session.run()
        finally:
            self.log_limiter.flush(session.key)
            self._sessions.discard(session)
            self.service.set_parallel(len(self._sessions))
            if session.hard_cancel:
                writer.transport.abort()
            else:
                flushing = writer.transport.get_write_buffer_size() > 0
                writer.close()  # with nothing left to send the socket closes at once
                if flushing:
                    with contextlib.suppress(ConnectionError, OSError):
                        await writer.wait_closed()
