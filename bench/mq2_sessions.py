"""Benchmark: 1,000 concurrent MAILQ v2 sessions doing AUTH and SHOW SNMP (prints figures).

Usage: ``python bench/mq2_sessions.py [--sessions N] [--wave N] [--gap MS]``

The server (ours, then a raw asyncio socket server writing the same bytes) runs in a
child process with the session limit raised to N; the clients run in this process on
one event loop. Two scenarios, each against both servers:

* ``herd``: every client connects at the same instant, then greeting, AUTH, SHOW SNMP,
  QUIT (a thundering herd: the listen queue overflows and the kernel drops SYNs, which
  the raw server suffers too);
* ``waves``: clients connect in waves (``--wave`` every ``--gap`` ms) and stay
  connected, so up to N sessions are open at once; each does AUTH and SHOW SNMP as it
  arrives. Once all N are open, every session sends one more SHOW SNMP at the same
  instant (``burst``), then QUIT.

Reported: p50/p99/max of the greeting latency and of each command's round trip, and
how many sessions failed (no greeting within ``--timeout`` seconds, reset, ...).
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mailq.protocol.auth import authenticator
from mailq.server.config import ServerConfig
from mailq.server.listeners import BACKLOG
from mailq.server.shell import MailqServer
from tests.mailq.server import fakeview

SNMP_REPLY = (
    b"+OK until LF.LF\nKids: 2  Idle:  2  Msgs:   5  Thrds:   5  Rcpnts:    7  Uptime: 14 sec\n"
    b"Msgs in 5 out 0 stored 5 Rcpnts in 8 out 0 stored 8\n.\n"
)


def _serve(
    kind: str, authfile: str, sessions: int, ready: multiprocessing.Queue[str]
) -> None:
    async def main() -> None:
        if kind == "ours":
            queue = fakeview.main_run()
            queue.freeze()  # totals kept incrementally, as the scheduler's view does
            server = MailqServer(queue, fakeview.FakeOps(queue),
                                 ServerConfig(authfile=authfile, max_sessions=sessions),
                                 clock=lambda: fakeview.START + 14)  # fmt: skip
            await server.start(["127.0.0.1:0"])
            ready.put(server.addresses[0])
            await server.serve_forever()
        else:

            async def handle(
                reader: asyncio.StreamReader, writer: asyncio.StreamWriter
            ) -> None:
                writer.write(b"version zmailer 2.0\n220 MAILQ-V2-CHALLENGE: 1.2.3.4\n")
                while line := await reader.readline():
                    if line.startswith(b"AUTH"):
                        writer.write(b"+OK\n")
                    elif line.startswith(b"SHOW"):
                        writer.write(SNMP_REPLY)
                    else:
                        writer.write(b"+Bye bye\n")
                        break
                    await writer.drain()
                writer.close()

            raw = await asyncio.start_server(handle, "127.0.0.1", 0, backlog=BACKLOG)
            host, port = raw.sockets[0].getsockname()[:2]
            ready.put(f"{host}:{port}")
            await raw.serve_forever()

    asyncio.run(main())


@dataclass
class Figures:
    """Latencies in seconds by step, and failed sessions by reason."""

    steps: dict[str, list[float]] = field(default_factory=dict)
    failed: dict[str, int] = field(default_factory=dict)

    def add(self, step: str, seconds: float) -> None:
        self.steps.setdefault(step, []).append(seconds)

    def fail(self, reason: str) -> None:
        self.failed[reason] = self.failed.get(reason, 0) + 1


class Session:
    """One client: connect, greeting, AUTH, SHOW SNMP, optionally a burst, QUIT."""

    def __init__(self, address: str, figures: Figures) -> None:
        self.host, port = address.rsplit(":", 1)
        self.port = int(port)
        self.figures = figures
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def open(self) -> None:
        t0 = time.perf_counter()
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        await self.reader.readline()
        challenge = (await self.reader.readline()).decode().rstrip("\n")
        self.figures.add("greeting", time.perf_counter() - t0)
        line = f"AUTH admin {authenticator(challenge, 'adminpw')}"
        if await self.command(line, "auth") != b"+OK\n":
            raise ConnectionError("AUTH refused")
        await self.command("SHOW SNMP", "snmp")

    async def command(self, line: str, step: str) -> bytes:
        assert self.reader is not None
        assert self.writer is not None
        t0 = time.perf_counter()
        self.writer.write(line.encode() + b"\n")
        if line.startswith("SHOW"):
            reply = await self.reader.readuntil(b"\n.\n")
        else:
            reply = await self.reader.readline()
        self.figures.add(step, time.perf_counter() - t0)
        return reply

    async def close(self) -> None:
        if self.writer is None:
            return
        try:
            self.writer.write(b"QUIT\n")
            assert self.reader is not None
            await self.reader.read()
        except (ConnectionError, OSError):
            pass
        self.writer.close()


async def _guarded(figures: Figures, seconds: float, coro: object) -> bool:
    try:
        async with asyncio.timeout(seconds):
            await coro  # type: ignore[misc]
    except TimeoutError:
        figures.fail("timeout")
        return False
    except (ConnectionError, OSError, asyncio.IncompleteReadError) as exc:
        figures.fail(type(exc).__name__)
        return False
    return True


async def herd(address: str, n: int, seconds: float) -> Figures:
    figures = Figures()
    start = asyncio.Event()

    async def one() -> None:
        session = Session(address, figures)
        await start.wait()
        if await _guarded(figures, seconds, session.open()):
            await session.close()
        elif session.writer is not None:
            session.writer.close()

    tasks = [asyncio.create_task(one()) for _ in range(n)]
    await asyncio.sleep(0.1)
    start.set()
    await asyncio.gather(*tasks)
    return figures


async def waves(address: str, n: int, wave: int, gap: float, seconds: float) -> Figures:
    figures = Figures()
    sessions = [Session(address, figures) for _ in range(n)]
    opened: list[Session] = []

    async def one(session: Session) -> None:
        if await _guarded(figures, seconds, session.open()):
            opened.append(session)
        elif session.writer is not None:
            session.writer.close()

    tasks = []
    for i in range(0, n, wave):
        tasks += [asyncio.create_task(one(s)) for s in sessions[i : i + wave]]
        await asyncio.sleep(gap)
    await asyncio.gather(*tasks)
    figures.add("open at once", float(len(opened)))
    await asyncio.gather(
        *(_guarded(figures, seconds, s.command("SHOW SNMP", "burst")) for s in opened)
    )
    await asyncio.gather(*(s.close() for s in opened))
    return figures


def _cpu_seconds(pid: int) -> float:
    """User + system CPU of a process so far (Linux /proc; 0 elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(p * len(xs)))] * 1000


def _report(kind: str, scenario: str, figures: Figures, cpu: float) -> None:
    parts = []
    for step, xs in figures.steps.items():
        if step == "open at once":
            parts.append(f"{int(xs[0])} open at once")
            continue
        parts.append(
            f"{step} p50 {_pct(xs, 0.5):6.1f} p99 {_pct(xs, 0.99):6.1f}"
            f" max {max(xs) * 1000:6.1f} ms"
        )
    failed = ", ".join(f"{k} {v}" for k, v in figures.failed.items()) or "none"
    print(
        f"{kind:4} {scenario:5}: " + " | ".join(parts) + f" | failed: {failed}"
        f" | server CPU {cpu * 1000:.0f} ms"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sessions", type=int, default=1000)
    parser.add_argument("--wave", type=int, default=20, help="clients per wave")
    parser.add_argument("--gap", type=float, default=20.0, help="ms between waves")
    parser.add_argument("--timeout", type=float, default=15.0, help="s per session")
    args = parser.parse_args()
    n = args.sessions
    print(f"{n} sessions; waves of {args.wave} every {args.gap:g} ms")
    with tempfile.TemporaryDirectory() as tmp:
        authfile = Path(tmp) / "scheduler.auth"
        authfile.write_text("admin:adminpw:ALL:[127.0.0.0]/8\n")
        authfile.chmod(0o600)
        for kind in ("ours", "raw"):
            ready: multiprocessing.Queue[str] = multiprocessing.Queue()
            proc = multiprocessing.Process(
                target=_serve, args=(kind, str(authfile), n, ready), daemon=True
            )
            proc.start()
            address = ready.get(timeout=30)
            assert proc.pid is not None
            cpu = _cpu_seconds(proc.pid)
            figures = asyncio.run(herd(address, n, args.timeout))
            _report(kind, "herd", figures, _cpu_seconds(proc.pid) - cpu)
            time.sleep(0.5)
            cpu = _cpu_seconds(proc.pid)
            figures = asyncio.run(
                waves(address, n, args.wave, args.gap / 1000, args.timeout)
            )
            _report(kind, "waves", figures, _cpu_seconds(proc.pid) - cpu)
            proc.terminate()
            proc.join()


if __name__ == "__main__":
    main()
