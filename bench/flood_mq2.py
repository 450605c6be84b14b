"""MAILQ v2 under attack: connection flood, slow-loris readers, garbage; a legit client.

    python bench/flood_mq2.py [--seconds 20] [--flooders 64] [--loris 8]

One server on 127.0.0.1 port 0 (in this process, with the legit client; the
attackers run in a second process) (ZMailer's limit: 20 sessions, so 21 served)
over a fake queue with one very large thread (a ~10 MB ``SHOW THREAD`` dump). At the
same time, for ``--seconds``:

* ``--flooders`` tasks connect, send a bit of garbage (binary, an over-long line, a bad
  AUTH) and drop the connection, as fast as they can;
* ``--loris`` slow-loris readers log in, ask for the 10 MB dump and never read it (they
  are replaced when the server's lifetime cuts them);
* one legitimate client loops: connect, AUTH, SHOW SNMP, QUIT, timing each round.

Prints the flood rate held (connections/s accepted and refused), the legit client's
rounds, failures and latency p50/p99/max (including retries after a refused connect),
the server's RSS before/after and the sessions left.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import multiprocessing
import multiprocessing.queues
import os
import random
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mailq.protocol.auth import authenticator
from mailq.server.shell import MailqServer, ServerConfig
from tests.mailq.server.fakeview import FakeOps
from tests.reliability.conftest import (
    AUTH_TEXT,
    FAT_HOST,
    NOW,
    PASSWORD,
    USER,
    big_queue,
)


def rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


class Stats:
    def __init__(self) -> None:
        self.flood_connects = 0
        self.flood_refused = 0
        self.loris = 0
        self.legit: list[float] = []
        self.legit_failures = 0
        self.legit_retries = 0


async def flooder(host: str, port: int, stop: float, stats: Stats, seed: int) -> None:
    rng = random.Random(seed)
    garbage = [
        b"\x00\xff\xfe garbage \x01\n",
        b"A" * 20000,
        b"AUTH watcher 00000000000000000000000000000000\n",
        b"SHOW SNMP\n",
    ]
    while time.monotonic() < stop:
        try:
            reader, writer = await asyncio.open_connection(host, port)
        except OSError:
            await asyncio.sleep(0.01)
            continue
        stats.flood_connects += 1
        try:
            writer.write(rng.choice(garbage))
            first = await asyncio.wait_for(reader.read(20), 1.0)
            if not first:
                stats.flood_refused += 1
        except ConnectionResetError:  # refused at the limit: closed with no bytes
            stats.flood_refused += 1
        except (OSError, TimeoutError):
            pass
        finally:
            writer.transport.abort()


async def loris(host: str, port: int, stop: float, stats: Stats) -> None:
    loop = asyncio.get_running_loop()
    while time.monotonic() < stop:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.setblocking(False)
        try:
            await loop.sock_connect(sock, (host, port))
            data = b""
            while data.count(b"\n") < 2:
                chunk = await asyncio.wait_for(loop.sock_recv(sock, 4096), 5)
                if not chunk:
                    raise ConnectionError("refused")
                data += chunk
            challenge = data.split(b"\n")[1].decode()
            auth = f"AUTH {USER} {authenticator(challenge, PASSWORD)}\n"
            await loop.sock_sendall(sock, auth.encode())
            await asyncio.wait_for(loop.sock_recv(sock, 64), 5)
            await loop.sock_sendall(sock, f"SHOW THREAD smtp {FAT_HOST}\n".encode())
            stats.loris += 1
            # never read; wait until the server's lifetime cuts us (or the end)
            while time.monotonic() < stop:
                await asyncio.sleep(0.5)
                with contextlib.suppress(BlockingIOError):
                    if sock.recv(1, socket.MSG_PEEK) == b"":
                        break
        except (OSError, TimeoutError, ConnectionError):
            await asyncio.sleep(0.05)
        finally:
            sock.close()


async def legit_round(host: str, port: int, stats: Stats) -> None:
    t0 = time.perf_counter()
    for attempt in range(50):
        try:
            reader, writer = await asyncio.open_connection(host, port)
        except OSError:
            await asyncio.sleep(0.01)
            continue
        try:
            version = await asyncio.wait_for(reader.readline(), 5)
            if not version:  # refused: every slot taken; try again
                stats.legit_retries += 1
                await asyncio.sleep(0.01 * (attempt + 1))
                continue
            challenge = (await reader.readline()).decode().rstrip("\n")
            digest = authenticator(challenge, PASSWORD)
            writer.write(f"AUTH {USER} {digest}\nSHOW SNMP\nQUIT\n".encode())
            data = await asyncio.wait_for(reader.read(), 5)
            if (
                not data.startswith(b"+OK\n+OK until LF.LF\n")
                or b"+Bye bye" not in data
            ):
                raise ConnectionError(f"bad reply {data[:60]!r}")
            stats.legit.append(time.perf_counter() - t0)
            return
        except (OSError, TimeoutError, ConnectionError):
            stats.legit_retries += 1
        finally:
            writer.transport.abort()
    stats.legit_failures += 1


def attack(
    host: str,
    port: int,
    seconds: float,
    flooders: int,
    lorises: int,
    results: multiprocessing.queues.Queue[tuple[int, int, int]],
) -> None:
    """The attacking process: flooders and slow-loris readers for ``seconds``."""

    async def main() -> Stats:
        stats = Stats()
        stop = time.monotonic() + seconds
        await asyncio.gather(
            *(flooder(host, port, stop, stats, i) for i in range(flooders)),
            *(loris(host, port, stop, stats) for _ in range(lorises)),
        )
        return stats

    stats = asyncio.run(main())
    results.put((stats.flood_connects, stats.flood_refused, stats.loris))


async def run(args: argparse.Namespace) -> int:
    with tempfile.NamedTemporaryFile("w", prefix="flood-auth-", delete=False) as f:
        f.write(AUTH_TEXT)
    queue = big_queue(20, 2, fat=20000)
    server = MailqServer(
        queue,
        FakeOps(queue),
        ServerConfig(authfile=f.name, lifetime=args.lifetime),
        clock=lambda: float(NOW),
    )
    await server.start(["127.0.0.1:0"])
    host, _, port_text = server.addresses[0].rpartition(":")
    port = int(port_text)
    gc.collect()
    rss_before = rss_kib()
    stats = Stats()
    start = time.monotonic()
    stop = start + args.seconds

    async def legit_loop() -> None:
        while time.monotonic() < stop:
            await legit_round(host, port, stats)
            await asyncio.sleep(0.05)

    # The attackers run in another process, so their own work does not slow the
    # server's (and the legit client's) event loop.
    ctx = multiprocessing.get_context("spawn")
    results: multiprocessing.queues.Queue[tuple[int, int, int]] = ctx.Queue()
    attacker = ctx.Process(
        target=attack,
        args=(host, port, args.seconds, args.flooders, args.loris, results),
    )
    attacker.start()
    await legit_loop()
    loop = asyncio.get_running_loop()
    flood_connects, flood_refused, loris_count = await loop.run_in_executor(
        None, results.get, True, args.seconds + 30
    )
    attacker.join(10)
    stats.flood_connects, stats.flood_refused, stats.loris = (
        flood_connects,
        flood_refused,
        loris_count,
    )
    elapsed = time.monotonic() - start
    gc.collect()
    rss_peak_after = rss_kib()
    end = time.monotonic() + 15
    while server.session_count and time.monotonic() < end:  # noqa: ASYNC110 - no event
        await asyncio.sleep(0.05)
    sessions_left = server.session_count
    server.close()
    await server.wait_closed()
    os.unlink(f.name)
    lat = sorted(stats.legit)
    p50 = statistics.median(lat) * 1000 if lat else float("nan")
    p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))] * 1000 if lat else float("nan")
    print(
        f"run                      : {elapsed:.1f} s, {args.flooders} flooders, {args.loris} slow-loris readers, lifetime {args.lifetime:g} s"
    )
    print(
        f"flood held               : {stats.flood_connects / args.seconds:.0f} connections/s "
        f"({stats.flood_connects} total, {stats.flood_refused} refused silently at the limit)"
    )
    print(
        f"slow-loris sessions      : {stats.loris} (each asked for a ~10 MB dump, read nothing)"
    )
    print(
        f"legit rounds             : {len(lat)} ok, {stats.legit_failures} failed, {stats.legit_retries} retries"
    )
    print(
        f"legit latency (ms)       : p50 {p50:.1f}  p99 {p99:.1f}  max {lat[-1] * 1000 if lat else float('nan'):.1f}"
    )
    print(
        f"RSS before / after flood : {rss_before} KiB / {rss_peak_after} KiB ({rss_peak_after - rss_before:+d} KiB)"
    )
    print(f"sessions left after flood: {sessions_left}")
    return 1 if stats.legit_failures or sessions_left else 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=20.0)
    p.add_argument("--flooders", type=int, default=64)
    p.add_argument("--loris", type=int, default=8)
    p.add_argument("--lifetime", type=float, default=90.0)
    return asyncio.run(run(p.parse_args()))


if __name__ == "__main__":
    sys.exit(main())
