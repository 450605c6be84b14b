"""The asyncio shell of the monitor endpoints (``/metrics``, ``/ready``, ``/healthy``).

One request per connection: read the head (at most :data:`~mailq.server.http.MAX_HEAD`
bytes, within ``timeout`` seconds), answer through :func:`~mailq.server.http.route`,
close. At most ``max_connections`` are served at once; more are closed at once. A handler
that raises gives a 500 (logged); a peer that is too slow gets a 408. The pure reader is
:mod:`mailq.server.http`.

Listener spec (``--metrics-listen``, ``PARAMmetrics-listen``): ``PORT`` or ``:PORT``
binds loopback (127.0.0.1); ``HOST:PORT`` and ``[V6]:PORT`` bind that address (use
``0.0.0.0:9174`` or ``[::]:9174`` to be reachable from elsewhere).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Mapping

from mailq.server.http import (
    Handler,
    HttpError,
    Request,
    RequestReader,
    Response,
    error_response,
    route,
)
from mailq.server.listeners import (
    ListenSpec,
    bind_listeners,
    describe_socket,
    parse_listen_spec,
)

__all__ = ["MonitorServer", "parse_monitor_spec"]

logger = logging.getLogger(__name__)


def parse_monitor_spec(text: str) -> ListenSpec:
    """``9174``/``:9174`` -> 127.0.0.1:9174; ``HOST:PORT``, ``[V6]:PORT`` as written."""
    text = text.strip()
    if text.startswith(":"):
        text = text[1:]
    if not text:
        raise ValueError("empty listener spec")
    spec = parse_listen_spec(text)
    if spec.kind == "tcp" and spec.host in (None, ""):
        spec = ListenSpec("tcp", port=spec.port, host="127.0.0.1")
    return spec


class MonitorServer:
    """Serve ``routes`` (path -> handler) over HTTP/1.1 on one listener spec."""

    def __init__(
        self,
        routes: Mapping[str, Handler],
        *,
        timeout: float = 10.0,
        max_connections: int = 32,
    ) -> None:
        self.routes = dict(routes)
        self.timeout = timeout
        self.max_connections = max_connections
        self._servers: list[asyncio.Server] = []
        self._sockets: list[socket.socket] = []
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self, spec: str) -> None:
        """Bind ``spec`` (:func:`parse_monitor_spec`; ValueError/ListenError on failure)."""
        for sock in bind_listeners(parse_monitor_spec(spec)):
            srv = await asyncio.start_server(self._on_connect, sock=sock)
            self._servers.append(srv)
            self._sockets.append(sock)
            logger.info("monitor endpoints on http://%s/", describe_socket(sock))

    @property
    def addresses(self) -> list[str]:
        return [describe_socket(s) for s in self._sockets if s.fileno() >= 0]

    def close(self) -> None:
        for srv in self._servers:
            srv.close()
        for task in self._tasks:
            task.cancel()

    async def wait_closed(self) -> None:
        if self._tasks:
            await asyncio.wait(list(self._tasks))
        for srv in self._servers:
            await srv.wait_closed()

    async def _on_connect(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        task = asyncio.current_task()
        if task is None or len(self._tasks) >= self.max_connections:
            writer.transport.abort()
            return
        self._tasks.add(task)
        try:
            await self._serve(reader, writer)
        except (OSError, asyncio.CancelledError):
            pass
        finally:
            self._tasks.discard(task)
            with contextlib.suppress(OSError):
                writer.close()

    async def _serve(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        parser = RequestReader()
        head_only = False
        try:
            async with asyncio.timeout(self.timeout):
                while True:
                    request = parser.next_request()
                    if request is not None:
                        break
                    data = await reader.read(4096)
                    if not data:
                        return
                    parser.receive_data(data)
            head_only = request.method == "HEAD"
            response = self._respond(request)
        except HttpError as exc:
            response = error_response(exc)
        except TimeoutError:
            response = Response(408, b"408 request timeout\n")
        writer.write(response.to_bytes(head_only))
        async with asyncio.timeout(self.timeout):
            await writer.drain()

    def _respond(self, request: Request) -> Response:
        try:
            return route(request, self.routes)
        except Exception:  # a handler bug must never kill the listener
            logger.exception("monitor endpoint %s failed", request.path)
            return Response(500, b"500 internal error\n")
