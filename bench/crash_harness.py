"""Crash consistency: deliver through the real daemon while SIGKILLing it and its agents.

    python bench/crash_harness.py [--messages 300] [--rcpts 3] [--kills 120]
                                  [--seconds 900] [--seed N] [--keep]

A temporary postoffice; a loopback SMTP sink (``scheduler.demo.sink.SmtpSink``) that records
every accepted (Message-ID, recipient); ``mailq-scheduler serve`` whose ``smtp/*``
clause relays everything to the sink (``smtp -F [127.0.0.1] -p PORT``, the real smtp
agent). Messages are submitted
with ``spool.submit.submit`` (several recipients each) while the harness, at random
moments, SIGKILLs the daemon alone, the daemon with all its agents, or one agent, and
restarts the daemon after every daemon kill. At each kill it snapshots which recipients
were locked (``~``) in the control files: those are "in flight".

Afterwards it lets the daemon drain the queue and checks: every recipient delivered at
least once (lost must be 0); duplicates counted, and split into explained (the recipient
was in flight at a kill) and unexplained; every remaining control file parses
(``spool.controlfile.parse``) and ``mailq-spool check`` is clean; no control or message
file is left behind once its message is done; nothing was quarantined. Prints the figures
and exits 1 if anything was lost or corrupt.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from scheduler.demo.sink import Delivery, SinkPolicy, SmtpSink
from spool.controlfile import parse
from spool.errors import SpoolError
from spool.layout import Postoffice, init_postoffice
from spool.submit import submit

Key = tuple[str, str]  # (Message-ID, recipient address)

CONF = """\
*/*\tinterval=1s idlemax=5s expiry=5d retries="1 1 2 3"
\tmaxchannel=0 maxring=20 overfeed=10

smtp/*\tcommand="{command}"
"""


class SinkThread:
    """The SMTP sink on its own event loop in a thread; records accepted keys."""

    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay
        self.accepted: collections.Counter[Key] = collections.Counter()
        self.lock = threading.Lock()
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._sink: SmtpSink | None = None

    def _record(self, delivery: Delivery) -> None:
        with self.lock:
            for rcpt in delivery.recipients:
                self.accepted[(delivery.message_id, rcpt.lower())] += 1
        if self.delay:
            # recorded as accepted, but the 250 reaches the agent only later: a kill
            # in this window is exactly what makes a duplicate
            time.sleep(self.delay)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._sink = SmtpSink(SinkPolicy(), on_delivery=self._record, timeout=60)
        self.port = self._loop.run_until_complete(self._sink.start())
        self._ready.set()
        self._loop.run_forever()

    def start(self) -> SinkThread:
        self._thread.start()
        self._ready.wait(10)
        return self

    def stop(self) -> None:
        if self._sink is not None:
            fut = asyncio.run_coroutine_threadsafe(self._sink.close(), self._loop)
            with contextlib.suppress(Exception):
                fut.result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    def snapshot(self) -> collections.Counter[Key]:
        with self.lock:
            return collections.Counter(self.accepted)


@dataclass
class Figures:
    submitted_msgs: int = 0
    expected: set[Key] = field(default_factory=set)
    daemon_kills: int = 0
    group_kills: int = 0
    agent_kills: int = 0
    restarts: int = 0
    in_flight: set[Key] = field(default_factory=set)
    in_flight_events: int = 0


class Harness:
    def __init__(self, args: argparse.Namespace, root: Path) -> None:
        self.args = args
        self.root = root
        self.rng = random.Random(args.seed)
        self.po: Postoffice = init_postoffice(root / "po")
        self.sink = SinkThread(args.sink_delay).start()
        self.auth = root / "scheduler.auth"
        self.auth.write_text("admin:adminpw:ALL:[127.0.0.0]/8\n")
        self.auth.chmod(0o600)
        self.conf = root / "scheduler.conf"
        command = f"builtin:smtp -F [127.0.0.1] -p {self.sink.port}"
        self.conf.write_text(CONF.format(command=command))
        self.log = root / "daemon.log"
        self.ready = root / "ready"
        self.proc: subprocess.Popen[bytes] | None = None
        self.fig = Figures()
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("LISTEN_")}
        self.env.update(
            ZCONFIG=str(root / "zmailer.conf"), POSTOFFICE=str(self.po.root)
        )

    # -- the daemon -----------------------------------------------------------------

    def start_daemon(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.ready.unlink()
        argv = [sys.executable, "-m", "scheduler", "serve", "-P", str(self.po.root)]
        argv += ["-c", str(self.conf), "-a", str(self.auth), "-l", "127.0.0.1:0"]
        argv += ["--ready-file", str(self.ready), "--shutdown-timeout", "2"]
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                argv,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + 30
        while not self.ready.exists():
            if self.proc.poll() is not None:
                raise SystemExit(
                    f"daemon exited with {self.proc.returncode}; see {self.log}"
                )
            if time.monotonic() > deadline:
                raise SystemExit(f"daemon not ready in 30 s; see {self.log}")
            time.sleep(0.01)

    def agent_pids(self) -> list[int]:
        """Children of the daemon (its transport agents), from /proc."""
        if self.proc is None:
            return []
        pids = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            with contextlib.suppress(OSError, IndexError, ValueError):
                stat = (entry / "stat").read_text()
                ppid = int(stat.rsplit(")", 1)[1].split()[1])
                if ppid == self.proc.pid:
                    pids.append(int(entry.name))
        return pids

    def kill(self) -> str:
        assert self.proc is not None
        roll = self.rng.random()
        if roll < 0.2:
            agents = self.agent_pids()
            if agents:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.rng.choice(agents), signal.SIGKILL)
                self.fig.agent_kills += 1
                self.snapshot_in_flight()
                return "agent"
        if roll < 0.45:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.fig.group_kills += 1
            kind = "group"
        else:
            self.proc.send_signal(signal.SIGKILL)
            self.fig.daemon_kills += 1
            kind = "daemon"
        self.proc.wait()
        self.snapshot_in_flight()
        self.start_daemon()
        self.fig.restarts += 1
        return kind

    def snapshot_in_flight(self) -> None:
        """Recipients locked (``~``) in any control file right after a kill."""
        self.fig.in_flight_events += 1
        for path in self.po.transport.rglob("*"):
            if not path.is_file() or not path.name[:1].isdigit():
                continue
            try:
                cf = parse(path.read_bytes(), str(path))
            except (OSError, SpoolError):
                continue
            for r in cf.recipients:
                if r.status == "~" and cf.log_id:
                    self.fig.in_flight.add((cf.log_id, r.user.lower()))

    def stop_daemon(self) -> int:
        if self.proc is None:
            return 0
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
            return -9

    # -- mail -----------------------------------------------------------------------

    def submit_one(self, n: int) -> None:
        msgid = f"<crash-{n}@harness.example>"
        rcpts = [f"u{n}r{j}@d{j % 4}.example" for j in range(self.args.rcpts)]
        body = f"Message-ID: {msgid}\nSubject: crash {n}\n\nbody {n}\n".encode()
        submit(self.po, "sender@harness.example", rcpts, body)
        self.fig.submitted_msgs += 1
        for r in rcpts:
            self.fig.expected.add((msgid, r.lower()))

    def delivered(self) -> collections.Counter[Key]:
        return self.sink.snapshot()

    def control_files(self) -> list[Path]:
        return [
            p
            for p in self.po.transport.rglob("*")
            if p.is_file() and p.name[:1].isdigit()
        ]

    # -- the run --------------------------------------------------------------------

    def run(self) -> int:
        args = self.args
        t0 = time.monotonic()
        deadline = t0 + args.seconds
        self.start_daemon()
        per_kill = max(1, args.messages // max(1, args.kills // 2))
        n = 0
        kinds: collections.Counter[str] = collections.Counter()
        total_kills = 0
        reserve = min(60.0, args.seconds / 3)  # time kept for the final drain
        while total_kills < args.kills and time.monotonic() < deadline - reserve:
            for _ in range(per_kill):
                if n < args.messages:
                    self.submit_one(n)
                    n += 1
            time.sleep(self.rng.uniform(0.05, args.max_gap))
            kinds[self.kill()] += 1
            total_kills += 1
        while n < args.messages:
            self.submit_one(n)
            n += 1
        kill_phase = time.monotonic() - t0
        # Drain: every message done means no control file left.
        while time.monotonic() < deadline:
            delivered = self.delivered()
            if not self.control_files() and self.fig.expected <= set(delivered):
                break
            time.sleep(0.5)
        drain_done = time.monotonic() - t0
        rc = self.stop_daemon()
        return self.report(kinds, total_kills, kill_phase, drain_done, rc)

    def report(
        self,
        kinds: collections.Counter[str],
        total_kills: int,
        kill_phase: float,
        drain_done: float,
        rc: int,
    ) -> int:
        fig = self.fig
        delivered = self.delivered()
        lost = fig.expected - set(delivered)
        dups = {k: c - 1 for k, c in delivered.items() if c > 1}
        explained = {k: c for k, c in dups.items() if k in fig.in_flight}
        unexplained = {k: c for k, c in dups.items() if k not in fig.in_flight}
        corrupt = []
        for path in self.control_files():
            try:
                parse(path.read_bytes(), str(path))
            except SpoolError as exc:
                corrupt.append(str(exc))
        check = subprocess.run(
            [sys.executable, "-m", "spool", "check", "-P", str(self.po.root)],
            capture_output=True,
            text=True,
            env=self.env,
        )
        leftover_ctl = [
            p.relative_to(self.po.root).as_posix() for p in self.control_files()
        ]
        leftover_msg = [  # message files whose control file is gone (orphans)
            p.relative_to(self.po.root).as_posix()
            for p in self.po.queue.rglob("*")
            if p.is_file()
        ]
        frozen = (
            sorted(p.name for p in self.po.freezer.glob("*"))
            if self.po.freezer.exists()
            else []
        )
        print(
            f"messages x recipients      : {fig.submitted_msgs} x {self.args.rcpts} = {len(fig.expected)}"
        )
        print(
            f"kills survived             : {total_kills} (daemon alone {kinds['daemon']}, "
            f"daemon+agents {kinds['group']}, one agent {kinds['agent']})"
        )
        print(f"daemon restarts            : {fig.restarts}")
        print(f"kill phase / all delivered : {kill_phase:.1f} s / {drain_done:.1f} s")
        print(f"recipients delivered       : {len(set(delivered) & fig.expected)}")
        print(f"messages lost (recipients) : {len(lost)}")
        print(
            f"duplicate deliveries       : {sum(dups.values())} "
            f"(explained by in-flight at a kill: {sum(explained.values())}, "
            f"unexplained: {sum(unexplained.values())})"
        )
        print(f"recipients in flight at kills: {len(fig.in_flight)}")
        print(f"corrupt control files      : {len(corrupt)}")
        print(
            f"mailq-spool check          : rc={check.returncode} {check.stdout.strip()[:200]!r}"
        )
        print(
            f"left behind (ctl / msg)    : {len(leftover_ctl)} / {len(leftover_msg)}"
            " (msg: orphans, see docs/reliability.md)"
        )
        print(f"quarantined                : {len(frozen)}")
        print(f"final SIGTERM exit status  : {rc}")
        for key in sorted(lost)[:10]:
            print(f"  LOST {key}")
        for key in sorted(unexplained)[:10]:
            print(f"  UNEXPLAINED DUPLICATE {key} x{unexplained[key] + 1}")
        for item in corrupt[:10] + leftover_ctl[:10] + leftover_msg[:10] + frozen[:10]:
            print(f"  LEFT {item}")
        # Orphaned message files (a kill between the two unlinks of remove_message) are
        # reported, not failed: they make nothing lost or delivered twice.
        bad = (
            lost
            or corrupt
            or unexplained
            or check.returncode != 0
            or leftover_ctl
            or frozen
        )
        return 1 if bad else 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--messages", type=int, default=300)
    p.add_argument("--rcpts", type=int, default=3)
    p.add_argument("--kills", type=int, default=120)
    p.add_argument("--seconds", type=float, default=900.0, help="hard bound on the run")
    p.add_argument(
        "--max-gap", type=float, default=0.8, help="max seconds between kills"
    )
    p.add_argument("--seed", type=int, default=1)
    p.add_argument(
        "--sink-delay",
        type=float,
        default=0.02,
        help="seconds between accepting a message and sending its 250",
    )
    p.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = p.parse_args()
    root = Path(tempfile.mkdtemp(prefix="zmc"))  # short: AF_UNIX path limit
    harness = Harness(args, root)
    try:
        return harness.run()
    finally:
        if harness.proc is not None and harness.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(harness.proc.pid, signal.SIGKILL)
            harness.proc.wait()
        harness.sink.stop()
        if args.keep:
            print(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
