"""Benchmark: operator control on a big queue (prints figures; docs/performance.md).

Usage: ``python bench/opctl_scale.py [--messages 100000] [--rcpts 10]``

Builds a postoffice of N control files (R recipients each, spread over 1,000 hosts) in a
temporary directory, loads them into the scheduler core in this process, and serves
MAILQ v2 with the operator commands (``MailqServer`` + ``ControlPlaneImpl``; agents are
not started: the core is frozen and a no-op runner drops its commands). A client
process measures:

* ``SHOW MSGS WHERE rcpt=...`` (one address: every control file is read): first line
  and last line;
* ``SHOW MSGS WHERE rcpt=*...`` (no literal local part or domain: the addresses kept in
  the recipient index), the same as ``rcpt~...`` and a glob with ten matches;
* ``SHOW QUEUE SHAPE BY host`` (twice: the first after the start, then again) and ``BY domain``;
* ``HOLD WHERE channel=smtp``: the preview, then the confirmed hold of every message,
  and the ``RELEASE`` back;

while a second client process connects again and again and records the greeting latency,
and a 1 ms ticker on the server's loop records the longest stall.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import multiprocessing
import os
import random
import re
import socket
import sys
import tempfile
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mailq.protocol.auth import authenticator
from mailq.server.config import ServerConfig
from mailq.server.shell import MailqServer
from scheduler.config.clauses import parse_config
from scheduler.core.commands import Command
from scheduler.core.events import MessageLoaded
from scheduler.core.scheduler import Scheduler
from scheduler.daemon.opcontrol import ControlPlaneImpl
from spool.controlfile import parse
from spool.counters import Counters
from spool.layout import init_postoffice

CONF = 'smtp/*\tinterval=1m expiry=5d retries="1 2 3" command="testta"\n'
USER, PASSWORD = "admin", "pw"


def control(n: int, rcpts: int, hosts: int) -> bytes:
    lines = ["@ 0x00000007", f"i {n}", "o 100", f"l <{n}@bench>", "e s@example.org"]
    lines.append("s local - s@example.org 0")
    for i in range(rcpts):
        h = (n * 7 + i) % hosts
        lines.append(f"r           smtp host{h}.example user{i}.{n}@host{h}.example 0")
    lines += ["m", f"Subject: {n}", "", ""]
    return "\n".join(lines).encode()


class NoRunner:
    def execute(self, commands: list[Command]) -> None:
        pass

    def poke(self) -> None:
        pass

    def notify(self, relpath: str) -> None:
        pass

    def kill_thread(self, channel: str, host: str) -> int:
        return 0


class GcMeter:
    """The longest garbage-collector pause (``gc.callbacks``)."""

    def __init__(self) -> None:
        self.worst = 0.0
        self._t0 = 0.0
        gc.callbacks.append(self._cb)

    def _cb(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._t0 = time.perf_counter()
        else:
            self.worst = max(self.worst, time.perf_counter() - self._t0)


class StallMeter:
    """Longest wall-clock gap between 1 ms ticks (includes the OS running others on a
    shared machine) and longest loop-thread CPU time between ticks (our own work)."""

    def __init__(self) -> None:
        self.max_stall = 0.0
        self.max_busy = 0.0
        self.last = time.perf_counter()
        self.last_cpu = time.thread_time()
        self.task = asyncio.get_running_loop().create_task(self._tick())

    async def _tick(self) -> None:
        last = time.perf_counter()
        last_cpu = time.thread_time()
        while True:
            await asyncio.sleep(0.001)
            now = self.last = time.perf_counter()
            cpu = self.last_cpu = time.thread_time()
            self.max_stall = max(self.max_stall, now - last - 0.001)
            self.max_busy = max(self.max_busy, cpu - last_cpu)
            last, last_cpu = now, cpu


def _watchdog(meter: StallMeter, limit: float) -> None:
    """A thread that prints the loop thread's stack when it used more than ``limit``
    seconds of CPU since its last tick (finding the long steps)."""
    import threading
    import traceback

    loop_thread = threading.get_ident()
    cpu_clock = time.pthread_getcpuclockid(loop_thread)

    def watch() -> None:
        seen: set[str] = set()
        while True:
            time.sleep(limit / 4)
            if time.clock_gettime(cpu_clock) - meter.last_cpu > limit:
                frame = sys._current_frames().get(loop_thread)
                if frame is None:
                    continue
                stack = "".join(traceback.format_stack(frame, limit=6)[-4:])
                if stack not in seen:
                    seen.add(stack)
                    print(f"--- loop busy > {limit * 1000:.0f} ms at:\n{stack}")

    threading.Thread(target=watch, daemon=True).start()


class Session:
    def __init__(self, address: tuple[str, int]) -> None:
        self.sock = socket.create_connection(address)
        self.f = self.sock.makefile("rb")
        self.f.readline()
        challenge = self.f.readline().decode().strip()
        self.sock.sendall(
            f"AUTH {USER} {authenticator(challenge, PASSWORD)}\n".encode()
        )
        assert self.f.readline() == b"+OK\n"

    def body(self, command: str) -> tuple[float, float, int]:
        """(first body line, end) seconds and body lines."""
        t0 = time.perf_counter()
        self.sock.sendall(command.encode() + b"\n")
        head = self.f.readline()
        assert head == b"+OK until LF.LF\n", head
        first = 0.0
        n = 0
        while self.f.readline() != b".\n":
            if not first:
                first = time.perf_counter() - t0
            n += 1
        end = time.perf_counter() - t0
        return first or end, end, n

    def line(self, command: str) -> tuple[float, str]:
        t0 = time.perf_counter()
        self.sock.sendall(command.encode() + b"\n")
        reply = self.f.readline().decode()
        return time.perf_counter() - t0, reply


def _greeter(address: tuple[str, int], stop: Any, out: Connection) -> None:
    worst = 0.0
    samples = []
    while not stop.is_set():
        t0 = time.perf_counter()
        with socket.create_connection(address) as s:
            f = s.makefile("rb")
            f.readline()
            f.readline()
        dt = time.perf_counter() - t0
        samples.append(dt)
        worst = max(worst, dt)
        time.sleep(0.01)
    samples.sort()
    out.send((worst, samples[len(samples) // 2] if samples else 0.0, len(samples)))


def _client(
    address: tuple[str, int], rcpt: str, out: Connection, only_rcpt: bool = False
) -> None:
    s = Session(address)
    res: dict[str, Any] = {}
    res["msgs_rcpt"] = s.body(f"SHOW MSGS WHERE rcpt={rcpt}")
    local = rcpt.split("@")[0]
    res["msgs_scan"] = s.body(f"SHOW MSGS WHERE rcpt=*{local[1:]}@*")
    res["msgs_text"] = s.body(f"SHOW MSGS WHERE rcpt~{local[1:]}@")
    res["msgs_ten"] = s.body(f"SHOW MSGS WHERE rcpt=*{local[1:-1]}?@*")
    if only_rcpt:
        out.send(res)
        return
    res["msgs_host"] = s.body("SHOW MSGS WHERE host=host5.example")
    res["shape1"] = s.body("SHOW QUEUE SHAPE BY host")
    res["shape"] = s.body("SHOW QUEUE SHAPE BY host")
    res["shape_domain"] = s.body("SHOW QUEUE SHAPE BY domain")
    dt, preview = s.line("HOLD WHERE channel=smtp")
    res["preview"] = (dt, preview.strip()[:100])
    m = re.search(r"CONFIRM (\S+)", preview)
    assert m is not None, preview
    dt, acted = s.line(f"HOLD WHERE channel=smtp CONFIRM {m.group(1)}")
    res["hold"] = (dt, acted.strip())
    dt, preview = s.line("RELEASE WHERE state=held")
    m = re.search(r"CONFIRM (\S+)", preview)
    assert m is not None, preview
    dt2, acted = s.line(f"RELEASE WHERE state=held CONFIRM {m.group(1)}")
    res["release"] = (dt + dt2, acted.strip())
    res["release_preview"] = dt
    out.send(res)


async def _receive(conn: Connection) -> Any:
    """The next object from a child process, waited for off the loop."""
    return await asyncio.to_thread(conn.recv)


async def serve(args: argparse.Namespace, root: Path) -> None:
    po = init_postoffice(root / "po")
    t0 = time.perf_counter()
    core = Scheduler(
        parse_config(CONF, "bench.conf"),
        Counters.open(None),
        start_time=int(time.time()),
        frozen=True,
        rng=random.Random(1),
    )
    now = time.time()
    built_cpu = 0.0
    for n in range(1, args.messages + 1):
        data = control(n, args.rcpts, 1000)
        (po.transport / str(n)).write_bytes(data)
        cf = parse(data)
        c0 = time.process_time()
        core.handle(MessageLoaded(str(n), cf, int(now) - n % 7200, 0, now), now)
        built_cpu += time.process_time() - c0
    gc.collect()
    gc.freeze()  # as the daemon's bulk load does: a million objects out of the GC's sight
    print(
        f"queue: {args.messages} messages, {core.total_recipients} recipients in "
        f"{core.total_threads} threads, built in {time.perf_counter() - t0:.1f} s"
    )
    auth = root / "auth"
    auth.write_text(f"{USER}:{PASSWORD}:ALL:[127.0.0.0]/8\n")
    auth.chmod(0o600)
    server = MailqServer(core, NoRunner(), ServerConfig(authfile=auth, lifetime=600))  # type: ignore[arg-type]
    plane = ControlPlaneImpl(core, NoRunner(), po)  # type: ignore[arg-type]
    server.service.control = plane
    await server.start(["127.0.0.1:0"])
    host, _, port = server.addresses[0].rpartition(":")
    address = (host, int(port))
    meter = StallMeter()
    if os.environ.get("BENCH_SLOW_MS"):  # where the loop is when a step runs long
        _watchdog(meter, float(os.environ["BENCH_SLOW_MS"]) / 1000)
    gcm = GcMeter()
    ctx = multiprocessing.get_context("spawn")
    stop = ctx.Event()
    g_recv, g_send = ctx.Pipe(False)
    c_recv, c_send = ctx.Pipe(False)
    greeter = ctx.Process(target=_greeter, args=(address, stop, g_send))
    greeter.start()
    await asyncio.sleep(1.0)
    meter.max_stall = meter.max_busy = 0.0
    gcm.worst = 0.0
    client = ctx.Process(
        target=_client,
        args=(address, f"user3.{args.messages // 2}@*", c_send, args.rcpt_only),
    )
    client.start()
    res = await _receive(c_recv)
    stop.set()
    worst, median, count = await _receive(g_recv)
    client.join()
    greeter.join()
    first, end, n = res["msgs_rcpt"]
    print(
        f"SHOW MSGS WHERE rcpt=...   first line {first * 1000:7.1f} ms, end {end:6.2f} s ({n} lines)"
    )
    first, end, n = res["msgs_scan"]
    print(
        f"SHOW MSGS WHERE rcpt=*...  first line {first * 1000:7.1f} ms, end {end:6.2f} s ({n} lines; no literal local part or domain)"
    )
    for key, what in (("msgs_text", "rcpt~..."), ("msgs_ten", "rcpt=*...?@*")):
        first, end, n = res[key]
        print(
            f"SHOW MSGS WHERE {what:<11}first line {first * 1000:7.1f} ms, end {end:6.2f} s ({n} lines)"
        )
    index = getattr(core, "rcpt_index", None)
    if index is not None:
        print(
            f"recipient index: {index.bytes_used / max(core.total_recipients, 1):.1f} B"
            f" per recipient; the core's load took {built_cpu:.2f} s CPU"
        )
    if args.rcpt_only:
        print(
            f"loop: longest stall {meter.max_stall * 1000:.1f} ms wall,"
            f" {meter.max_busy * 1000:.1f} ms CPU of the loop thread"
        )
        server.close()
        await server.wait_closed()
        meter.task.cancel()
        meter.last_cpu = float("inf")
        return
    first, end, n = res["msgs_host"]
    print(
        f"SHOW MSGS WHERE host=...   first line {first * 1000:7.1f} ms, end {end:6.2f} s ({n} lines)"
    )
    first, end, n = res["shape1"]
    print(
        f"SHOW QUEUE SHAPE BY host   {end * 1000:7.1f} ms ({n} lines; the first after the start)"
    )
    first, end, n = res["shape"]
    print(f"SHOW QUEUE SHAPE BY host   {end * 1000:7.1f} ms ({n} lines; the next ones)")
    first, end, n = res["shape_domain"]
    print(f"SHOW QUEUE SHAPE BY domain {end * 1000:7.1f} ms ({n} lines)")
    print(f"HOLD WHERE preview         {res['preview'][0]:6.2f} s  {res['preview'][1]}")
    print(f"HOLD WHERE CONFIRM         {res['hold'][0]:6.2f} s  {res['hold'][1]}")
    print(
        f"RELEASE (preview+confirm)  {res['release'][0]:6.2f} s  {res['release'][1]}"
        f" (preview {res['release_preview']:.2f} s)"
    )
    print(
        f"loop: longest stall {meter.max_stall * 1000:.1f} ms wall,"
        f" {meter.max_busy * 1000:.1f} ms CPU of the loop thread;"
        f" longest GC pause {gcm.worst * 1000:.1f} ms"
    )
    print(
        f"second client greeting: worst {worst * 1000:.1f} ms, median {median * 1000:.1f} ms ({count} connections)"
    )
    server.close()
    await server.wait_closed()
    meter.task.cancel()
    meter.last_cpu = float("inf")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--messages", type=int, default=100_000)
    p.add_argument("--rcpts", type=int, default=10)
    p.add_argument(
        "--rcpt-only", action="store_true", help="only the SHOW MSGS WHERE rcpt queries"
    )
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="opctl-bench") as tmp:
        asyncio.run(serve(args, Path(tmp)))


if __name__ == "__main__":
    main()
