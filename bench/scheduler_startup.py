"""Startup load of the real daemon: time from exec to "serving with every message loaded".

Builds a postoffice by writing control + message files directly (hashed two levels),
starts ``python -m scheduler serve`` with every channel queueonly (no TA runs), polls
``SHOW SNMP`` until ``Msgs:`` equals the file count, and prints seconds, files/s and
RSS per queued recipient (RSS after load - RSS of an empty daemon) / recipients.
ZMailer: 19 s / 5.7 s; 274 B / 825 B per recipient. Targets: < 5 s; 150 B / 400 B.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from mailq.protocol.auth import authenticator
from spool.ids import hash_prefix
from spool.layout import init_postoffice

CONF = """*/*\tinterval=1m expiry=5d retries="1 1 2 3" maxchannel=0 maxring=20 overfeed=150
smtp/*\tqueueonly command="builtin:testta"
"""


def build(root: Path, files: int, rcpts: int, hosts: int) -> None:
    po = init_postoffice(root / "po")
    made: set[str] = set()
    for n in range(100_000, 100_000 + files):
        prefix = hash_prefix(n, 2)
        if prefix not in made:
            (po.transport / prefix).mkdir(parents=True, exist_ok=True)
            (po.queue / prefix).mkdir(parents=True, exist_ok=True)
            made.add(prefix)
        host = f"h{n % hosts}.example"
        lines = [f"@ 0x00000007\ni {n}\no 20\nl <{n}@bench>\ne s@example.com\n"]
        lines.append("s local - s@example.com 0\n")
        lines += [f"r           smtp {host} u{i}@{host} 0\n" for i in range(rcpts)]
        lines.append("m\nSubject: bench\n\n")
        (po.transport / f"{prefix}{n}").write_text("".join(lines))
        (po.queue / f"{prefix}{n}").write_text("Subject: bench\n\nbody\n")
    (root / "auth").write_text("admin:pw:ALL:[127.0.0.0]/8\n")
    (root / "auth").chmod(0o600)
    (root / "conf").write_text(CONF)


def query(addr: tuple[str, int], command: str) -> str:
    with socket.create_connection(addr, timeout=60) as s:
        f = s.makefile("rb")
        f.readline()
        ch = f.readline().decode().rstrip("\n")
        s.sendall(f"AUTH admin {authenticator(ch, 'pw')}\n{command}\nQUIT\n".encode())
        f.readline()
        out = f.read().decode()
        f.close()
    return out


def rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def cpu_seconds(pid: int, *, children: bool = False) -> float:
    """User + system CPU of a live process (the box may be shared: wall time lies);
    ``children``: of its reaped children instead (the daemon's load workers)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    first = 13 if children else 11
    return (int(fields[first]) + int(fields[first + 1])) / os.sysconf("SC_CLK_TCK")


def run(root: Path, files: int) -> tuple[float, int]:
    ready = root / "ready"
    ready.unlink(missing_ok=True)
    argv = [sys.executable, "-m", "scheduler", "serve", "-P", str(root / "po")]
    argv += ["-c", str(root / "conf"), "-a", str(root / "auth"), "-l", "127.0.0.1:0"]
    argv += ["--ready-file", str(ready), "--log-level", "WARNING", "-HH"]
    env = {**os.environ, "ZCONFIG": str(root / "none")}
    t0 = time.monotonic()
    proc = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL)
    try:
        while not ready.exists():
            time.sleep(0.01)
        host, _, port = ready.read_text().split()[0].rpartition(":")
        addr = (host, int(port))
        while True:
            m = re.search(r"Msgs:\s+(\d+)", query(addr, "SHOW SNMP"))
            if m and int(m.group(1)) >= files:
                break
            time.sleep(0.05)
        elapsed = time.monotonic() - t0
        if files:
            print(
                f"daemon CPU until all loaded: {cpu_seconds(proc.pid):.2f} s"
                f" (+ {cpu_seconds(proc.pid, children=True):.2f} s in load workers)"
            )
        return elapsed, rss(proc.pid)
    finally:
        proc.terminate()
        proc.wait()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--files", type=int, default=100_000)
    ap.add_argument("--rcpts", type=int, default=10)
    ap.add_argument("--hosts", type=int, default=10_000)
    ap.add_argument(
        "--root",
        type=Path,
        default=None,
        help="build the postoffice here once and reuse it on later runs (kept)",
    )
    args = ap.parse_args()
    keep = args.root is not None
    root = args.root if keep else Path(tempfile.mkdtemp(prefix="zsb"))
    try:
        if not (root / "empty").is_dir():
            (root / "empty").mkdir(parents=True)
            build(root / "empty", 0, 1, 1)
        _, empty_rss = run(root / "empty", 0)
        t = time.monotonic()
        if not (keep and (root / "po").is_dir()):
            build(root, args.files, args.rcpts, args.hosts)
            print(
                f"built {args.files} files x {args.rcpts} rcpts"
                f" in {time.monotonic() - t:.1f} s"
            )
        elapsed, loaded_rss = run(root, args.files)
        total = args.files * args.rcpts
        print(
            f"startup to all loaded: {elapsed:.2f} s ({args.files / elapsed:,.0f} files/s)"
        )
        print(f"RSS empty {empty_rss / 1e6:.1f} MB, loaded {loaded_rss / 1e6:.1f} MB")
        print(f"RSS per queued recipient: {(loaded_rss - empty_rss) / total:.0f} B")
    finally:
        if not keep:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
