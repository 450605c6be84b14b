"""Benchmark of the scheduler's decision core alone (no I/O, no processes).

Prints: core-only load time for N messages x R recipients (control files parsed beforehand in
batches, parse time excluded; wall and CPU time, the CPU figure is steadier on a shared
machine; a lazy parser's ``pending_summary`` work is part of the core time), bytes per queued
recipient (RSS delta of a plain load, then tracemalloc of what the core keeps), a full
``gc.collect()`` with and without ``gc.freeze()`` after the load, and the dispatch rate through
a simulated TA answering ``ok`` at once.

    python bench/scheduler_core.py [--messages 100000] [--rcpts 10] [--hosts 1000]
"""

from __future__ import annotations

import argparse
import gc
import random
import resource
import time
import tracemalloc
from collections import deque

from scheduler.config.clauses import parse_config
from scheduler.core.commands import StartAgent, WriteAgent
from scheduler.core.events import AgentLine, AgentStarted, MessageLoaded
from scheduler.core.scheduler import Scheduler
from spool.controlfile import parse
from spool.counters import Counters

CONF = """\
*/*\tinterval=1m
\tidlemax=4m
\texpiry=5d
\texpiry2=2d
\tretries="1 1 2 3 5 8 13 21 34"
\tmaxring=50
\toverfeed=150
smtp/*\tmaxchannel=199 command="builtin:testta"
"""
START = 1_800_000_000
BATCH = 2000


def control(n: int, rcpts: int, hosts: int, spread: bool) -> bytes:
    lines = [
        "@ 0x00000007",
        f"i {n}",
        "o 100",
        f"l <{n}@bench>",
        "e sender@example.org",
    ]
    lines.append("s local - sender@example.org 0")
    for i in range(rcpts):
        h = (n + i) % hosts if spread else n % hosts
        lines.append(f"r           smtp host{h}.example user{i}@host{h}.example 0")
    lines += ["m", f"Subject: {n}", "", ""]
    return "\n".join(lines).encode()


def batches(messages: int, rcpts: int, hosts: int, spread: bool):  # type: ignore[no-untyped-def]
    for base in range(0, messages, BATCH):
        top = min(messages, base + BATCH) + 1
        yield [
            (f"Q/I/{n}", parse(control(n, rcpts, hosts, spread)))
            for n in range(base + 1, top)
        ]


def new_sched(frozen: bool) -> Scheduler:
    return Scheduler(
        parse_config(CONF, "bench.conf"),
        Counters.open(None),
        start_time=START,
        frozen=frozen,
        rng=random.Random(1),
    )


def rss_kb() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() // 1024


def load(
    s: Scheduler, messages: int, rcpts: int, hosts: int, spread: bool
) -> tuple[float, float]:
    """(wall, CPU) seconds spent in ``handle``."""
    wall = cpu = 0.0
    handle = s.handle
    for batch in batches(messages, rcpts, hosts, spread):
        t0, c0 = time.perf_counter(), time.process_time()
        for i, (relpath, cf) in enumerate(batch):
            handle(
                MessageLoaded(relpath, cf, START - 3600 + i, 123456789, START), START
            )
        wall += time.perf_counter() - t0
        cpu += time.process_time() - c0
    return wall, cpu


def bench_load(messages: int, rcpts: int, hosts: int, spread: bool) -> None:
    label = (
        f"{messages} msgs x {rcpts} rcpts, {hosts} hosts{' (spread)' if spread else ''}"
    )
    total = messages * rcpts
    gc.collect()
    rss0 = rss_kb()
    s = new_sched(frozen=True)
    wall, cpu = load(s, messages, rcpts, hosts, spread)
    gc.collect()
    rss = (rss_kb() - rss0) * 1024
    print(
        f"load  {label}: {wall:.2f} s core time ({cpu:.2f} s CPU), "
        f"{total / wall:,.0f} rcpts/s"
    )
    t0 = time.perf_counter()
    gc.collect()
    full = time.perf_counter() - t0
    gc.freeze()
    t0 = time.perf_counter()
    gc.collect()
    frozen = time.perf_counter() - t0
    gc.unfreeze()
    print(
        f"gc    {label}: full collection {full * 1000:.0f} ms, "
        f"{frozen * 1000:.0f} ms after gc.freeze()"
    )
    del s
    gc.collect()
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    s = new_sched(frozen=True)
    load(s, messages, rcpts, hosts, spread)
    gc.collect()
    kept = tracemalloc.get_traced_memory()[0] - base
    tracemalloc.stop()
    print(
        f"mem   {label}: {rss / total:.0f} B/rcpt (RSS delta), "
        f"{kept / total:.0f} B/rcpt (tracemalloc)"
    )
    del s


def bench_dispatch(messages: int, hosts: int) -> None:
    s = new_sched(frozen=True)
    load(s, messages, 1, hosts, False)
    s.frozen = False
    c0 = time.process_time()
    pending: deque[tuple[int, str]] = deque()
    done = 0
    t0 = time.perf_counter()
    now = START + 10
    cmds = s.handle(__import__("scheduler.core.events").core.events.Tick(), now)
    work = deque(cmds)
    while work:
        c = work.popleft()
        if isinstance(c, StartAgent):
            work.extend(s.handle(AgentStarted(c.proc, 1000 + c.proc), now))
            work.extend(s.handle(AgentLine(c.proc, "#hungry"), now))
        elif isinstance(c, WriteAgent):
            for job in c.data.decode().splitlines():
                if job == "#idle":
                    pending.append((c.proc, "#hungry"))
                    continue
                number = int(job.split("\t")[0].rpartition("/")[2])
                msg = s.message(number)
                assert msg is not None
                for v in msg.vertices:
                    for off in v.offsets:
                        pending.append((c.proc, f"{number}/{off}\t\tok"))
                        done += 1
                pending.append((c.proc, "#hungry"))
        while not work and pending:
            proc, line = pending.popleft()
            work.extend(s.handle(AgentLine(proc, line), now))
    spent = time.perf_counter() - t0
    cpu = time.process_time() - c0
    assert s.msgs == 0, s.msgs
    print(
        f"dispatch {messages} single-rcpt msgs, {hosts} hosts: {done / spent:,.0f} rcpts/s"
        f" ({done / cpu:,.0f} rcpts/CPU-s)"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--messages", type=int, default=100_000)
    ap.add_argument("--rcpts", type=int, default=10)
    ap.add_argument("--hosts", type=int, default=1000)
    ap.add_argument("--dispatch", type=int, default=50_000)
    a = ap.parse_args()
    bench_load(a.messages, a.rcpts, a.hosts, spread=False)
    bench_load(a.messages, 1, a.hosts * 10, spread=False)
    bench_dispatch(a.dispatch, 10)


if __name__ == "__main__":
    main()
