"""SMTP delivery throughput: messages from a queue into a loopback sink.

    python bench/smtp_delivery.py [--messages N] [--hosts H] [--modes single,reuse,daemon,postfix]

Every mode delivers the same N messages (one recipient, a 2 kB body) to the same sink
(``tests.smtpsink``, asyncio, PIPELINING/DSN) on 127.0.0.1, from a queue built before
the clock starts:

``single``  our smtp agent, one process fed every job line, ``--no-reuse``: one SMTP
            session per message (connect, EHLO, MAIL, RCPT, DATA, QUIT);
``reuse``   the same agent with session reuse: jobs come grouped by host, as the
            scheduler feeds a thread, and one session carries each host's messages
            (RSET between them);
``daemon``  our scheduler daemon (``python -m scheduler serve``) with up to 20 smtp agents
            (maxchannel=20), timed from start until the sink has every message and the
            spool is empty;
``postfix`` Debian's Postfix relaying to the sink (``relayhost = [127.0.0.1]:port``,
            loopback only, DNS off, its defaults otherwise: connection cache on demand,
            destination concurrency up to 20). Messages are injected over SMTP into a
            private smtpd on 127.0.0.1 while ``defer_transports = smtp`` holds them in
            the queue; the clock runs from ``postqueue -f`` until the sink has them all.
            Needs root and the ``postfix`` package (the mode is skipped otherwise); it
            rewrites /etc/postfix/main.cf and master.cf (a benchmark machine only).
"""

from __future__ import annotations

import argparse
import os
import shutil
import smtplib
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from spool.layout import Postoffice, init_postoffice  # noqa: E402
from spool.scan import scan  # noqa: E402
from spool.submit import submit  # noqa: E402
from tests.smtpsink import ThreadedSmtpSink  # noqa: E402

BODY = b"From: bench@example.com\nSubject: bench\n\n" + b"x" * 2000 + b"\n"
LIMIT = 900.0


def host_of(i: int, hosts: int) -> str:
    return f"h{i % hosts}.example"


def build(po: Postoffice, messages: int, hosts: int) -> list[tuple[str, str]]:
    """Message i goes to u<i>@h<i % hosts>; returns (relpath, host) grouped by host."""
    out = []
    for i in range(messages):
        host = host_of(i, hosts)
        rel = submit(po, "bench@example.com", [("smtp", host, f"u{i}@{host}")], BODY,
                     hash_levels=2, notify=False)  # fmt: skip
        out.append((rel, host))
    return sorted(out, key=lambda job: job[1])


def wait_for(cond: Callable[[], bool], what: str) -> None:
    t0 = time.perf_counter()
    while not cond():
        if time.perf_counter() - t0 > LIMIT:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(0.02)


def run_agent(
    po: Postoffice, jobs: list[tuple[str, str]], port: int, reuse: bool
) -> float:
    lines = "".join(f"{rel}\t{host}\n" for rel, host in jobs) + "\n"
    cmd = [sys.executable, "-m", "scheduler.ta.smtp", "-h", "bench", "-F", "[127.0.0.1]",
           "-p", str(port)] + ([] if reuse else ["--no-reuse"])  # fmt: skip
    t0 = time.perf_counter()
    subprocess.run(cmd, input=lines.encode(), cwd=po.transport, capture_output=True,
                   check=True)  # fmt: skip
    return time.perf_counter() - t0


def run_daemon(po: Postoffice, port: int, sink: ThreadedSmtpSink, want: int) -> float:
    tmp = Path(po.root).parent
    conf = tmp / "scheduler.conf"
    conf.write_text(
        "*/*\tinterval=1m expiry=1d maxchannel=0 maxring=50 overfeed=150\n"
        f'smtp/*\tmaxchannel=20 maxring=20 command="builtin:smtp -h bench -F [127.0.0.1] -p {port}"\n'
    )
    auth = tmp / "scheduler.auth"
    auth.write_text("nobody:nobody:SNMP QQ TT: [127.0.0.1]/8\n")
    cmd = [sys.executable, "-m", "scheduler", "serve", "-P", str(po.root), "-c", str(conf),
           "-a", str(auth), "-l", "127.0.0.1:0", "--ready-file", str(tmp / "ready")]  # fmt: skip
    t0 = time.perf_counter()
    with subprocess.Popen(cmd, stderr=subprocess.DEVNULL) as proc:
        try:
            wait_for(
                lambda: len(sink.transactions) >= want and not scan(po), "the daemon"
            )
            return time.perf_counter() - t0
        finally:
            proc.terminate()
            proc.wait(30)


def postfix_available() -> bool:
    return os.geteuid() == 0 and shutil.which("postfix") is not None


def _postconf(*settings: str) -> None:
    subprocess.run(["postconf", "-e", *settings], check=True)


def run_postfix(port: int, sink: ThreadedSmtpSink, messages: int, hosts: int) -> float:
    inject = 10025
    _postconf(
        "inet_interfaces = loopback-only", "inet_protocols = ipv4", "mydestination =",
        "myhostname = bench.localdomain", f"relayhost = [127.0.0.1]:{port}",
        "disable_dns_lookups = yes", "smtp_host_lookup = native", "defer_transports = smtp",
        "mynetworks = 127.0.0.0/8", "smtpd_relay_restrictions = permit_mynetworks reject",
        "maximal_queue_lifetime = 1h", "smtp_tls_security_level = none",
    )  # fmt: skip
    subprocess.run(["postconf", "-M#", "smtp/inet"], check=True)
    subprocess.run(
        [
            "postconf",
            "-Me",
            f"127.0.0.1:{inject}/inet = 127.0.0.1:{inject} inet n - y - - smtpd",
        ],
        check=True,
    )
    subprocess.run(["postfix", "stop"], capture_output=True, check=False)
    subprocess.run(["postsuper", "-d", "ALL"], capture_output=True, check=False)
    subprocess.run(["postfix", "start"], check=True, capture_output=True)
    try:
        wait_for(lambda: _listening(inject), "postfix's smtpd")
        with smtplib.SMTP("127.0.0.1", inject) as s:
            for i in range(messages):
                host = host_of(i, hosts)
                s.sendmail(
                    "bench@example.com", [f"u{i}@{host}"], BODY.replace(b"\n", b"\r\n")
                )
        wait_for(lambda: _queued() >= messages, "postfix to queue everything")
        _postconf("defer_transports =")
        subprocess.run(["postfix", "reload"], check=True, capture_output=True)
        t0 = time.perf_counter()
        subprocess.run(["postqueue", "-f"], check=True)
        wait_for(lambda: len(sink.transactions) >= messages, "postfix to deliver")
        return time.perf_counter() - t0
    finally:
        subprocess.run(["postfix", "stop"], capture_output=True, check=False)


def _listening(port: int) -> bool:
    try:
        with smtplib.SMTP("127.0.0.1", port, timeout=2):
            return True
    except OSError:
        return False


def _queued() -> int:
    out = subprocess.run(["postqueue", "-j"], capture_output=True, check=False).stdout
    return out.count(b"\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--messages", type=int, default=2000)
    ap.add_argument(
        "--hosts", type=int, default=100, help="destinations (all to the sink)"
    )
    ap.add_argument("--modes", default="single,reuse,daemon,postfix")
    args = ap.parse_args()
    for mode in args.modes.split(","):
        if mode == "postfix" and not postfix_available():
            print("postfix: skipped (needs root and the postfix package)")
            continue
        with tempfile.TemporaryDirectory() as d, ThreadedSmtpSink() as sink:
            if mode == "postfix":
                elapsed = run_postfix(sink.port, sink, args.messages, args.hosts)
            else:
                po = init_postoffice(Path(d) / "po")
                jobs = build(po, args.messages, args.hosts)
                os.sync()
                if mode == "daemon":
                    elapsed = run_daemon(po, sink.port, sink, args.messages)
                else:
                    elapsed = run_agent(po, jobs, sink.port, reuse=mode == "reuse")
            print(
                f"{mode:8s} {args.messages} msgs to {args.hosts} hosts in {elapsed:6.2f} s: "
                f"{args.messages / elapsed:6.0f} msgs/s "
                f"(sink: {len(sink.transactions)} transactions, {sink.sessions} sessions)",
                flush=True,
            )


if __name__ == "__main__":
    main()
