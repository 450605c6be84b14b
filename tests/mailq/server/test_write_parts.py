"""``shell.write_parts``: a reply's pieces gathered into one ``writev``, never reordered.

Over real loopback sockets: pieces bigger than the socket buffers (the kernel takes part
of them, the transport the rest), a second reply while the transport still holds bytes
of the first, a socket that is already closed, and the whole cached ``SHOW THREAD``
path through the server.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator

import pytest

from mailq.server.shell import GATHER_MAX, write_parts


@contextlib.asynccontextmanager
async def _connected() -> AsyncIterator[
    tuple[asyncio.StreamReader, asyncio.StreamWriter, asyncio.StreamWriter]
]:
    """(client reader, client writer, server-side writer), all closed afterwards."""
    accepted: asyncio.Future[asyncio.StreamWriter] = (
        asyncio.get_running_loop().create_future()
    )

    async def on_connect(_r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        accepted.set_result(w)

    server = await asyncio.start_server(on_connect, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    out = await accepted
    try:
        yield reader, writer, out
    finally:
        writer.close()
        out.close()
        server.close()


async def _received(
    reader: asyncio.StreamReader, out: asyncio.StreamWriter, size: int
) -> bytes:
    """The client's next ``size`` bytes, while the server side drains."""
    got, _ = await asyncio.gather(reader.readexactly(size), out.drain())
    return got


def _parts(seed: int, sizes: list[int]) -> list[bytes]:
    return [bytes([(seed + i) % 251]) * size for i, size in enumerate(sizes)]


@pytest.mark.asyncio
async def test_pieces_bigger_than_the_socket_buffers_arrive_whole_and_in_order() -> (
    None
):
    async with _connected() as (reader, _writer, out):
        out.get_extra_info("socket").setsockopt(
            socket.SOL_SOCKET, socket.SO_SNDBUF, 65536
        )
        first = _parts(1, [17, 3 << 20, 5, 2 << 20, 1])  # the socket takes only part
        second = _parts(7, [40_000, 9, 1 << 20])  # while the transport holds the rest
        write_parts(out, first)
        assert out.transport.get_write_buffer_size() > 0  # the remainder, buffered
        write_parts(out, second)
        write_parts(out, [b"end"])
        expected = b"".join(first + second) + b"end"
        assert await _received(reader, out, len(expected)) == expected


@pytest.mark.asyncio
async def test_many_small_pieces_and_single_pieces() -> None:
    async with _connected() as (reader, _writer, out):
        many = _parts(3, [1 + i % 7 for i in range(GATHER_MAX * 3)])  # joined instead
        write_parts(out, many)
        write_parts(out, [b"x" * 100_000])
        write_parts(out, [b"a", b"b"])
        expected = b"".join(many) + b"x" * 100_000 + b"ab"
        assert await _received(reader, out, len(expected)) == expected


async def _write_until_refused(out: asyncio.StreamWriter) -> None:
    for _ in range(1000):  # the reset is seen at the next send or the next loop turn
        write_parts(out, [b"x" * 70_000, b"y" * 10])
        await out.drain()
        await asyncio.sleep(0)


@pytest.mark.asyncio
async def test_a_peer_gone_is_reported_by_the_transport_not_raised() -> None:
    async with _connected() as (_reader, writer, out):
        writer.transport.abort()  # the peer resets the connection
        with pytest.raises(ConnectionError):
            await _write_until_refused(out)
