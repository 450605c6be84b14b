"""Live differential mode: both schedulers unfrozen, the same deterministic agent.

Each scheduler gets an identical copy of a postoffice and the same scheduler.conf, whose
clauses all run the real ZMailer ``smtp`` TA (``$ZM/bin/ta/smtp``) against a loopback
SMTP sink of its own (:class:`scheduler.demo.sink.SmtpSink`; one per scheduler, so the
deliveries can be told apart). The sink decides by the recipient's domain:

* ``*.defer.example``: ``450`` to RCPT (the TA reports that recipient ``deferred``);
* ``*.reject.example``: ``550`` (``error``, a bounce);
* ``*.down.example``: routed by the ``smtpdown`` channel to a closed port (``deferall``);
* anything else: accepted (``ok``).

Both run until their queues settle, then every report is read (as in :mod:`runner`,
masking times within seconds), plus the set of recipients each sink received and the
bounces each scheduler put back into the spool (``$POSTOFFICE/router/``, as ZMailer's
error path writes them).

``python -m bench.oracle_diff.live first [real|ours|both]`` prints the first-deferral
record of a fresh thread (issue 12 work item 1); ``python -m bench.oracle_diff.live
diff 1-20`` runs the live differential over generated spools.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import re
import shutil
import socket
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from bench.oracle_diff import compare, runner
from bench.oracle_diff.runner import (
    AUTH,
    ZM,
    Daemon,
    Mq2,
    _wait,
)
from scheduler.demo.sink import Delivery, SinkPolicy, SmtpSink
from spool.layout import init_postoffice

__all__ = [
    "LIVE_CONF",
    "LiveResult",
    "diff_live",
    "live_conf",
    "live_spool",
    "run_live",
]

DAY = 86400

REPO = Path(__file__).resolve().parents[2]
SMTP_TA = f"{ZM}/bin/ta/smtp -s -x -h zmtest.invalid -F [127.0.0.1]"
LIVE_CONF = """\
*/*\tinterval=1m idlemax=4m expiry=3d expiry2=1d
\tretries="1 1 2 3 5 8 13 21 34" maxchannel=0 maxring=20 overfeed=150 ageorder
smtpdown/*\tcommand="@SMTP@ -c $channel -p 9"
smtp/*\tcommand="@SMTP@ -p @PORT@"
"""
POLICY = SinkPolicy(
    defer=frozenset({"defer.example"}),
    reject=frozenset({"reject.example"}),
    defer_texts=("450 4.2.1 Mailbox busy, try again later",),
)


def live_conf(port: int, template: str = LIVE_CONF) -> str:
    return template.replace("@SMTP@", SMTP_TA).replace("@PORT@", str(port))


class SinkThread:
    """SMTP sinks in a background event loop (one per scheduler)."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.loop.set_exception_handler(
            lambda _loop, _ctx: None
        )  # sessions cut at close
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.sinks: list[SmtpSink] = []

    def new(self) -> SmtpSink:
        sink = SmtpSink(POLICY, timeout=60)
        asyncio.run_coroutine_threadsafe(sink.start(), self.loop).result(10)
        self.sinks.append(sink)
        return sink

    def close(self) -> None:
        for sink in self.sinks:
            asyncio.run_coroutine_threadsafe(sink.close(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


def start_real(root: Path) -> Daemon:
    """The real scheduler, not frozen."""
    return runner.start_real(root, frozen=False)


def start_ours(root: Path) -> Daemon:
    zconf = root / "zmailer.conf"
    zconf.write_text(f"POSTOFFICE={root / 'po'}\nMAILSERVER=127.0.0.1\n")
    return runner.start_ours(root, zconf, frozen=False)


def prepare(root: Path, files: dict[str, tuple[bytes, float]], conf: str) -> None:
    """A postoffice with ``files`` (name -> (control file, mtime))."""
    if root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True)
    po = root / "po"
    init_postoffice(po)
    (root / "scheduler.conf").write_text(conf)
    auth = root / "scheduler.auth"
    auth.write_text(AUTH)
    auth.chmod(0o600)
    for name, (data, when) in files.items():
        for d, body in (("transport", data), ("queue", b"Subject: t\n\nhi\n")):
            p = po / d / name
            p.write_bytes(body)
            os.utime(p, (when, when))


_BUSY = re.compile(r"\tProc|\bpend=|\bS=|Proc=|\bHA=")


def wait_idle(port: int, limit: float = 60.0) -> None:
    """Until no agent works on any thread and the thread list stops changing."""
    last, same = None, 0
    deadline = time.monotonic() + limit
    while same < 4 and time.monotonic() < deadline:
        try:
            mq = Mq2(port)
            t2 = mq.ask("SHOW QUEUE THREADS2")
            snmp = mq.ask("SHOW SNMP")
            mq.close()
        except OSError:
            time.sleep(0.3)
            continue
        busy = re.search(r"Proc=\d|OF=[1-9]|S=(?:LARVA|STUFF|FINISH)", t2) is not None
        state = re.sub(r"W=-?\d+s|QA=\S+|Uptime: .*", "", t2 + snmp)
        same = 0 if busy or state != last else same + 1
        last = state
        time.sleep(0.5)


def threads_of(threads2: str) -> list[tuple[str, str]]:
    out = []
    for line in threads2.splitlines()[1:]:
        parts = line.split("\t")
        if len(parts) >= 3 and parts[2].startswith("N="):
            out.append((parts[0], parts[1]))
    return out


def snapshot(port: int) -> dict[str, str]:
    mq = Mq2(port)
    try:
        out = {"t": str(int(time.time()))}
        out["SHOW QUEUE THREADS2"] = t2 = mq.ask("SHOW QUEUE THREADS2")
        for ch, host in sorted(set(threads_of(t2))):
            out[f"SHOW THREAD {ch} {host}"] = mq.ask(f"SHOW THREAD {ch} {host}")
        out["SHOW QUEUE SHORT"] = mq.ask("SHOW QUEUE SHORT")
        return out
    finally:
        mq.close()


@dataclass
class LiveResult:
    reports: dict[str, str]
    delivered: list[str]
    bounces: list[str] = field(default_factory=list)
    remaining: list[str] = field(default_factory=list)


def _bounces(po: Path) -> list[str]:
    """Bounce control files the scheduler wrote (``router/`` or ``transport/``),
    summarised as ``sender -> recipients`` lines."""
    out = []
    for d in ("router", "transport"):
        for p in sorted((po / d).rglob("*")):
            if not p.is_file():
                continue
            text = p.read_bytes().decode("latin-1")
            if "Content-Type: multipart/report" in text or "\nto <" in text.lower():
                out.append(f"{d}: " + " ".join(re.findall(r"^r.*$", text, re.M)))
    return out


def _remaining(po: Path) -> list[str]:
    """The ``r`` lines (mark, channel, host, user) and ``d`` lines (time and the
    TA's local port masked) of every control file left, by file name."""
    out = []
    for p in sorted((po / "transport").rglob("*")):
        if p.is_file():
            for line in p.read_bytes().decode("latin-1").splitlines():
                if line.startswith("r"):
                    quad = " ".join(line[2:].split()[-4:-1])
                    out.append(f"{p.name} r{line[1]} {quad}")
                elif line.startswith("d"):
                    line = re.sub(r"::\d+\t", "::T\t", line)
                    line = re.sub(r"\|\d+", "|N", line)
                    line = re.sub(r"\[\d+\]", "[PID]", line)
                    out.append(f"{p.name} {line!r}")
    return sorted(out)


def run_live(
    files: dict[str, tuple[bytes, float]],
    work: Path,
    which: tuple[str, ...] = ("real", "ours"),
    template: str = LIVE_CONF,
    after: float = 0.0,
    late: bool = False,
) -> dict[str, LiveResult]:
    """Run ``files`` through each scheduler in ``which`` at once, unfrozen; wait until
    idle (plus ``after`` seconds) and collect. ``late``: start on an empty spool and
    put the files in place (and send ``NEW`` for each) once both run, so neither loads
    them at startup (the real one runs with ``-S``, which holds every thread back
    until its startup load is done, where ours starts threads as files load)."""
    sinks = SinkThread()
    daemons: dict[str, Daemon] = {}
    mine: dict[str, SmtpSink] = {}
    roots: dict[str, Path] = {}
    try:
        for n, who in enumerate(which):
            name = who if who not in daemons else who + "2"
            sink = mine[name] = sinks.new()
            root = roots[name] = work / f"{n}-{name}"
            prepare(root, {} if late else files, live_conf(sink.port, template))
            daemons[name] = start_real(root) if who == "real" else start_ours(root)
        for d in daemons.values():
            _wait(lambda d=d: d.zconf.exists(), "zmailer.conf")  # type: ignore[misc]
        time.sleep(1.0)
        if late:
            for root in roots.values():
                place_late(root / "po", files)
        for d in daemons.values():
            wait_idle(d.port)
        time.sleep(after)
        out = {}
        for name, d in daemons.items():
            got = sorted(
                f"{r} {m.sender or '<>'}"
                for m in list(mine[name].deliveries)
                for r in _rcpts(m)
            )
            po = roots[name] / "po"
            out[name] = LiveResult(snapshot(d.port), got, _bounces(po), _remaining(po))
        return out
    finally:
        for d in daemons.values():
            d.stop()
        sinks.close()


def place_late(po: Path, files: dict[str, tuple[bytes, float]]) -> None:
    """Message files, then control files (written aside and renamed), then ``NEW``."""
    for name, (data, when) in files.items():
        q = po / "queue" / name
        q.write_bytes(b"Subject: t\n\nhi\n")
        os.utime(q, (when, when))
        tmp = po / "transport" / f".{name}"
        tmp.write_bytes(data)
        os.utime(tmp, (when, when))
        tmp.rename(po / "transport" / name)
    for name in files:
        with (
            contextlib.suppress(OSError),
            socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock,
        ):
            sock.sendto(f"NEW {name}".encode(), str(po / ".scheduler.notify"))


def _rcpts(m: Delivery) -> list[str]:
    return list(m.recipients)


def control(
    n: int, rcpts: list[tuple[str, str, str]], sender: str = "a@ok.example"
) -> bytes:
    lines = [
        "@ 0x00000007",
        f"i {n}",
        "o 100",
        f"l <{n}.t@t>",
        f"e {sender}",
        f"s smtp ok.example {sender} 0",
    ]
    for ch, host, user in rcpts:
        lines.append(f"r           {ch} {host} {user} 0")
    lines += ["m", "Subject: t", "", ""]
    return "\n".join(lines).encode()


FIRST = {
    "100001": [("smtp", "one.defer.example", "u@one.defer.example")],
    "100002": [
        ("smtp", "two.defer.example", "u@two.defer.example"),
        ("smtp", "two.defer.example", "v@two.defer.example"),
    ],
    "100003": [("smtpdown", "x.down.example", "u@x.down.example")],
    "100004": [("smtp", "ok.example", "u@ok.example")],
}


def first(which: tuple[str, ...], at: int | None = None) -> None:
    """Fresh threads whose first run defers: print the reports after it. ``at``: start
    the schedulers at that second of a minute (the interval is 1m)."""
    import tempfile

    if at is not None:
        while int(time.time()) % 60 != at:
            time.sleep(0.2)
    now = time.time()
    files = {n: (control(int(n), r), now - 60) for n, r in FIRST.items()}
    work = Path(tempfile.mkdtemp(prefix="live-first-"))
    res = run_live(files, work, which)
    for name, r in res.items():
        print(f"== {name} t={r.reports['t']}")
        for k, v in r.reports.items():
            if k != "t":
                print(f"-- {k}")
                print(v, end="")
        print("-- delivered", r.delivered)
    print("work", work)


DOMAINS = [
    "ok.example",
    "Ok.Example",
    "a.defer.example",
    "b.reject.example",
    "c.down.example",
]
LIVE_SENDERS = [
    ("a@ok.example", "smtp ok.example a@ok.example 0"),
    ('"o\'hara smith"@ok.example', 'smtp ok.example "o\'hara smith"@ok.example 0'),
    ("<>", "error <> <> 0"),
    ("-", "local - - 0"),
]
LIVE_NOTIFY = ["", "", "NOTIFY=FAILURE ", "NOTIFY=NEVER ", "NOTIFY=SUCCESS,FAILURE "]


def live_spool(seed: int, now: float) -> dict[str, tuple[bytes, float]]:
    """Seed ``seed``'s live spool: 3-8 messages, 1-4 recipients each, on the sink's
    domains (accept, 450, 550, closed port), some lines already done, various NOTIFY,
    ages from 30 s to a day (all different: the clauses say ``ageorder``, so both feed
    a thread's messages oldest first, where without it ZMailer shuffles them).

    The real scheduler segfaults writing any report (``scnotaryreport``, a documented
    Fix), so no message may complete with a report due: a message with a recipient that
    gets a ``d`` line (a rejected one with NOTIFY=FAILURE, the default, or an accepted
    one with NOTIFY=SUCCESS) also gets a deferred one, and nothing is old enough to
    expire. The ``d`` lines then stay in the control file, where the harness compares
    them (the bounce each scheduler would send).

    Which message of a ``deferall`` thread is fed first is left to chance by ZMailer
    (it loads files in ctime order, to the second, then starts the thread with what it
    has; ours starts it with the first file loaded), and the smtp TA reports
    ``deferall`` once per recipient of that job: so a message has at most one
    recipient on the closed port, and the last-feed field is compared as a count."""
    rng = random.Random(seed)
    files: dict[str, tuple[bytes, float]] = {}
    for k in range(rng.randrange(3, 9)):
        n = 100001 + k
        env, sline = rng.choice(LIVE_SENDERS)
        lines = ["@ 0x00000007", f"i {n}", "o 100", f"l <{n}.{seed}@live>"]
        if env != "-" or rng.random() < 0.5:
            lines.append(f"e {env if env != '-' else 'postmaster@ok.example'}")
        lines.append(f"s {sline}")
        reports, held, down = False, False, False
        for _ in range(rng.choice([1, 1, 2, 3, 4])):
            dom = rng.choice(DOMAINS)
            if "down" in dom and down:
                dom = DOMAINS[2]  # one per message: see below
            down = down or "down" in dom
            user = rng.choice(["u", "v", "User.Name", "x-y"])
            mark = rng.choice(" " * 8 + "+-")
            notify = rng.choice(LIVE_NOTIFY)
            rcpt(lines, mark, dom, user, notify, rng)
            if mark == " ":
                if "defer" in dom or "down" in dom:
                    held = True
                elif ("reject" in dom and "NEVER" not in notify) or "SUCCESS" in notify:
                    reports = True
        if reports and not held:
            rcpt(lines, " ", rng.choice(DOMAINS[2::2]), "held", "", rng)
        lines += [
            "m",
            f"Message-Id: <{n}.{seed}@live>",
            f"Subject: live {seed}",
            "",
            "",
        ]
        age = rng.choice([rng.randrange(30, 600), rng.randrange(600, DAY)])
        files[str(n)] = ("\n".join(lines).encode(), now - age)
    return files


def rcpt(
    lines: list[str], mark: str, dom: str, user: str, notify: str, rng: random.Random
) -> None:
    ch = "smtpdown" if "down" in dom else "smtp"
    lines.append(f"r{mark}          {ch} {dom} {user}@{dom} 0")
    if notify or rng.random() < 0.3:
        lines.append(f"N {notify}ORCPT=rfc822;{user}@{dom}")


def _portless(reports: dict[str, str]) -> dict[str, str]:
    """Replies without the key ``t``, with the TA's local port masked, and SHOW THREAD
    field 7 (last feed) of ``smtpdown`` threads replaced by how many were fed (which
    one ZMailer feeds first is chance, see :func:`live_spool`)."""
    out = {}
    for k, v in reports.items():
        if k == "t":
            continue
        v = re.sub(r"\|\d+\]: Connection refused", "|PORT]: Connection refused", v)
        if k.startswith("SHOW THREAD smtpdown "):
            rows = v.split("\n")
            fed = 0
            for i, row in enumerate(rows):
                f = row.split("\t")
                if len(f) > 8 and row[:1].isalpha():
                    fed += f[6] != "0"
                    f[6] = "-"
                    rows[i] = "\t".join(f)
            v = "\n".join(rows) + f"fed {fed}\n"
        out[k] = v
    return out


def diff_live(a: LiveResult, b: LiveResult) -> list[str]:
    """Every report (times within :data:`compare.TOLERANCE`), the recipients the sinks
    received, the bounces written and the recipient lines left in the spool."""
    out = compare.differences(_portless(a.reports), _portless(b.reports))
    for what in ("delivered", "bounces", "remaining"):
        x, y = getattr(a, what), getattr(b, what)
        if x != y:
            out.append(f"{what}:\n  real {x}\n  ours {y}")
    return out


def times(a: LiveResult, b: LiveResult) -> list[str]:
    """SHOW THREAD field 6 (the wakeup) of each thread, where the two differ by more
    than 2 s (both runs start within a second of each other)."""
    out = []
    for key, text in a.reports.items():
        if not key.startswith("SHOW THREAD "):
            continue
        wa = [
            r.split("\t")[5] for r in text.splitlines() if r[:1].isalpha() and "\t" in r
        ]
        wb = [
            r.split("\t")[5]
            for r in b.reports.get(key, "").splitlines()
            if r[:1].isalpha() and "\t" in r
        ]
        if wa and wb and abs(int(wa[0]) - int(wb[0])) > 2:
            out.append(f"{key}: wakeup real {wa[0]} ours {wb[0]}")
    return out


def sweep(seeds: list[int], keep: Path | None = None, late: bool = False) -> int:
    import tempfile

    total = 0
    for seed in seeds:
        # start between :10 and :40 of a minute: the first runs are over and nothing is
        # due again (the next boundary, + 10 s) when the replies are read
        while not 10 <= time.time() % 60 <= 40:
            time.sleep(0.5)
        work = Path(tempfile.mkdtemp(prefix=f"live-{seed}-"))
        res = run_live(live_spool(seed, time.time()), work, late=late)
        found = diff_live(res["real"], res["ours"]) + times(res["real"], res["ours"])
        total += bool(found)
        print(f"seed {seed}: {len(found)} difference(s)")
        for f in found:
            print("  " + f.replace("\n", "\n  "))
        if keep is not None:
            keep.mkdir(parents=True, exist_ok=True)
            (keep / f"{seed}.json").write_text(
                json.dumps({k: vars(v) for k, v in res.items()}, indent=1)
            )
        if not found:
            shutil.rmtree(work, ignore_errors=True)
    print(f"{total} of {len(seeds)} seeds differ")
    return 1 if total else 0


def _range(arg: str) -> list[int]:
    out: list[int] = []
    for part in arg.split(","):
        a, _, b = part.partition("-")
        out += list(range(int(a), int(b or a) + 1))
    return out


def main(argv: list[str]) -> int:
    if not argv or argv[0] == "first":
        which = argv[1] if len(argv) > 1 else "both"
        at = int(argv[2]) if len(argv) > 2 else None
        first(("real", "ours") if which == "both" else (which,), at)
        return 0
    if argv[0] in ("diff", "diff-late"):
        keep = Path(argv[2]) if len(argv) > 2 else None
        seeds = _range(argv[1] if len(argv) > 1 else "1-5")
        return sweep(seeds, keep, late=argv[0] == "diff-late")
    return 2


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main(sys.argv[1:]))
