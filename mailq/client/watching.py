"""``mailq --watch [--where FILTER]``: print the scheduler's delivery events as they happen.

Sends ``WATCH [WHERE FILTER]`` (docs/monitoring.md) and copies every event line to stdout
until the server ends the stream or the user presses Ctrl-C, which sends the stop line,
reads the end of the stream and says ``QUIT``. Exit 0 after Ctrl-C, 1 if the server
refused the command, 69/75/77 for connection, protocol and login failures.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal

import click

from mailq.client.errors import (
    EX_NOPERM,
    EX_OK,
    EX_REFUSED,
    EX_TEMPFAIL,
    EX_UNAVAILABLE,
)
from mailq.protocol.auth import authenticator
from mailq.protocol.lines import unstuff_line

__all__ = ["run_watch"]


async def _open(
    host: str, port: int | str
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    if isinstance(port, str):
        return await asyncio.open_unix_connection(port)
    return await asyncio.open_connection(host, port)


async def _watch(
    host: str, port: int | str, user: str, password: str, where: str | None
) -> int:
    place = port if isinstance(port, str) else f"{host} port {port}"
    try:
        reader, writer = await _open(host, port)
    except OSError as exc:
        click.echo(f"mailq: {place}: connect failed: {exc.strerror or exc}", err=True)
        return EX_UNAVAILABLE
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGINT, stop.set)
    try:
        await reader.readline()
        challenge = (await reader.readline()).decode().rstrip("\n")
        if not challenge.startswith("220 MAILQ-V2-CHALLENGE:"):
            click.echo(f"mailq: {place}: refused access: {challenge}", err=True)
            return EX_NOPERM
        writer.write(f"AUTH {user} {authenticator(challenge, password)}\n".encode())
        reply = (await reader.readline()).decode().rstrip("\n")
        if not reply.startswith("+"):
            click.echo(f"mailq: {place}: User '{user}' not accepted: {reply}", err=True)
            return EX_NOPERM
        writer.write(f"WATCH WHERE {where}\n".encode() if where else b"WATCH\n")
        reply = (await reader.readline()).decode().rstrip("\n")
        if reply != "+OK until LF.LF":
            click.echo(f"mailq: {place}: {reply}", err=True)
            return EX_REFUSED
        return await _copy(reader, writer, stop)
    except (OSError, asyncio.IncompleteReadError) as exc:
        click.echo(f"mailq: {place}: {exc}", err=True)
        return EX_TEMPFAIL
    finally:
        loop.remove_signal_handler(signal.SIGINT)
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


async def _copy(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, stop: asyncio.Event
) -> int:
    stopping = asyncio.ensure_future(stop.wait())
    try:
        while True:
            line = asyncio.ensure_future(reader.readline())
            await asyncio.wait({line, stopping}, return_when=asyncio.FIRST_COMPLETED)
            if not line.done():
                writer.write(b"\n")  # the stop line; the rest of the stream follows
                await line
            raw = line.result()
            if not raw:
                return EX_TEMPFAIL  # the server went away mid-stream
            text = raw.decode("utf-8", "replace").rstrip("\n")
            if text == ".":
                writer.write(b"QUIT\n")
                return EX_OK
            click.echo(unstuff_line(text))  # flushed per line by click
    finally:
        stopping.cancel()


def run_watch(
    host: str, port: int | str, user: str, password: str, where: str | None
) -> int:
    return asyncio.run(_watch(host, port, user, password, where))
