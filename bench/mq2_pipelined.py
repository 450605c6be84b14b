"""The longest event-loop step while one client pipelines many commands (prints figures).

Usage: ``python bench/mq2_pipelined.py [--snmp N] [--runs 3]``

An in-process ``MailqServer`` over the fake queue (2,000 threads x 50 vertices) with the
1 ms ticker of ``bench/mq2_reports.py``; a client process sends AUTH, every ``SHOW THREAD``
(or ``--snmp N`` x ``SHOW SNMP``) and QUIT in one write and reads everything as fast as it
can. The figure is the loop thread's CPU time between two ticks (robust to a loaded
machine) and the wall-clock gap. Compare two trees with ``PYTHONPATH=<tree>``.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import multiprocessing
import socket
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mq2_reports import NOW, StallMeter

from mailq.protocol.auth import authenticator
from mailq.server.config import ServerConfig
from mailq.server.shell import MailqServer
from tests.mailq.server import fakeview


def _client(address: str, commands: list[str], out: Any) -> None:
    host, port = address.rsplit(":", 1)
    sock = socket.create_connection((host, int(port)))
    buf = b""
    while buf.count(b"\n") < 2:
        buf += sock.recv(65536)
    challenge = buf.split(b"\n")[1].decode()
    lines = [f"AUTH admin {authenticator(challenge, 'adminpw')}", *commands, "QUIT"]
    t0 = time.perf_counter()
    sock.sendall("".join(line + "\n" for line in lines).encode())
    size = 0
    while data := sock.recv(1 << 20):
        size += len(data)
    out.put((size, time.perf_counter() - t0))
    sock.close()


async def _main(snmp: int, runs: int) -> None:
    queue = fakeview.frozen_big_queue(2000, 50, 1, NOW)
    gc.collect()
    gc.freeze()
    with tempfile.TemporaryDirectory() as tmp:
        auth = Path(tmp) / "scheduler.auth"
        auth.write_text("admin:adminpw:ALL:[127.0.0.0]/8\n")
        auth.chmod(0o600)
        server = MailqServer(queue, fakeview.FakeOps(queue), ServerConfig(authfile=auth),
                             clock=lambda: NOW)  # fmt: skip
        await server.start(["127.0.0.1:0"])
        meter = StallMeter()
        if snmp:
            commands = ["SHOW SNMP"] * snmp
        else:
            commands = [
                f"SHOW THREAD {t.channel} {t.host}" for t in queue.all_threads()
            ]
        ctx = multiprocessing.get_context("spawn")
        results: Any = ctx.Queue()
        loop = asyncio.get_running_loop()
        for _ in range(runs):
            await asyncio.sleep(0.05)
            meter.reset()
            proc = ctx.Process(
                target=_client, args=(server.addresses[0], commands, results)
            )
            proc.start()
            size, elapsed = await loop.run_in_executor(None, results.get)
            proc.join()
            print(
                f"{len(commands)} pipelined {commands[0].split()[1]}: {size / 1e6:.1f} MB"
                f" in {elapsed:.2f} s; longest loop step {meter.max_busy * 1000:.1f} ms CPU"
                f" ({meter.max_stall * 1000:.0f} ms wall)"
            )
        meter.task.cancel()
        server.close()
        await server.wait_closed()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--snmp", type=int, default=0, help="N x SHOW SNMP instead")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    asyncio.run(_main(args.snmp, args.runs))


if __name__ == "__main__":
    main()
