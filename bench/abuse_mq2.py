"""MAILQ v2 abuse figures (issue 14): lockout, AUTH brute force, log amplification.

    python bench/abuse_mq2.py [--seconds 20] [--holders 25] [--guessers 16]
                              [--junk-mib 1]

Each part runs a real server on 127.0.0.1 port 0 (a fake queue) in this process, twice:
with today's defaults and with the defence switched off (what ZMailer and we did
before), and prints one line per run.

* **lockout**: ``--holders`` clients, each from its own loopback address
  (127.0.0.2, ...), log in as ``nobody`` (ZMailer's shipped auth file lets anyone do
  that) and hold their session with a ``SHOW SNMP`` every 0.2 s, reconnecting at once
  when closed; meanwhile an admin from 127.0.0.1 loops connect, AUTH, ``SHOW SNMP``,
  ``QUIT``. Prints the admin's success rate.
* **brute force**: ``--guessers`` parallel connections from one address send wrong
  AUTHs as fast as replies come (reconnecting after the per-session budget). Prints
  the guesses answered per second over the run.
* **log amplification**: ``--junk-mib`` MiB of junk lines before AUTH on one
  connection; prints the log bytes written (INFO level, the daemon's default) per
  junk byte.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mailq.protocol.auth import authenticator
from mailq.server.shell import MailqServer, ServerConfig
from tests.mailq.server.fakeview import FakeOps
from tests.reliability.conftest import NOW, big_queue

AUTH = "nobody:nobody:SNMP:\nroot:r00t:ALL:[127.0.0.1]\n"


class Client:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, port: int, source: str) -> Client:
        r, w = await asyncio.open_connection(
            "127.0.0.1", port, local_addr=(source, 0), limit=1 << 20
        )
        return cls(r, w)

    async def login(self, user: str, password: str) -> bytes:
        await self.reader.readline()
        challenge = (await self.reader.readline()).decode().rstrip("\n")
        if not challenge or "NO ACCESS" in challenge:
            return b""
        digest = authenticator(challenge, password)
        self.writer.write(f"AUTH {user} {digest}\n".encode())
        return await self.reader.readline()

    async def snmp(self) -> bool:
        self.writer.write(b"SHOW SNMP\n")
        if await self.reader.readline() != b"+OK until LF.LF\n":
            return False
        while (line := await self.reader.readline()) not in (b".\n", b""):
            pass
        return line == b".\n"

    def close(self) -> None:
        self.writer.transport.abort()


async def start(**config: object) -> tuple[MailqServer, int, str]:
    with tempfile.NamedTemporaryFile("w", prefix="abuse-auth-", delete=False) as auth:
        auth.write(AUTH)
    queue = big_queue(20, 2)
    server = MailqServer(
        queue,
        FakeOps(queue),
        ServerConfig.from_mapping({"authfile": auth.name, **config}),
        clock=lambda: float(NOW),
    )
    await server.start(["127.0.0.1:0"])
    return server, int(server.addresses[0].rpartition(":")[2]), auth.name


async def stop(server: MailqServer, authfile: str) -> None:
    server.close()
    await server.wait_closed()
    os.unlink(authfile)


# -- lockout -------------------------------------------------------------------------


async def lockout(seconds: float, holders: int, **config: object) -> str:
    server, port, authfile = await start(**config)
    deadline = time.monotonic() + seconds
    held = 0

    async def holder(n: int) -> None:
        nonlocal held
        source = f"127.0.0.{2 + n}"
        while time.monotonic() < deadline:
            client = None
            try:
                client = await Client.open(port, source)
                if await client.login("nobody", "nobody") != b"+OK\n":
                    await asyncio.sleep(0.05)
                    continue
                held += 1
                while time.monotonic() < deadline and await client.snmp():  # noqa: ASYNC110
                    await asyncio.sleep(0.2)  # a client's pacing, not a wait
            except (OSError, asyncio.IncompleteReadError):
                await asyncio.sleep(0.05)
            finally:
                if client is not None:
                    client.close()

    async def admin() -> tuple[int, int]:
        ok = tries = 0
        await asyncio.sleep(min(2.0, seconds / 4))  # let the holders fill the server
        while time.monotonic() < deadline:
            tries += 1
            client = None
            try:
                async with asyncio.timeout(5):
                    client = await Client.open(port, "127.0.0.1")
                    if await client.login("root", "r00t") == b"+OK\n":
                        ok += await client.snmp()
            except (OSError, TimeoutError, asyncio.IncompleteReadError):
                pass
            finally:
                if client is not None:
                    client.close()
            await asyncio.sleep(0.1)
        return ok, tries

    results = await asyncio.gather(
        admin(), *(holder(n) for n in range(holders)), return_exceptions=True
    )
    await stop(server, authfile)
    ok, tries = results[0] if isinstance(results[0], tuple) else (0, 0)
    rate = 100.0 * ok / tries if tries else 0.0
    return (
        f"admin logins {ok}/{tries} ({rate:.0f} %) while {holders} 'nobody' sessions "
        f"held the server ({held} 'nobody' logins)"
    )


# -- brute force ---------------------------------------------------------------------


async def brute(seconds: float, guessers: int, **config: object) -> str:
    server, port, authfile = await start(**config)
    deadline = time.monotonic() + seconds
    guesses = 0

    async def guesser() -> None:
        nonlocal guesses
        while time.monotonic() < deadline:
            client = None
            try:
                client = await Client.open(port, "127.0.0.9")
                await client.reader.readline()
                await client.reader.readline()
                while time.monotonic() < deadline:
                    client.writer.write(b"AUTH root 00000000000000000000000000000000\n")
                    async with asyncio.timeout(max(0.1, deadline - time.monotonic())):
                        line = await client.reader.readline()
                    if not line:
                        break
                    guesses += 1
            except (OSError, TimeoutError, asyncio.IncompleteReadError):
                pass
            finally:
                if client is not None:
                    client.close()

    started = time.monotonic()
    await asyncio.gather(*(guesser() for _ in range(guessers)))
    elapsed = time.monotonic() - started
    await stop(server, authfile)
    return (
        f"{guesses} wrong AUTHs answered in {elapsed:.0f} s: {guesses / elapsed:.1f}/s"
    )


# -- log amplification ---------------------------------------------------------------


class ByteCounter(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
        )
        self.bytes = 0

    def emit(self, record: logging.LogRecord) -> None:
        self.bytes += len(self.format(record)) + 1


async def logamp(junk_mib: float, **config: object) -> str:
    counter = ByteCounter()
    root = logging.getLogger()
    root.setLevel(logging.INFO)
    root.addHandler(counter)
    try:
        server, port, authfile = await start(**config)
        junk = bytearray()
        n = 0
        while len(junk) < junk_mib * (1 << 20):
            junk += b"JUNK%08d \x01\xfe garbage\n" % n
            n += 1
        client = await Client.open(port, "127.0.0.1")
        await client.reader.readline()
        await client.reader.readline()
        client.writer.write(bytes(junk) + b"QUIT\n")
        with contextlib.suppress(OSError, TimeoutError):
            async with asyncio.timeout(120):
                while await client.reader.read(1 << 16):
                    pass
        client.close()
        while server.session_count:  # noqa: ASYNC110 - no event to wait on
            await asyncio.sleep(0.01)
        await stop(server, authfile)
    finally:
        root.removeHandler(counter)
    return (
        f"{len(junk)} junk bytes ({n} lines) -> {counter.bytes} log bytes: "
        f"{counter.bytes / len(junk):.4f} log bytes per junk byte"
    )


async def run(args: argparse.Namespace) -> None:
    off = {"reserved_sessions": 0, "max_per_peer": 0}
    print("lockout, defaults         :", await lockout(args.seconds, args.holders))
    print(
        "lockout, defence off      :", await lockout(args.seconds, args.holders, **off)
    )
    never = {"auth_free_failures": 1 << 30}
    print("brute force, defaults     :", await brute(args.seconds, args.guessers))
    print(
        "brute force, defence off  :", await brute(args.seconds, args.guessers, **never)
    )
    flat = {"log_burst": 1 << 30}
    print("log amplification, default:", await logamp(args.junk_mib))
    print("log amplification, off    :", await logamp(args.junk_mib, **flat))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=20.0)
    p.add_argument("--holders", type=int, default=25)
    p.add_argument("--guessers", type=int, default=16)
    p.add_argument("--junk-mib", type=float, default=1.0)
    asyncio.run(run(p.parse_args()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
