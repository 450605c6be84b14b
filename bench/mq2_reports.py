"""Benchmark: MAILQ v2 report streaming on big queues (prints figures).

Usage: ``python bench/mq2_reports.py [--quick]``

A fake queue of 100,000 recipients in 10,000 threads, and one of 1,000,000 recipients
(10,000 threads x 100) for the full ``mailq``-style dump (THREADS2, then SHOW THREAD for
every thread). Each figure is measured against our ``MailqServer`` and, in the same
run, against a raw asyncio socket server that writes the same bytes (precomputed).
The servers run on this process's event loop, with a 1 ms ticker task measuring the
longest event-loop stall; the client is a separate process (blocking sockets), as a
real ``mailq`` is, so it never competes with the server for the GIL. The fake queue is
``gc.freeze()``d once built, as a daemon holding millions of objects should do.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import multiprocessing
import resource
import socket
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mailq.protocol.auth import authenticator
from mailq.protocol.connection import MultilineReply, ServerConnection
from mailq.server.config import ServerConfig
from mailq.server.reports import thread_detail_report, threads2_report, threads_report
from mailq.server.shell import MailqServer
from tests.mailq.server import fakeview

NOW = fakeview.START + 100


class StallMeter:
    """A 1 ms ticker task on the server's loop recording the longest stall.

    ``max_stall`` is wall-clock time between ticks (includes the OS running someone
    else); ``max_busy`` is the loop thread's own CPU time between ticks, i.e. the
    longest stretch the loop really spent in one step of our code.
    """

    def __init__(self) -> None:
        self.max_stall = 0.0
        self.max_busy = 0.0
        self.task = asyncio.get_running_loop().create_task(self._ticker())

    def reset(self) -> None:
        self.max_stall = self.max_busy = 0.0

    async def _ticker(self) -> None:
        last = time.perf_counter()
        last_cpu = time.thread_time()
        while True:
            await asyncio.sleep(0.001)
            now = time.perf_counter()
            cpu = time.thread_time()
            self.max_stall = max(self.max_stall, now - last - 0.001)
            self.max_busy = max(self.max_busy, cpu - last_cpu)
            last, last_cpu = now, cpu


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
    """Median in ms."""
    return statistics.median(xs) * 1000


def _auth(client: Client) -> None:
    client.command(f"AUTH admin {authenticator(client.challenge, 'adminpw')}")


Job = tuple[str, list[str], int, list[str] | None]
Result = tuple[list[tuple[float, float, int]], list[Any], list[float]]


def _client_process(pipe: Connection) -> None:
    """The load generator: runs each job it is sent, returns the timings."""
    while job := pipe.recv():
        pipe.send(_client_job(*job))


def _client_job(address: str, commands: list[str], repeat: int,
                dump: list[str] | None) -> Result:  # fmt: skip
    client = Client(address)
    _auth(client)
    times = [client.command(line) for line in commands for _ in range(repeat)]
    dumped: list[Any] = []
    if dump is not None:
        t0 = time.perf_counter()
        first = client.command("SHOW QUEUE THREADS2")
        size = first[2] + sum(client.command(line)[2] for line in dump)
        dumped = [time.perf_counter() - t0, size, first[0]]
    client.close()
    greetings = []
    for _ in range(50):
        c = Client(address)
        greetings.append(c.greeting_latency)
        c.close()
    return times, dumped, greetings


async def _measure(
    pipe: Connection, meter: StallMeter, job: Job
) -> tuple[Result, str, float]:
    """Run one client job: its result, the longest stalls, the server's CPU seconds."""
    loop = asyncio.get_running_loop()
    meter.reset()
    cpu = time.process_time()
    pipe.send(job)
    result: Result = await loop.run_in_executor(None, pipe.recv)
    stalls = f"{meter.max_stall * 1000:.1f} ms (busy {meter.max_busy * 1000:.1f} ms)"
    return result, stalls, time.process_time() - cpu


async def bench_view(title: str, queue: fakeview.FakeQueue, commands: list[str],
                     repeat: int, dump: bool, authfile: Path,
                     pipe: Connection) -> None:  # fmt: skip
    meter = StallMeter()
    server = MailqServer(queue, fakeview.FakeOps(queue), ServerConfig(authfile=authfile),
                         clock=lambda: NOW)  # fmt: skip
    await server.start(["127.0.0.1:0"])
    raw = RawServer(_precompute(queue, commands, dump))
    raw_address = await raw.start()
    threads = [f"SHOW THREAD {t.channel} {t.host}" for t in queue.all_threads()]
    print(f"\n== {title}")
    for name, address in (("ours", server.addresses[0]), ("raw ", raw_address)):
        rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        (times, _, greetings), stall, cpu = await _measure(
            pipe, meter, (address, commands, repeat, None)
        )
        dumped: list[Any] = []
        dump_stall = ""
        dump_cpu = 0.0
        if dump:  # the dump separately, with its own stall figure
            (_, dumped, _), dump_stall, dump_cpu = await _measure(
                pipe, meter, (address, [], 0, threads)
            )
        rss1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        for i, line in enumerate(commands):
            ts = times[i * repeat : (i + 1) * repeat]
            print(
                f"{name} {line:<22} ttfb {_median([t[0] for t in ts]):8.1f} ms"
                f"  total {_median([t[1] for t in ts]):8.1f} ms"
                f" (min {min(t[1] for t in ts) * 1000:.1f})"
                f"  {ts[0][2] / 1e6:7.2f} MB  max loop stall {stall}"
            )
        if dumped:
            elapsed, size, ttfb = dumped
            print(
                f"{name} full dump (THREADS2 + {len(threads)} SHOW THREAD): "
                f"{elapsed:6.2f} s, {size / 1e6:6.1f} MB, THREADS2 ttfb {ttfb * 1000:.1f} ms,"
                f" max loop stall {dump_stall}, server CPU {dump_cpu:.2f} s,"
                f" max RSS +{(rss1 - rss0) / 1024:.0f} MB"
            )
        print(f"{name} server CPU for the commands above: {cpu * 1000:.0f} ms")
        print(
            f"{name} greeting latency: median {_median(greetings):.2f} ms,"
            f" max {max(greetings) * 1000:.2f} ms"
        )
    server.close()
    await server.wait_closed()
    assert raw.server is not None
    raw.server.close()
    meter.task.cancel()


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
    parser.add_argument("--repeat", type=int, default=5, help="runs of each command")
    args = parser.parse_args()
    scale = 10 if args.quick else 1
    ctx = multiprocessing.get_context("spawn")  # a fresh client, none of our memory
    pipe, child_pipe = ctx.Pipe()
    client = ctx.Process(target=_client_process, args=(child_pipe,), daemon=True)
    client.start()
    with tempfile.TemporaryDirectory() as tmp:
        authfile = Path(tmp) / "scheduler.auth"
        authfile.write_text("admin:adminpw:ALL:[127.0.0.0]/8\n")
        authfile.chmod(0o600)
        for title, per_thread, commands, dump in (
            ("100k recipients, 10k threads", 10,
             ["SHOW QUEUE THREADS", "SHOW QUEUE THREADS2"], False),
            ("1M recipients, 10k threads (full dump)", 100,
             ["SHOW QUEUE THREADS2"], True),
        ):  # fmt: skip
            queue = fakeview.frozen_big_queue(10_000 // scale, per_thread, 1, NOW)
            gc.collect()
            gc.freeze()  # a daemon holding millions of objects should do the same
            asyncio.run(bench_view(title, queue, commands, args.repeat, dump,
                                   authfile, pipe))  # fmt: skip
            del queue
            gc.unfreeze()
            gc.collect()
    pipe.send(None)
    client.join(10)


if __name__ == "__main__":
    main()
