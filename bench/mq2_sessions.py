"""Benchmark: 1,000 concurrent MAILQ v2 sessions doing AUTH and SHOW SNMP (prints figures).

Usage: ``python bench/mq2_sessions.py [--sessions N]``

The server (ours, then a raw asyncio socket server writing the same bytes) runs in a
child process; the clients run in this process on one event loop. Each client connects,
reads the greeting, sends AUTH, then SHOW SNMP, then QUIT. Reported: p50/p99 of the
greeting latency, the AUTH and SHOW SNMP round trips, and the whole session.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mailq.auth import authenticator
from mailq.config import ServerConfig
from mailq.server import MailqServer
from tests.mailq import fakeview

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

            raw = await asyncio.start_server(handle, "127.0.0.1", 0, backlog=2048)
            host, port = raw.sockets[0].getsockname()[:2]
            ready.put(f"{host}:{port}")
            await raw.serve_forever()

    asyncio.run(main())


async def _session(
    address: str, start: asyncio.Event, out: dict[str, list[float]]
) -> None:
    host, port = address.rsplit(":", 1)
    await start.wait()
    t0 = time.perf_counter()
    reader, writer = await asyncio.open_connection(host, int(port))
    await reader.readline()
    challenge = (await reader.readline()).decode().rstrip("\n")
    t1 = time.perf_counter()
    writer.write(f"AUTH admin {authenticator(challenge, 'adminpw')}\n".encode())
    assert await reader.readline() == b"+OK\n"
    t2 = time.perf_counter()
    writer.write(b"SHOW SNMP\n")
    await reader.readuntil(b"\n.\n")
    t3 = time.perf_counter()
    writer.write(b"QUIT\n")
    await reader.read()
    writer.close()
    out["greeting"].append(t1 - t0)
    out["auth"].append(t2 - t1)
    out["snmp"].append(t3 - t2)
    out["session"].append(time.perf_counter() - t0)


def _pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(p * len(xs)))] * 1000


async def _clients(address: str, n: int) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {
        "greeting": [],
        "auth": [],
        "snmp": [],
        "session": [],
    }
    start = asyncio.Event()
    tasks = [asyncio.create_task(_session(address, start, out)) for _ in range(n)]
    await asyncio.sleep(0.1)
    start.set()
    await asyncio.gather(*tasks)
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sessions", type=int, default=1000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        authfile = Path(tmp) / "scheduler.auth"
        authfile.write_text("admin:adminpw:ALL:[127.0.0.0]/8\n")
        authfile.chmod(0o600)
        for kind in ("ours", "raw"):
            ready: multiprocessing.Queue[str] = multiprocessing.Queue()
            proc = multiprocessing.Process(
                target=_serve,
                args=(kind, str(authfile), args.sessions, ready),
                daemon=True,
            )
            proc.start()
            address = ready.get(timeout=30)
            out = asyncio.run(_clients(address, args.sessions))
            proc.terminate()
            proc.join()
            print(f"{kind:4} {args.sessions} concurrent sessions:", end="")
            for key in ("greeting", "auth", "snmp", "session"):
                print(
                    f"  {key} p50 {_pct(out[key], 0.5):6.1f} ms p99 {_pct(out[key], 0.99):6.1f} ms",
                    end="",
                )
            print(f"  (mean {statistics.mean(out['session']) * 1000:.1f} ms)")


if __name__ == "__main__":
    main()
