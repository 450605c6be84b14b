"""Long protocol fuzzing of the MAILQ v2 server over real sockets.

    python bench/fuzz_mq2.py [--seconds 60] [--concurrency 16] [--seed N]
                             [--sample-every S] [--trace]

One in-process server on 127.0.0.1 port 0 (a fake queue, max_line 256 so the length limit
is hit often) serves ``--concurrency`` fuzzing clients for ``--seconds``. Each client
session sends a random stream built from the same pieces as the hypothesis test
(``tests/reliability/test_fuzz_protocol.py``: valid commands, a correct or wrong AUTH,
binary garbage, CR/NUL, lines around the limit) in random chunks and ends by reading,
half-closing or aborting. Every reply stream is checked with the test's oracle; internal
errors logged by the server are counted. Prints the inputs tried, bytes sent, failures,
the session registry and the asyncio tasks after close, and RSS before/after; an RSS
sample (after a full ``gc.collect()``) every ``--sample-every`` seconds as it goes, so a
5-minute run shows whether RSS stays flat, with the number of live Python memory blocks
(``sys.getallocatedblocks``: flat means no Python object leaks). ``--trim`` hands glibc's
free pages back after each sample (``malloc_trim``) and prints the RSS then: RSS that
``malloc_trim`` gives back is allocator high-water, not a leak. ``--trace`` also prints the biggest
``tracemalloc`` growths between the first sample and the end (slower; to hunt leaks).
The AUTH failure budget is switched off (every fuzz client is 127.0.0.1: the throttle
would make this a bench of the throttle).
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import ctypes.util
import gc
import logging
import os
import random
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mailq.server.shell import MailqServer, ServerConfig
from tests.mailq.server.fakeview import FakeOps
from tests.reliability.conftest import AUTH_TEXT, NOW, big_queue
from tests.reliability.test_fuzz_protocol import (
    GOOD_AUTH,
    MAX_LINE,
    VOCABULARY,
    Recorder,
    check_output,
    session,
)


def rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def trim_rss_kib() -> int:
    """RSS after handing glibc's free heap pages back (``malloc_trim``): what is
    really in use, without the allocator's high-water mark."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.malloc_trim(0)
    except (OSError, AttributeError):
        pass
    return rss_kib()


def random_stream(rng: random.Random) -> bytes:
    lines = []
    for _ in range(rng.randint(0, 12)):
        parts = []
        for _ in range(rng.randint(1, 3)):
            kind = rng.random()
            if kind < 0.45:
                parts.append(rng.choice(VOCABULARY))
            elif kind < 0.55:
                parts.append(GOOD_AUTH)
            elif kind < 0.8:
                parts.append(rng.randbytes(rng.randint(0, 40)))
            else:
                parts.append(b"L" * rng.randint(MAX_LINE - 2, MAX_LINE + 2))
        lines.append(b"".join(parts) + rng.choice([b"\n", b"\r\n", b"\r", b""]))
    return b"".join(lines)


async def fuzz(args: argparse.Namespace) -> int:
    rng = random.Random(args.seed)
    recorder = Recorder()
    recorder.setLevel(logging.WARNING)  # keep only what could be a problem
    logging.getLogger("mailq").addHandler(recorder)
    logging.getLogger("mailq").setLevel(logging.INFO)
    with tempfile.NamedTemporaryFile("w", prefix="fuzz-auth-", delete=False) as f:
        f.write(AUTH_TEXT)
    queue = big_queue(50, 3)
    server = MailqServer(
        queue,
        FakeOps(queue),
        ServerConfig(
            authfile=f.name,
            max_line=MAX_LINE,
            lifetime=30,
            max_sessions=1000,
            max_per_peer=0,
            auth_free_failures=1 << 30,
        ),
        clock=lambda: float(NOW),
    )
    await server.start(["127.0.0.1:0"])
    rss_before = rss_kib()
    tried = sent = failures = 0
    start = time.monotonic()
    deadline = start + args.seconds
    samples: list[tuple[float, int, int]] = []

    first_snapshot: list[tracemalloc.Snapshot] = []

    async def sampler() -> None:
        every = args.sample_every or args.seconds / 8
        while time.monotonic() < deadline:
            await asyncio.sleep(min(every, max(0.0, deadline - time.monotonic())))
            gc.collect()  # cycles (transports <-> protocols) are freed only by gc
            rss = rss_kib()
            trimmed = f", after malloc_trim {trim_rss_kib()} KiB" if args.trim else ""
            samples.append((time.monotonic() - start, tried, rss))
            t, n, _ = samples[-1]
            print(
                f"  t={t:6.0f}s sessions={n:8d} RSS={rss} KiB{trimmed}; Python "
                f"objects {sys.getallocatedblocks()} blocks",
                flush=True,
            )
            if args.trace and not first_snapshot:
                first_snapshot.append(tracemalloc.take_snapshot())

    async def worker(seed: int) -> None:
        nonlocal tried, sent, failures
        wrng = random.Random(seed)
        while time.monotonic() < deadline:
            stream = random_stream(wrng)
            cuts = [wrng.randint(0, 10_000) for _ in range(wrng.randint(0, 6))]
            ending = wrng.choice(["read", "half-close", "abort"])
            try:
                received = await session(server, stream, cuts, ending)
                check_output(received)
            except AssertionError as exc:
                failures += 1
                if failures <= 5:
                    print(f"BAD OUTPUT for {stream[:120]!r} ({ending}): {exc}")
            except (ConnectionError, TimeoutError) as exc:
                failures += 1
                if failures <= 5:
                    print(f"CLIENT ERROR for {stream[:120]!r} ({ending}): {exc!r}")
            tried += 1
            sent += len(stream)

    await asyncio.gather(
        sampler(), *(worker(rng.randrange(1 << 30)) for _ in range(args.concurrency))
    )
    end = time.monotonic() + 10
    while server.session_count and time.monotonic() < end:  # noqa: ASYNC110 - no event to wait on
        await asyncio.sleep(0.01)
    sessions_left = server.session_count
    gc.collect()
    rss_after = rss_kib()
    if args.trace and first_snapshot:
        growth = tracemalloc.take_snapshot().compare_to(first_snapshot[0], "lineno")
        print("biggest growths since the first sample:")
        for stat in growth[:12]:
            print(f"  {stat}")
    server.close()
    await server.wait_closed()
    tasks_left = len(asyncio.all_tasks() - {asyncio.current_task()})
    os.unlink(f.name)
    problems = recorder.problems()
    print(
        f"inputs tried            : {tried} sessions, {sent} bytes, {args.seconds:g} s"
    )
    print(f"malformed replies/errors: {failures}")
    print(f"internal errors logged  : {len(problems)}")
    for text in problems[:5]:
        print(f"  {text}")
    print(f"sessions left / tasks left after close: {sessions_left} / {tasks_left}")
    print(
        f"RSS before/after        : {rss_before} KiB / {rss_after} KiB "
        f"({rss_after - rss_before:+d} KiB)"
    )
    print(
        "RSS over time (s, sessions, KiB): "
        + ", ".join(f"{t:.0f}s/{n}/{r}" for t, n, r in samples)
    )
    return 1 if failures or problems or sessions_left or tasks_left else 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=60.0)
    p.add_argument("--concurrency", type=int, default=16)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--sample-every", type=float, default=0.0, help="seconds")
    p.add_argument("--trace", action="store_true", help="tracemalloc growth report")
    p.add_argument(
        "--trim", action="store_true", help="malloc_trim after each sample, and report"
    )
    args = p.parse_args()
    if args.trace:
        tracemalloc.start(1)
    return asyncio.run(fuzz(args))


if __name__ == "__main__":
    sys.exit(main())
