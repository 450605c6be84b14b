"""Dispatch rate of the real daemon: recipients/s marked done through testta answering
``ok`` at once (``TESTTA_NOMARK=1``, overfeed 150). Target: >= 10,000 recipients/s.

Builds N single-recipient messages over a few hosts, starts the daemon frozen-free with
testta, and measures from the ready file until ``Rcpnts ... out N`` in SHOW SNMP
(including the load of the N messages and the TA starts), and the steady state: from
the first poll that sees a delivered recipient to the end (rate over the recipients
delivered in between). Also prints the daemon's CPU seconds.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from scheduler_startup import build, cpu_seconds, query

CONF = """*/*\tinterval=1m expiry=5d retries="1 1 2 3" maxchannel=0 maxring=20 overfeed=150
smtp/*\tcommand="builtin:testta"
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--messages", type=int, default=10_000)
    ap.add_argument("--hosts", type=int, default=10)
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="zdb"))
    try:
        build(root, args.messages, 1, args.hosts)
        (root / "conf").write_text(CONF)
        ready = root / "ready"
        argv = [sys.executable, "-m", "scheduler", "serve", "-P", str(root / "po")]
        argv += ["-c", str(root / "conf"), "-a", str(root / "auth")]
        argv += [
            "-l",
            "127.0.0.1:0",
            "--ready-file",
            str(ready),
            "--log-level",
            "ERROR",
        ]
        env = {
            **os.environ,
            "ZCONFIG": str(root / "none"),
            "TESTTA_NOMARK": "1",
            "TESTTA_RULES": "*=ok",
        }
        proc = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL)
        try:
            while not ready.exists():
                time.sleep(0.01)
            t0 = time.monotonic()
            host, _, port = ready.read_text().split()[0].rpartition(":")
            addr = (host, int(port))
            done = 0
            first: tuple[float, int] | None = None
            while done < args.messages:
                m = re.search(r"Rcpnts in \d+ out (\d+)", query(addr, "SHOW SNMP"))
                done = int(m.group(1)) if m else 0
                if done and first is None:
                    first = (time.monotonic(), done)
                time.sleep(0.01)
            end = time.monotonic()
            elapsed = end - t0
            cpu = cpu_seconds(proc.pid)
        finally:
            proc.terminate()
            proc.wait()
        print(
            f"{args.messages} recipients done in {elapsed:.2f} s (daemon CPU {cpu:.2f} s)"
        )
        print(f"dispatch rate incl. load: {args.messages / elapsed:,.0f} recipients/s")
        if first is not None and end > first[0]:
            steady = (args.messages - first[1]) / (end - first[0])
            print(
                f"steady state (first delivery seen at {first[0] - t0:.2f} s, "
                f"{first[1]} done): {steady:,.0f} recipients/s"
            )
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
