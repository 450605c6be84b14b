"""SMTP delivery throughput: messages through our smtp agent into a loopback sink.

    python bench/smtp_delivery.py [--messages N] [--rcpts R] [--mode direct|daemon|both]

``direct``: the smtp agent is fed every job line by this script (the agent alone: parse,
lock, SMTP transaction, mark), one process. ``daemon``: the real scheduler daemon
(``python -m scheduler serve``) loads the postoffice and runs smtp agents against the sink;
timed from daemon start until the sink has every message and the spool is empty.
Prints messages/s and recipients/s.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from spool.layout import Postoffice, init_postoffice  # noqa: E402
from spool.scan import scan  # noqa: E402
from spool.submit import submit  # noqa: E402
from tests.smtpsink import ThreadedSmtpSink  # noqa: E402

BODY = b"From: bench@example.com\nSubject: bench\n\n" + b"x" * 2000 + b"\n"


def host_of(i: int, hosts: int) -> str:
    return f"h{i % hosts}.example"


def build(po: Postoffice, messages: int, rcpts: int, hosts: int) -> list[str]:
    """Message i goes to host h<i % hosts>; the agents relay every host to the sink."""
    out = []
    for i in range(messages):
        host = host_of(i, hosts)
        users = [("smtp", host, f"u{i}.{j}@{host}") for j in range(rcpts)]
        out.append(
            submit(po, "bench@example.com", users, BODY, hash_levels=2, notify=False)
        )
    return out


def run_direct(po: Postoffice, rels: list[str], port: int, hosts: int) -> float:
    jobs = "".join(f"{r}\t{host_of(i, hosts)}\n" for i, r in enumerate(rels)) + "\n"
    cmd = [
        sys.executable,
        "-m",
        "scheduler.ta.smtp",
        "-h",
        "bench",
        "-F",
        "[127.0.0.1]",
    ]
    cmd += ["-p", str(port)]
    t0 = time.perf_counter()
    proc = subprocess.run(
        cmd, input=jobs.encode(), cwd=po.transport, capture_output=True, check=True
    )
    elapsed = time.perf_counter() - t0
    oks = sum(1 for line in proc.stdout.splitlines() if b"\tok " in line)
    print(f"  direct: {oks} recipients reported ok")
    return elapsed


def run_daemon(po: Postoffice, port: int, sink: ThreadedSmtpSink, want: int) -> float:
    tmp = Path(po.root).parent
    conf = tmp / "scheduler.conf"
    conf.write_text(
        "*/*\tinterval=1m expiry=1d maxchannel=0 maxring=50 overfeed=150\n"
        f'smtp/*\tmaxchannel=20 maxring=20 command="smtp -h bench -F [127.0.0.1] -p {port}"\n'
    )
    auth = tmp / "scheduler.auth"
    auth.write_text("nobody:nobody:SNMP QQ TT: [127.0.0.1]/8\n")
    ready = tmp / "ready"
    cmd = [
        sys.executable,
        "-m",
        "scheduler",
        "serve",
        "-P",
        str(po.root),
        "-c",
        str(conf),
    ]
    cmd += ["-a", str(auth), "-l", "127.0.0.1:0", "--ready-file", str(ready)]
    t0 = time.perf_counter()
    with subprocess.Popen(cmd, stderr=subprocess.DEVNULL) as proc:
        try:
            while len(sink.transactions) < want or scan(po):
                if proc.poll() is not None:
                    raise SystemExit(f"daemon exited with {proc.returncode}")
                if time.perf_counter() - t0 > 600:
                    raise SystemExit("timeout waiting for delivery")
                time.sleep(0.05)
            return time.perf_counter() - t0
        finally:
            proc.terminate()
            proc.wait(30)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--messages", type=int, default=10_000)
    ap.add_argument(
        "--hosts", type=int, default=100, help="destinations, all routed to the sink"
    )
    ap.add_argument("--rcpts", type=int, default=1)
    ap.add_argument("--mode", choices=["direct", "daemon", "both"], default="both")
    args = ap.parse_args()
    modes = ["direct", "daemon"] if args.mode == "both" else [args.mode]
    for mode in modes:
        with tempfile.TemporaryDirectory() as d, ThreadedSmtpSink() as sink:
            po = init_postoffice(Path(d) / "po")
            rels = build(po, args.messages, args.rcpts, args.hosts)
            total = args.messages * args.rcpts
            os.sync()
            if mode == "direct":
                elapsed = run_direct(po, rels, sink.port, args.hosts)
            else:
                elapsed = run_daemon(po, sink.port, sink, args.messages)
            got = len(sink.transactions)
            print(
                f"{mode}: {args.messages} msgs x {args.rcpts} rcpts to {args.hosts} hosts, "
                f"queue drained in {elapsed:.2f} s: "
                f"{args.messages / elapsed:.0f} msgs/s, {total / elapsed:.0f} rcpts/s "
                f"(sink got {got} transactions, {sink.sessions} sessions)"
            )


if __name__ == "__main__":
    main()
