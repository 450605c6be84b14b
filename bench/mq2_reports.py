"""Benchmark: MAILQ v2 report streaming on big queues (prints figures).

Usage: ``python bench/mq2_reports.py [--quick]``

A fake queue of 100,000 recipients in 10,000 threads, and one of 1,000,000 recipients
(10,000 threads x 100) for the full ``mailq``-style dump (THREADS2, then SHOW THREAD for
every thread). Each figure is measured against our ``MailqServer`` and, in the same
run, against a raw asyncio socket server that writes the same bytes (precomputed).
The server runs in its own thread and event loop, with a 1 ms ticker task measuring
the longest event-loop stall; the client uses blocking sockets in the main thread.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import resource
import socket
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mailq.auth import authenticator
from mailq.config import ServerConfig
from mailq.connection import MultilineReply, ServerConnection
from mailq.reports import thread_detail_report, threads2_report, threads_report
from mailq.server import MailqServer
from tests.mailq import fakeview

NOW = fakeview.START + 100


class LoopThread:
    """An event loop in a thread, with a ticker recording the longest stall."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.max_stall = 0.0
        self.run(self._start_ticker())

    async def _start_ticker(self) -> None:
        asyncio.get_running_loop().create_task(self._ticker())

    async def _ticker(self) -> None:
        last = time.perf_counter()
        while True:
            await asyncio.sleep(0.001)
            now = time.perf_counter()
            self.max_stall = max(self.max_stall, now - last - 0.001)
            last = now

    def run(self, coro: Coroutine[Any, Any, Any]) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result()


class RawServer:
    """Greets, then answers each known line with precomputed bytes."""

    def __init__(self, answers: dict[bytes, bytes]) -> None:
        self.answers = answers
        self.server: asyncio.Server | None = None

    async def start(self) -> str:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        host, port = self.server.sockets[0].getsockname()[:2]
        return f"{host}:{port}"

    async def _serve(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        writer.write(b"version zmailer 2.0\n220 MAILQ-V2-CHALLENGE: 1.2.3\n")
        while line := await reader.readline():
            key = line.split(b" ", 2)[0] if line.startswith(b"AUTH") else line
            writer.write(self.answers.get(key, b"+Bye bye\n"))
            await writer.drain()
            if line.startswith(b"QUIT"):
                break
        writer.close()


class Client:
    def __init__(self, address: str) -> None:
        host, port = address.rsplit(":", 1)
        t0 = time.perf_counter()
        self.sock = socket.create_connection((host, int(port)))
        self.buf = b""
        greeting = self._until(b"\n", count=2)
        self.greeting_latency = time.perf_counter() - t0
        self.challenge = greeting.split(b"\n")[1].decode()

    def _until(self, sep: bytes, count: int = 1) -> bytes:
        while self.buf.count(sep) < count:
            data = self.sock.recv(1 << 20)
            if not data:
                raise ConnectionError("closed")
            self.buf += data
        idx = -1
        for _ in range(count):
            idx = self.buf.index(sep, idx + 1)
        out, self.buf = self.buf[: idx + len(sep)], self.buf[idx + len(sep) :]
        return out

    def command(self, line: str) -> tuple[float, float, int]:
        """(time to first byte, time to the terminator, bytes)."""
        t0 = time.perf_counter()
        self.sock.sendall(line.encode() + b"\n")
        first = 0.0
        total = 0
        tail = b""
        while True:
            data = self.buf or self.sock.recv(1 << 20)
            self.buf = b""
            if not data:
                raise ConnectionError("closed")
            if not first:
                first = time.perf_counter() - t0
                if not data.startswith(b"+OK until"):
                    return first, first, len(data)
            total += len(data)
            tail = (tail + data)[-3:]
            if tail == b"\n.\n" or (total == 18 and data.endswith(b".\n")):
                return first, time.perf_counter() - t0, total

    def close(self) -> None:
        self.sock.close()


def _median(xs: list[float]) -> float:
    return statistics.median(xs) * 1000


def _auth(client: Client) -> None:
    client.command(f"AUTH admin {authenticator(client.challenge, 'adminpw')}")


def bench_view(title: str, queue: fakeview.FakeQueue, commands: list[str], repeat: int,
               dump: bool, authfile: Path) -> None:  # fmt: skip
    gc.collect()
    gc.freeze()  # a daemon holding millions of objects would do the same (see report)
    lt = LoopThread()
    server = MailqServer(queue, fakeview.FakeOps(queue), ServerConfig(authfile=authfile),
                         clock=lambda: NOW)  # fmt: skip
    lt.run(server.start(["127.0.0.1:0"]))
    answers = _precompute(queue, commands, dump)
    raw = RawServer(answers)
    raw_address = lt.run(raw.start())
    print(f"\n== {title}")
    for name, address in (("ours", server.addresses[0]), ("raw ", raw_address)):
        client = Client(address)
        _auth(client)
        for line in commands:
            lt.max_stall = 0.0
            times = [client.command(line) for _ in range(repeat)]
            print(
                f"{name} {line:<22} ttfb {_median([t[0] for t in times]):8.1f} ms"
                f"  total {_median([t[1] for t in times]):8.1f} ms"
                f"  {times[0][2] / 1e6:7.2f} MB  max loop stall {lt.max_stall * 1000:6.1f} ms"
            )
        if dump:
            lt.max_stall = 0.0
            rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            t0 = time.perf_counter()
            first = client.command("SHOW QUEUE THREADS2")
            size = first[2]
            for t in queue.all_threads():
                size += client.command(f"SHOW THREAD {t.channel} {t.host}")[2]
            elapsed = time.perf_counter() - t0
            rss1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            print(
                f"{name} full dump (THREADS2 + {len(queue.all_threads())} SHOW THREAD): "
                f"{elapsed:6.2f} s, {size / 1e6:6.1f} MB, THREADS2 ttfb {first[0] * 1000:.1f} ms,"
                f" max loop stall {lt.max_stall * 1000:.1f} ms, max RSS +{(rss1 - rss0) / 1024:.0f} MB"
            )
        client.close()
    lats = []
    for _ in range(50):
        c = Client(server.addresses[0])
        lats.append(c.greeting_latency)
        c.close()
    print(
        f"greeting latency (ours): median {_median(lats):.2f} ms, max {max(lats) * 1000:.2f} ms"
    )
    lt.loop.call_soon_threadsafe(server.close)
    time.sleep(0.1)
    lt.run(server.wait_closed())


def _precompute(
    queue: fakeview.FakeQueue, commands: list[str], dump: bool
) -> dict[bytes, bytes]:
    conn = ServerConnection("x")
    reports: dict[str, Callable[[], Any]] = {
        "SHOW QUEUE THREADS": lambda: threads_report(queue, NOW),
        "SHOW QUEUE THREADS2": lambda: threads2_report(queue, NOW),
    }
    answers = {b"AUTH": b"+OK\n"}
    for line in {*commands, "SHOW QUEUE THREADS2"}:
        answers[line.encode() + b"\n"] = conn.send(MultilineReply(reports[line]()))
    if dump:
        for t in queue.all_threads():
            key = f"SHOW THREAD {t.channel} {t.host}\n".encode()
            answers[key] = conn.send(
                MultilineReply(thread_detail_report(queue, t.channel, t.host, NOW))
            )
    return answers


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="smaller queues")
    args = parser.parse_args()
    scale = 10 if args.quick else 1
    with tempfile.TemporaryDirectory() as tmp:
        authfile = Path(tmp) / "scheduler.auth"
        authfile.write_text("admin:adminpw:ALL:[127.0.0.0]/8\n")
        authfile.chmod(0o600)
        q = fakeview.frozen_big_queue(10_000 // scale, 10, 1, NOW)
        bench_view("100k recipients, 10k threads", q,
                   ["SHOW QUEUE THREADS", "SHOW QUEUE THREADS2"], 5, False, authfile)  # fmt: skip
        q = fakeview.frozen_big_queue(10_000 // scale, 100, 1, NOW)
        bench_view("1M recipients, 10k threads (full dump)", q,
                   ["SHOW QUEUE THREADS2"], 1, True, authfile)  # fmt: skip


if __name__ == "__main__":
    main()
