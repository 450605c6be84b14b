"""A/B of the warm ``SHOW THREAD`` and the full dump of two daemons, with a raw server.

Usage::

    python bench/mq2_detail.py --tmp /dev/shm/x --ab /path/to/old/tree [--rounds 3]

Builds the 1M layout of ``bench/vs_zmailer.py`` (``--messages`` x ``--rcpts``: a tenth
of the messages send every recipient to the busy host) once, then alternates rounds of
this tree's daemon ("new") and another tree's ("old", ``--ab``), each on a fresh copy of
the spool: the busiest thread's ``SHOW THREAD`` (first, then ``--repeat`` warm), the
sequential dump (THREADS2 + every ``SHOW THREAD``: first, then two warm), RSS after load
and after the dumps; and, between the rounds, the raw asyncio server writing the recorded
bytes. Wall times are medians; "cpu" is the daemon's main (loop) thread's own CPU time
(``/proc/PID/schedstat``), which a loaded machine does not inflate.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.vs_zmailer import (
    BUSY_HOST,
    DEFAULTS,
    OURS,
    Daemon,
    Session,
    build_spool,
    loadavg,
    raw_sample,
    rss,
    sequential_dump,
    wait_loaded,
)

BUSY = f"SHOW THREAD smtp {BUSY_HOST}"


def loop_cpu(pid: int) -> float:
    """CPU seconds of the process's main thread (the event loop)."""
    return int(Path(f"/proc/{pid}/schedstat").read_text().split()[0]) / 1e9


def timed(pid: int, fn):  # type: ignore[no-untyped-def]
    c0, t0 = loop_cpu(pid), time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, loop_cpu(pid) - c0, out


def one_round(d: Daemon, spool: Path, conf: str, total: int, rcpts: int,
              repeat: int) -> tuple[dict[str, float], dict[str, bytes]]:  # fmt: skip
    d.start(spool, conf)
    assert d.proc is not None
    pid = d.proc.pid
    wait_loaded(d, total, rcpts)
    time.sleep(1.0)
    out: dict[str, float] = {"rss_loaded": rss(pid)}
    s = Session(d.port)
    answers: dict[str, bytes] = {}
    walls, cpus = [], []
    for _ in range(repeat + 1):
        wall, cpu, (_, answers[BUSY]) = timed(pid, lambda: s.command(BUSY))
        walls.append(wall)
        cpus.append(cpu)
    s.close()
    out["busy_first"], out["busy_first_cpu"] = walls[0], cpus[0]
    out["busy"], out["busy_cpu"] = (
        statistics.median(walls[1:]),
        statistics.median(cpus[1:]),
    )
    dumps, dcpus = [], []
    for _ in range(3):
        wall, cpu, (_, _, dumped) = timed(pid, lambda: sequential_dump(d.port))
        dumps.append(wall)
        dcpus.append(cpu)
    answers.update(dumped)
    out["dump_first"], out["dump_first_cpu"] = dumps[0], dcpus[0]
    out["dump"], out["dump_cpu"] = (
        statistics.median(dumps[1:]),
        statistics.median(dcpus[1:]),
    )
    out["rss_dumped"] = rss(pid)
    d.stop()
    return out, answers


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--tmp", type=Path, default=None)
    ap.add_argument("--ab", type=Path, help="the other tree (old code)")
    ap.add_argument("--messages", type=int, default=100_000)
    ap.add_argument("--rcpts", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--only", default="", help="comma list of labels: new,old")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="mq2d", dir=args.tmp))
    n, per = args.messages, args.rcpts
    here = Path(__file__).resolve().parents[1]
    trees = {"new": here}
    if args.ab:
        trees["old"] = args.ab
    if args.only:
        trees = {k: v for k, v in trees.items() if k in args.only.split(",")}
    daemons = {
        label: Daemon(label, f"env PYTHONPATH={tree} " + OURS, tmp / f"run-{label}")
        for label, tree in trees.items()
    }
    try:
        build_spool(
            tmp / "spool" / "po", n,
            lambda i: BUSY_HOST if i % 10 == 0 else f"h{i % 1000}.example", per,
            lambda i, k: BUSY_HOST if i % 10 == 0 else f"h{(i + 97 * k) % 1000}.example",
        )  # fmt: skip
        conf = DEFAULTS + 'smtp/*\tqueueonly command="bitbucket"\n'
        got: dict[str, list[dict[str, float]]] = {k: [] for k in [*daemons, "raw"]}
        labels = list(daemons)
        for r in range(args.rounds):
            order = labels if r % 2 == 0 else labels[::-1]
            for label in order:
                res, answers = one_round(daemons[label], tmp / "spool", conf, n, n * per,
                                         args.repeat)  # fmt: skip
                got[label].append(res)
                print(f"{label:4} busy {res['busy'] * 1e3:6.1f} ms (cpu {res['busy_cpu'] * 1e3:5.1f})"
                      f" first {res['busy_first'] * 1e3:6.1f} (cpu {res['busy_first_cpu'] * 1e3:5.1f})"
                      f"  dump {res['dump']:.3f} s (cpu {res['dump_cpu']:.3f})"
                      f" first {res['dump_first']:.3f} (cpu {res['dump_first_cpu']:.3f})"
                      f"  RSS {res['rss_loaded'] / 1e6:.1f} -> {res['rss_dumped'] / 1e6:.1f} MB"
                      f" (+{(res['rss_dumped'] / res['rss_loaded'] - 1) * 100:.1f} %)"
                      f"  load {loadavg()}", flush=True)  # fmt: skip
                raw = raw_sample(
                    {k: v for k, v in answers.items() if k.startswith("SHOW")}, tmp, 5
                )
                got["raw"].append({"busy": raw.get(BUSY, 0.0), "dump": raw["dump"]})
                print(f"raw  busy {raw.get(BUSY, 0.0) * 1e3:6.1f} ms  dump {raw['dump']:.3f} s",
                      flush=True)  # fmt: skip
        print(f"\nmedians (load at end {loadavg()}):")
        for label, rows in got.items():
            keys = rows[0].keys()
            med = {k: statistics.median([r[k] for r in rows]) for k in keys}
            print(label, "  ".join(f"{k}={v:.4g}" for k, v in med.items()))
    finally:
        for d in daemons.values():
            d.stop()
        if os.environ.get("MQ2D_KEEP") is None:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
