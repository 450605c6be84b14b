"""The monitor endpoints' HTTP server fuzzed over real sockets (hypothesis): whatever
a client sends, in whatever chunks, the answer is one well-formed HTTP/1.1 response (or
nothing, when the client sent nothing complete and closed), nothing is logged as an
internal error and no connection task is left behind."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re

from hypothesis import HealthCheck, given, settings, strategies as st

from mailq.server.http import Response
from mailq.server.httpshell import MonitorServer

_STATUS = re.compile(rb"HTTP/1\.1 (\d{3}) [A-Za-z ]+\r\n")
_piece = st.one_of(
    st.sampled_from(
        [
            b"GET",
            b"HEAD",
            b"POST",
            b"OPTIONS",
            b" ",
            b"/metrics",
            b"/ready",
            b"/x",
            b"HTTP/1.1",
            b"HTTP/1.0",
            b"HTTP/9.9",
            b"\r\n",
            b"\n",
            b"\r",
            b"Host: a",
            b"Content-Length: 3",
            b"Transfer-Encoding: chunked",
            b":",
            b"\x00",
        ]
    ),
    st.binary(max_size=20),
)
streams = st.lists(_piece, max_size=25).map(b"".join)


async def exchange(addr: str, data: bytes, cuts: list[int], close: bool) -> bytes:
    host, _, port = addr.rpartition(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        pos = 0
        with contextlib.suppress(ConnectionError):
            for cut in [*sorted(c % (len(data) + 1) for c in cuts), len(data)]:
                if cut > pos:
                    writer.write(data[pos:cut])
                    await writer.drain()
                    pos = cut
            if close:
                writer.write_eof()
            async with asyncio.timeout(5):
                return await reader.read()
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
    return b""


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(streams, st.lists(st.integers(0, 400), max_size=4), st.booleans())
def test_fuzz_monitor_server(data: bytes, cuts: list[int], close: bool) -> None:
    errors: list[logging.LogRecord] = []

    class Catch(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if record.levelno >= logging.ERROR:
                errors.append(record)

    async def main() -> tuple[bytes, int]:
        server = MonitorServer(
            {"/metrics": lambda r: Response(200, b"m 1\n")}, timeout=0.2
        )
        await server.start("127.0.0.1:0")
        try:
            out = await exchange(server.addresses[0], data, cuts, close)
        finally:
            server.close()
            await server.wait_closed()
        others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        return out, len(others)

    handler = Catch()
    logging.getLogger("mailq").addHandler(handler)
    try:
        out, tasks = asyncio.run(main())
    finally:
        logging.getLogger("mailq").removeHandler(handler)
    assert tasks == 0
    assert not errors
    if out:
        m = _STATUS.match(out)
        assert m, out[:80]
        head, sep, body = out.partition(b"\r\n\r\n")
        assert sep
        length = int(re.search(rb"\r\nContent-Length: (\d+)\r\n", head + b"\r\n")[1])  # type: ignore[index]
        assert len(body) in (0, length)
