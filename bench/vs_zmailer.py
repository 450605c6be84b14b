"""Side by side with the real ZMailer 3.0.1: dispatch, reports, dump, fairness, memory.

Runs two daemons from command templates on identical spools (fresh copies of one
generated postoffice for every sample) and alternates their samples (ours, ZMailer,
ours, ...), so a busy machine slows both alike. Prints one table of figures with the
ratio ZMailer / ours (> 1 means we are faster or smaller) and the load average.

* dispatch: ``--messages`` x 1 recipient over ``--hosts`` hosts, every job answered by
  the SAME minimal C agent (``bench/minta.c``, compiled with ``cc`` into a temp dir);
  recipients/s from the first poll that sees a delivery to the last recipient, and
  the CPU seconds of the daemon's whole process tree (daemon, agents, load workers).
* reports on a queue-only spool of ``--report-messages`` x 1 (one host holds 10 %%):
  every SHOW report, the busiest thread, the full ``mailq``-style dump (THREADS2 then
  SHOW THREAD of every thread, sequential) and "%% of raw": a plain asyncio server (its
  own process) writing our daemon's recorded bytes to the same client.
* fairness: another client's greeting and SHOW SNMP latency while one client
  pipelines the whole dump; a query while the spool is still loading; RSS after load
  and after all the dumps.

Templates are shell-split and may use {python} {po} {port} {conf} {auth} {wd}. The
ZMailer default needs the oracle build at /tmp/zm (see ../shared/oracle/README.md).

Python bytecode: an installed package has its modules compiled (pip writes the .pyc
files), while a source tree under ``PYTHONDONTWRITEBYTECODE=1`` compiles every module
at every start (about 0.1 s of CPU for the daemon, as much again for each process that
imports the project). So the project's packages (and every ``--precompile`` tree, e.g.
the copy of an older commit) are compiled first, as installed; ``--no-precompile``
measures the tree as it is.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import pickle
import re
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import contextlib

from mailq.protocol.auth import authenticator
from spool.ids import hash_prefix
from spool.layout import init_postoffice

HERE = Path(__file__).resolve().parent
OURS = (
    "env ZCONFIG={wd}/none {python} -m scheduler serve -P {po} -c {conf} -a {auth}"
    " -l 127.0.0.1:{port} -HH"
)
ZMAILER = "env ZM_PREFIX=/tmp/zm/inst /work/shared/oracle/zm-run {po} {port} {conf} {auth} {wd}"
DEFAULTS = '*/*\tinterval=1m expiry=5d retries="1 1 2 3" maxchannel=0 maxring=20 overfeed=150\n'
BUSY_HOST = "big.example"
SNMP_RE = re.compile(
    r"Msgs in (\d+) out (\d+) stored (\d+) Rcpnts in (\d+) out (\d+) stored (\d+)"
)


# ---------------------------------------------------------------- spools


def build_spool(
    po_root: Path,
    messages: int,
    host_of: Callable[[int], str],
    rcpts: int = 1,
    rcpt_host: Callable[[int, int], str] | None = None,
) -> Path:
    """A postoffice of ``messages`` x ``rcpts`` recipients, two-level hashed, as a
    router writes; recipient k of message n goes to ``rcpt_host(n, k)`` (default
    ``host_of(n)``)."""
    po = init_postoffice(po_root)
    made: set[str] = set()
    for n in range(100_000, 100_000 + messages):
        prefix = hash_prefix(n, 2)
        if prefix not in made:
            (po.transport / prefix).mkdir(parents=True, exist_ok=True)
            (po.queue / prefix).mkdir(parents=True, exist_ok=True)
            made.add(prefix)
        hosts = [rcpt_host(n, k) if rcpt_host else host_of(n) for k in range(rcpts)]
        lines = "".join(
            f"r           smtp {h} u{n}.{k}@{h} 0\n" for k, h in enumerate(hosts)
        )
        (po.transport / f"{prefix}{n}").write_text(
            f"@ 0x00000007\ni {n}\no 20\nl <{n}@bench>\ne s@example.com\n"
            f"s local - s@example.com 0\n{lines}"
            "m\nSubject: bench\n\n"
        )
        (po.queue / f"{prefix}{n}").write_text("Subject: bench\n\nbody\n")
    return po_root


# ---------------------------------------------------------------- processes


def _stat(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def descendants(pid: int) -> list[int]:
    kids: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError, IndexError):
                kids.setdefault(int(_stat(int(entry))[1]), []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        for kid in kids.get(todo.pop(), []):
            out.append(kid)
            todo.append(kid)
    return out


def tree_cpu(pid: int) -> float:
    """User + system CPU seconds of pid, its live descendants and their reaped children."""
    ticks = 0
    for p in [pid, *descendants(pid)]:
        try:
            f = _stat(p)
        except OSError:
            continue
        ticks += sum(int(x) for x in f[11:15])
    return ticks / os.sysconf("SC_CLK_TCK")


def rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


# ---------------------------------------------------------------- clients


class Session:
    """A blocking MAILQ v2 client session (greeting, AUTH, commands, replies)."""

    def __init__(self, port: int, timeout: float = 120) -> None:
        t0 = time.perf_counter()
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.buf = bytearray()
        greeting = self.until(b"\n", 2)
        self.greeting = time.perf_counter() - t0
        challenge = greeting.split(b"\n")[1].decode().strip()
        self.sock.sendall(f"AUTH admin {authenticator(challenge, 'pw')}\n".encode())
        self.until(b"\n")

    def until(self, sep: bytes, count: int = 1) -> bytes:
        found, scan = 0, 0
        while True:
            idx = self.buf.find(sep, scan)
            if idx >= 0:
                found, scan = found + 1, idx + len(sep)
                if found == count:
                    out = bytes(self.buf[:scan])
                    del self.buf[:scan]
                    return out
                continue
            scan = max(scan, len(self.buf) - len(sep) + 1)
            data = self.sock.recv(1 << 20)
            if not data:
                raise ConnectionError("closed")
            self.buf += data

    def reply(self) -> bytes:
        first = self.until(b"\n")
        if not first.startswith(b"+OK until"):
            return first
        return first + self.until(b"\n.\n")

    def command(self, line: str) -> tuple[float, bytes]:
        t0 = time.perf_counter()
        self.sock.sendall(line.encode() + b"\n")
        out = self.reply()
        return time.perf_counter() - t0, out

    def close(self) -> None:
        self.sock.close()


def snmp(session: Session) -> tuple[int, ...]:
    text = session.command("SHOW SNMP")[1].decode()
    m = SNMP_RE.search(text)
    if not m:
        raise ValueError(f"SHOW SNMP: {text!r}")
    return tuple(int(x) for x in m.groups())


def connect(port: int, deadline: float) -> Session:
    while True:
        try:
            return Session(port, timeout=30)
        except (OSError, ValueError, IndexError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.02)


def thread_commands(threads2: bytes) -> list[str]:
    lines = threads2.decode().split("\n")[1:]
    return [
        f"SHOW THREAD {f[0]} {f[1]}"
        for f in (line.split("\t") for line in lines)
        if len(f) > 2
    ]


# ---------------------------------------------------------------- daemons


@dataclass
class Daemon:
    name: str
    template: str
    root: Path
    proc: subprocess.Popen[bytes] | None = None
    port: int = 0
    kids: set[int] = field(default_factory=set)
    started: float = 0.0

    def start(self, spool: Path, conf: str) -> None:
        shutil.rmtree(self.root, ignore_errors=True)
        self.root.mkdir(parents=True)
        subprocess.run(
            ["cp", "-a", str(spool / "po"), str(self.root / "po")], check=True
        )
        (self.root / "conf").write_text(conf)
        (self.root / "auth").write_text("admin:pw:ALL:[127.0.0.0]/8\n")
        (self.root / "auth").chmod(0o600)
        (self.root / "wd").mkdir()
        self.port = free_port()
        argv = shlex.split(
            self.template.format(
                python=sys.executable, po=self.root / "po", port=self.port,
                conf=self.root / "conf", auth=self.root / "auth", wd=self.root / "wd",
            )
        )  # fmt: skip
        with open(self.root / "wd" / "out", "wb") as log:  # the child keeps it
            self.started = time.monotonic()  # (after the spool's copy)
            # in its work dir: "python -m" puts the cwd first on sys.path, which
            # would shadow a template's PYTHONPATH (an older commit's copy) with
            # the tree the bench runs from; this tree is the default PYTHONPATH
            path = os.environ.get("PYTHONPATH")
            tree = str(HERE.parent)
            env = dict(os.environ, PYTHONPATH=f"{tree}:{path}" if path else tree)
            self.proc = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                cwd=self.root / "wd", env=env,
            )  # fmt: skip

    def note_kids(self) -> None:
        if self.proc:
            self.kids.update(descendants(self.proc.pid))

    def stop(self) -> None:
        if self.proc is None:
            return
        self.note_kids()
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        for kid in self.kids:  # ZMailer's [TimeServer]; agents of either
            with contextlib.suppress(ProcessLookupError):
                os.kill(kid, signal.SIGTERM)
        self.kids.clear()
        self.proc = None
        shutil.rmtree(self.root, ignore_errors=True)


# ---------------------------------------------------------------- measurements


def dispatch_sample(
    d: Daemon, spool: Path, conf: str, messages: int
) -> dict[str, float]:
    """Rate from the agent's first report (its CLOCK_MONOTONIC stamp) to the first
    SHOW SNMP that shows every recipient out and nothing stored; tree CPU sampled
    (from /proc, not MQ2) as soon as the stamp appears and at the end."""
    stamp = d.root.parent / f"stamp-{d.name}"
    stamp.unlink(missing_ok=True)
    d.start(spool, conf.replace("@STAMP@", str(stamp)))
    t_start = d.started  # the figures count from the daemon's start, not the copy
    assert d.proc is not None
    cpu_first = 0.0
    while not stamp.exists():
        if time.monotonic() - t_start > 600 or d.proc.poll() is not None:
            raise TimeoutError(f"{d.name}: no delivery")
        time.sleep(0.002)
    cpu_first = tree_cpu(d.proc.pid)
    first = min(float(x) for x in stamp.read_text().split())
    s = connect(d.port, time.monotonic() + 120)
    loaded_at_first = snmp(s)[3]  # recipients in (loaded) when the first was delivered
    # once every message is loaded: (time, recipients out, tree CPU); ZMailer's -S
    # loads everything before its first delivery, ours loads and delivers at once
    loaded = (first, 0, cpu_first) if loaded_at_first >= messages else None
    while True:
        d.note_kids()
        st = snmp(s)
        now = time.monotonic()
        if loaded is None and st[3] >= messages:
            loaded = (now, st[4], tree_cpu(d.proc.pid))
        if st[4] >= messages and st[5] == 0 and st[2] == 0:
            break
        if now - t_start > 600:
            raise TimeoutError(f"{d.name}: dispatch did not finish: {st}")
        time.sleep(0.01)
    cpu_end = tree_cpu(d.proc.pid)
    s.close()
    d.stop()
    assert loaded is not None
    return {
        "rate": st[4] / (now - first),
        "cpu": cpu_end,
        "cpu_after_first": cpu_end - cpu_first,
        "total": now - t_start,
        "first": first - t_start,
        "done": float(st[4]),
        "loaded_at_first": float(loaded_at_first),
        "rate_loaded": (st[4] - loaded[1]) / (now - loaded[0]),
        "cpu_loaded": cpu_end - loaded[2],
    }


def median(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


BUSY_REPEAT = 15  # the busiest thread's SHOW THREAD is asked this often (at least)
REPORTS = [
    "SHOW QUEUE SHORT",
    "SHOW SNMP",
    "SHOW QUEUE THREADS",
    "SHOW QUEUE THREADS2",
    f"SHOW THREAD smtp {BUSY_HOST}",
]


def wait_loaded(
    d: Daemon, total: int, rcpts: int | None = None
) -> tuple[float, list[float], float]:
    """Poll with fresh sessions until every message is loaded.

    Returns (seconds to all loaded, latency of each query answered meanwhile, the
    first answer's latency from the daemon's start)."""
    t0 = time.monotonic()
    lat: list[float] = []
    first = 0.0
    while True:
        q0 = time.monotonic()
        try:
            s = Session(d.port, timeout=60)
            st = snmp(s)
            s.close()
        except (OSError, ValueError, IndexError):
            if time.monotonic() - t0 > 600:
                raise
            time.sleep(0.02)
            continue
        now = time.monotonic()
        if not first:
            first = now - t0
        lat.append(now - q0)
        if st[5] >= (rcpts or total) and st[2] >= total:
            return now - t0, lat, first
        time.sleep(0.05)


def sequential_dump(port: int) -> tuple[float, int, dict[str, bytes]]:
    s = Session(port)
    t0 = time.perf_counter()
    _, t2 = s.command("SHOW QUEUE THREADS2")
    answers = {"SHOW QUEUE THREADS2": t2}
    size = len(t2)
    for line in thread_commands(t2):
        _, out = s.command(line)
        answers[line] = out
        size += len(out)
    elapsed = time.perf_counter() - t0
    s.close()
    return elapsed, size, answers


def _greedy_client(port: int, commands: list[str], ready: Any, done: Any) -> None:
    """The pipelining client, in a process of its own (its parsing must not hold the
    GIL the probing client needs: that would time the bench, not the server)."""
    greedy = Session(port)
    payload = "".join(c + "\n" for c in commands).encode()
    sender = threading.Thread(target=greedy.sock.sendall, args=(payload,), daemon=True)
    ready.set()
    sender.start()
    for _ in commands:
        greedy.reply()
    done.set()
    greedy.close()


def pipelined_fairness(port: int, commands: list[str]) -> dict[str, float]:
    """One client pipelines every command at once; another measures meanwhile."""
    ctx = multiprocessing.get_context("fork")
    ready, done = ctx.Event(), ctx.Event()
    proc = ctx.Process(target=_greedy_client, args=(port, commands, ready, done))
    proc.start()
    ready.wait(60)
    t0 = time.perf_counter()
    greet: list[float] = []
    snmps: list[float] = []
    while not done.is_set():
        other = Session(port)
        greet.append(other.greeting)
        snmps.append(other.command("SHOW SNMP")[0])
        other.close()
        time.sleep(0.01)
    elapsed = time.perf_counter() - t0
    proc.join(60)
    return {
        "greedy": elapsed,
        "greet_max": max(greet, default=float("nan")),
        "greet_med": median(greet),
        "snmp_max": max(snmps, default=float("nan")),
        "snmp_med": median(snmps),
        "probes": float(len(greet)),
    }


def report_sample(d: Daemon, spool: Path, conf: str, total: int, repeat: int,
                  rcpts: int | None = None) -> tuple[dict[str, float], dict[str, bytes]]:  # fmt: skip
    d.start(spool, conf)
    assert d.proc is not None
    out: dict[str, float] = {}
    loaded, lat, first = wait_loaded(d, total, rcpts)
    out["load_s"] = loaded
    out["first_answer_s"] = first
    out["load_query_max"] = max(lat, default=float("nan"))
    out["load_query_med"] = median(lat)
    out["rss_loaded"] = rss(d.proc.pid)
    s = Session(d.port)
    answers: dict[str, bytes] = {}
    for line in REPORTS:
        times = []
        for _ in range(max(repeat, BUSY_REPEAT) if line == REPORTS[-1] else repeat):
            t, answers[line] = s.command(line)
            times.append(t)
        out[line] = median(times[1:] or times)  # warm: the first may fill caches
        out[line + " first"] = times[0]
        out[line + " bytes"] = len(answers[line])
    s.close()
    dumps: list[float] = []
    size = 0
    dumped: dict[str, bytes] = {}
    for _ in range(max(2, repeat)):
        t, size, dumped = sequential_dump(d.port)
        dumps.append(t)
    answers.update(dumped)
    out["dump"] = median(dumps[1:] or dumps)
    out["dump_first"] = dumps[0]
    out["dump_bytes"] = size
    fair = pipelined_fairness(d.port, list(dumped))
    out.update({f"fair_{k}": v for k, v in fair.items()})
    out["rss_dumped"] = rss(d.proc.pid)
    d.stop()
    return out, answers


# ---------------------------------------------------------------- raw server

RAW_SERVER = r"""
import asyncio, pickle, sys
answers = pickle.load(open(sys.argv[1], "rb"))
async def serve(reader, writer):
    writer.write(b"version zmailer 2.0\nMAILQ-V2-CHALLENGE: 1.2.3\n")
    while line := await reader.readline():
        if line.startswith(b"AUTH"):
            writer.write(b"+OK\n")
        else:
            writer.write(answers.get(line.rstrip(b"\n").decode(), b"+Bye bye\n"))
        await writer.drain()
    writer.close()
async def main():
    server = await asyncio.start_server(serve, "127.0.0.1", int(sys.argv[2]))
    print("ready", flush=True)
    await server.serve_forever()
asyncio.run(main())
"""


def raw_sample(answers: dict[str, bytes], tmp: Path, repeat: int) -> dict[str, float]:
    (tmp / "answers.pickle").write_bytes(pickle.dumps(answers))
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-c", RAW_SERVER, str(tmp / "answers.pickle"), str(port)],
        stdout=subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        proc.stdout.readline()
        out: dict[str, float] = {}
        s = Session(port)
        for line in REPORTS:
            times = max(repeat, BUSY_REPEAT) if line == REPORTS[-1] else repeat
            out[line] = median([s.command(line)[0] for _ in range(times)])
        s.close()
        out["dump"] = median([sequential_dump(port)[0] for _ in range(repeat)])
        return out
    finally:
        proc.terminate()
        proc.wait()


# ---------------------------------------------------------------- table


def alternate(names: list[str], samples: int) -> Iterator[str]:
    for i in range(samples):
        yield from (names if i % 2 == 0 else names[::-1])


def row(label: str, zm: float, ours: float, unit: str, raw: float | None = None,
        smaller_is_better: bool = True) -> str:  # fmt: skip
    ratio = (
        (zm / ours if smaller_is_better else ours / zm) if zm and ours else float("nan")
    )
    pct = f"{raw / ours * 100:.0f} %" if raw else ""
    return f"| {label} | {_fmt(zm, unit)} | {_fmt(ours, unit)} | {ratio:.2f} | {pct} |"


def _fmt(v: float, unit: str) -> str:
    if unit == "ms":
        return f"{v * 1000:.1f} ms"
    if unit == "s":
        return f"{v:.2f} s"
    if unit == "MB":
        return f"{v / 1e6:.1f} MB"
    return f"{v:,.0f}/s"


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--ours", default=OURS, help="our daemon's command template")
    ap.add_argument("--zmailer", default=ZMAILER, help="ZMailer's command template")
    ap.add_argument(
        "--label",
        default="ZMailer",
        help="the table's name for the --zmailer daemon (e.g. 'main' for a before/after)",
    )
    ap.add_argument("--samples", type=int, default=3, help="samples of each daemon")
    ap.add_argument("--messages", type=int, default=20_000)
    ap.add_argument("--hosts", type=int, default=200)
    ap.add_argument("--report-messages", type=int, default=100_000)
    ap.add_argument(
        "--report-rcpts", type=int, default=1, help="recipients per report message"
    )
    ap.add_argument("--report-repeat", type=int, default=3)
    ap.add_argument("--skip", default="", help="comma list: dispatch,reports")
    ap.add_argument(
        "--tmp", type=Path, default=None, help="work folder (default: a temp dir)"
    )
    ap.add_argument(
        "--precompile",
        type=Path,
        action="append",
        default=[],
        help="another source tree to compile to bytecode first (repeatable)",
    )
    ap.add_argument(
        "--no-precompile",
        action="store_true",
        help="leave bytecode as it is (see the module's doc)",
    )
    args = ap.parse_args()
    skip = set(filter(None, args.skip.split(",")))
    if args.zmailer == ZMAILER and not Path("/tmp/zm/inst/bin/scheduler").exists():
        sys.exit("no ZMailer at /tmp/zm: build it with ../shared/oracle/build-zmailer")
    tmp = Path(tempfile.mkdtemp(prefix="vszm", dir=args.tmp))
    daemons = {
        "zmailer": Daemon("zmailer", args.zmailer, tmp / "run-zmailer"),
        "ours": Daemon("ours", args.ours, tmp / "run-ours"),
    }
    print(
        f"machine: {os.cpu_count()} CPUs, {os.uname().release}; load average at start {loadavg()}"
    )
    if not args.no_precompile:
        precompile([HERE.parent, *args.precompile])
    lines: list[str] = []
    try:
        subprocess.run(
            ["cc", "-O2", "-o", str(tmp / "minta"), str(HERE / "minta.c")], check=True
        )
        if "dispatch" not in skip:
            lines += bench_dispatch(args, tmp, daemons)
        if "reports" not in skip:
            lines += bench_reports(args, tmp, daemons)
    finally:
        for d in daemons.values():
            d.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"\nload average at end {loadavg()}\n")
    print(f"| figure | {args.label} | ours | {args.label} / ours | % of raw |")
    print("|---|---|---|---|---|")
    print("\n".join(lines))


def precompile(trees: list[Path]) -> None:
    """Compile the project's packages in each tree to bytecode, as an install does."""
    for tree in trees:
        dirs = [
            str(tree / p)
            for p in ("scheduler", "mailq", "spool")
            if (tree / p).is_dir()
        ]
        subprocess.run([sys.executable, "-m", "compileall", "-q", *dirs], check=True,
                       stdout=subprocess.DEVNULL)  # fmt: skip
        print(f"bytecode compiled: {', '.join(dirs)}")


def bench_dispatch(
    args: argparse.Namespace, tmp: Path, daemons: dict[str, Daemon]
) -> list[str]:
    spool = tmp / "dispatch"
    t = time.monotonic()
    build_spool(spool / "po", args.messages, lambda n: f"h{n % args.hosts}.example")
    conf = DEFAULTS + f'smtp/*\tcommand="{tmp / "minta"} @STAMP@"\n'
    print(
        f"dispatch spool: {args.messages} x 1 over {args.hosts} hosts, built in {time.monotonic() - t:.1f} s"
    )
    got: dict[str, list[dict[str, float]]] = {"zmailer": [], "ours": []}
    for name in alternate(["ours", "zmailer"], args.samples):
        r = dispatch_sample(daemons[name], spool, conf, args.messages)
        got[name].append(r)
        print(f"  {name:8} {r['rate']:9,.0f} rcpt/s  tree CPU {r['cpu']:.2f} s"
              f" ({r['cpu_after_first']:.2f} s after the first delivery)"
              f"  {r['done']:.0f} done in {r['total']:.1f} s (first at {r['first']:.1f} s,"
              f" {r['loaded_at_first']:.0f} loaded then; once all loaded"
              f" {r['rate_loaded']:,.0f} rcpt/s, CPU {r['cpu_loaded']:.2f} s)"
              f"  load {loadavg()}")  # fmt: skip
    shutil.rmtree(spool, ignore_errors=True)
    med = {k: {f: median([r[f] for r in v]) for f in v[0]} for k, v in got.items()}
    z, o = med["zmailer"], med["ours"]
    return [
        row(f"dispatch {args.messages}x1 / {args.hosts} hosts, rcpt/s after first (median)",
            z["rate"], o["rate"], "/s", smaller_is_better=False),
        row("CPU of the process tree, whole run", z["cpu"], o["cpu"], "s"),
        row("CPU of the process tree after the first delivery",
            z["cpu_after_first"], o["cpu_after_first"], "s"),
        row("rcpt/s once every message is loaded (median)",
            z["rate_loaded"], o["rate_loaded"], "/s", smaller_is_better=False),
        row("CPU of the process tree once every message is loaded",
            z["cpu_loaded"], o["cpu_loaded"], "s"),
        row("start to the last delivery (load, agents, dispatch)",
            z["total"], o["total"], "s"),
        row("start to the first delivery", z["first"], o["first"], "s"),
    ]  # fmt: skip


def bench_reports(
    args: argparse.Namespace, tmp: Path, daemons: dict[str, Daemon]
) -> list[str]:
    spool = tmp / "reports"
    n = args.report_messages
    per = args.report_rcpts
    t = time.monotonic()

    def rcpt_host(i: int, k: int) -> str:
        # a tenth of the messages send every recipient to the busy host (one
        # vertex of `per` rows); the others spread theirs over 1,000 hosts
        return BUSY_HOST if i % 10 == 0 else f"h{(i + 97 * k) % 1000}.example"

    build_spool(
        spool / "po",
        n,
        lambda i: BUSY_HOST if i % 10 == 0 else f"h{i % 1000}.example",
        per,
        rcpt_host,
    )
    conf = DEFAULTS + 'smtp/*\tqueueonly command="bitbucket"\n'
    print(
        f"report spool: {n} x {per} queue-only, built in {time.monotonic() - t:.1f} s"
    )
    got: dict[str, list[dict[str, float]]] = {"zmailer": [], "ours": []}
    answers: dict[str, bytes] = {}
    for name in alternate(["ours", "zmailer"], args.samples):
        r, a = report_sample(daemons[name], spool, conf, n, args.report_repeat, n * per)
        if name == "ours":
            answers = a
        got[name].append(r)
        print(f"  {name:8} loaded in {r['load_s']:.1f} s, dump {r['dump']:.2f} s,"
              f" greeting under a pipelined dump max {r['fair_greet_max'] * 1000:.0f} ms,"
              f" RSS {r['rss_loaded'] / 1e6:.1f} -> {r['rss_dumped'] / 1e6:.1f} MB,"
              f" load {loadavg()}")  # fmt: skip
    raw = raw_sample(answers, tmp, args.report_repeat)
    shutil.rmtree(spool, ignore_errors=True)
    med = {k: {f: median([r[f] for r in v]) for f in v[0]} for k, v in got.items()}
    z, o = med["zmailer"], med["ours"]
    lines = [row(f"{line} ({o[line + ' bytes'] / 1e6:.2f} MB), {n * per // 1000}k", z[line], o[line], "ms", raw[line])
             for line in REPORTS]  # fmt: skip
    busy = REPORTS[-1]
    lines += [
        row(f"{busy}, first (rows formatted, not cached)", z[busy + " first"], o[busy + " first"], "ms", raw[busy]),
        row("full dump, sequential, first (not cached)", z["dump_first"], o["dump_first"], "s", raw["dump"]),
        row(f"full dump, sequential ({o['dump_bytes'] / 1e6:.1f} MB)", z["dump"], o["dump"], "s", raw["dump"]),
        row("pipelined dump (the greedy client)", z["fair_greedy"], o["fair_greedy"], "s"),
        row("another client's greeting meanwhile, max", z["fair_greet_max"], o["fair_greet_max"], "ms"),
        row("another client's greeting meanwhile, median", z["fair_greet_med"], o["fair_greet_med"], "ms"),
        row("its SHOW SNMP meanwhile, max", z["fair_snmp_max"], o["fair_snmp_max"], "ms"),
        row("its SHOW SNMP meanwhile, median", z["fair_snmp_med"], o["fair_snmp_med"], "ms"),
        row("startup to all loaded", z["load_s"], o["load_s"], "s"),
        row("first answer after start", z["first_answer_s"], o["first_answer_s"], "s"),
        row("a query while the spool loads, max", z["load_query_max"], o["load_query_max"], "ms"),
        row("a query while the spool loads, median", z["load_query_med"], o["load_query_med"], "ms"),
        row("RSS after load", z["rss_loaded"], o["rss_loaded"], "MB"),
        row("RSS after all dumps", z["rss_dumped"], o["rss_dumped"], "MB"),
    ]  # fmt: skip
    return lines


if __name__ == "__main__":
    main()
