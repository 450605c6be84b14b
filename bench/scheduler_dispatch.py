"""Dispatch rate of the real daemon: recipients/s marked done through testta answering
``ok`` at once (``TESTTA_NOMARK=1``, overfeed 150). Target: >= 10,000 recipients/s.

Builds N single-recipient messages over a few hosts, starts the daemon frozen-free with
testta, and measures from the ready file until ``Rcpnts ... out N`` in SHOW SNMP.
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
from scheduler_startup import build, query

CONF = """*/*\tinterval=1m expiry=5d retries="1 1 2 3" maxchannel=0 maxring=20 overfeed=150
smtp/*\tcommand="testta"
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
            while done < args.messages:
                m = re.search(r"Rcpnts in \d+ out (\d+)", query(addr, "SHOW SNMP"))
                done = int(m.group(1)) if m else 0
                time.sleep(0.05)
            elapsed = time.monotonic() - t0
        finally:
            proc.terminate()
            proc.wait()
        print(f"{args.messages} recipients done in {elapsed:.2f} s")
        print(f"dispatch rate: {args.messages / elapsed:,.0f} recipients/s")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
