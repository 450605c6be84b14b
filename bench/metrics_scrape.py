"""Benchmark of one ``/metrics`` scrape of a daemon holding a big queue.

Loads N messages x R recipients spread over H destinations into the real decision core
(as bench/scheduler_core.py does; no agents), puts the daemon's monitor over it, serves
it with the real HTTP listener on 127.0.0.1 and prints: the time to build the metrics
text, the round trip of ``GET /metrics`` over a socket (median and worst of a few), the
body size and series count, and the longest stall of the event loop during the scrapes
(a 1 ms ticker task).

    python bench/metrics_scrape.py [--messages 100000] [--rcpts 10] [--hosts 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.scheduler_core import load, new_sched
from mailq.server.httpshell import MonitorServer
from mailq.server.metrics import summarize
from scheduler.daemon.deliveries import DeliveryTap
from scheduler.daemon.monitor import Monitor
from scheduler.daemon.runner import Runner
from spool.layout import init_postoffice

START = 1_800_000_000


async def get(addr: str) -> tuple[float, int]:
    host, _, port = addr.rpartition(":")
    t0 = time.perf_counter()
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(b"GET /metrics HTTP/1.1\r\nHost: bench\r\n\r\n")
    data = await reader.read()
    writer.close()
    return time.perf_counter() - t0, len(data)


async def scrape(monitor: Monitor, rounds: int) -> None:
    server = MonitorServer(monitor.routes())
    await server.start("127.0.0.1:0")
    stall = 0.0
    stop = False

    async def ticker() -> None:
        nonlocal stall
        last = time.perf_counter()
        while not stop:
            await asyncio.sleep(0.001)
            now = time.perf_counter()
            stall = max(stall, now - last)
            last = now

    tick = asyncio.create_task(ticker())
    await monitor.refresh()  # what the heartbeat does every few seconds of a big queue
    monitor.start_heartbeat()
    await asyncio.sleep(0.05)
    print(f"background pass over the threads: longest loop stall {stall * 1000:.1f} ms")
    stall = 0.0
    times = []
    size = 0
    for _ in range(rounds):
        t, size = await get(server.addresses[0])
        times.append(t)
    stop = True
    await tick
    monitor.stop_heartbeat()
    server.close()
    await server.wait_closed()
    assert tick.done()
    print(
        f"GET /metrics over a socket: median {statistics.median(times) * 1000:.1f} ms, "
        f"worst {max(times) * 1000:.1f} ms ({rounds} scrapes, {size:,} bytes); "
        f"longest loop stall {stall * 1000:.1f} ms"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--messages", type=int, default=100_000)
    ap.add_argument("--rcpts", type=int, default=10)
    ap.add_argument("--hosts", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=10)
    args = ap.parse_args()
    core = new_sched(frozen=True)
    t0 = time.perf_counter()
    load(core, args.messages, args.rcpts, args.hosts, True)
    print(
        f"queue: {core.total_recipients:,} recipients, {core.msgs:,} messages, "
        f"{core.total_threads:,} destinations (loaded in {time.perf_counter() - t0:.0f} s)"
    )
    with tempfile.TemporaryDirectory() as tmp:
        runner = Runner(core, init_postoffice(Path(tmp) / "po"))
        runner.startup_loaded = True
        tap = DeliveryTap(core, time.time)
        monitor = Monitor(core, runner, tap, clock=lambda: START)
        builds = []
        t0 = time.perf_counter()
        summarize(core, START, monitor.top)
        print(f"one pass over every thread: {(time.perf_counter() - t0) * 1000:.1f} ms")
        asyncio.run(monitor.refresh())
        for _ in range(args.rounds):
            t0 = time.perf_counter()
            text = monitor.metrics_text()
            builds.append(time.perf_counter() - t0)
        series = sum(1 for line in text.splitlines() if not line.startswith("#"))
        print(
            f"metrics text: median {statistics.median(builds) * 1000:.1f} ms, "
            f"worst {max(builds) * 1000:.1f} ms, {series} series"
        )
        asyncio.run(scrape(monitor, args.rounds))


if __name__ == "__main__":
    main()
