"""Differential sweep: ``python -m bench.oracle_diff.sweep [--self] SEED...|A-B``.

Runs each seed's spool through the real ZMailer scheduler and ours (``--self``: the real
one twice, which must show no difference) and prints the differences by kind."""

from __future__ import annotations

import argparse
import collections
import signal
import sys
import tempfile
from pathlib import Path

from bench.oracle_diff.compare import differences
from bench.oracle_diff.gen import make_spool
from bench.oracle_diff.runner import collect, oracle_available


def _seeds(args: list[str]) -> list[int]:
    out: list[int] = []
    for a in args:
        lo, _, hi = a.partition("-")
        out.extend(range(int(lo), int(hi) + 1) if hi else [int(lo)])
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--self", action="store_true", help="the real scheduler vs itself")
    ap.add_argument(
        "-v", "--verbose", action="store_true", help="print every difference"
    )
    ap.add_argument("seeds", nargs="+")
    opts = ap.parse_args(argv)
    # a SIGTERM unwinds like an exception, so the daemons of the running seed are stopped
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if not oracle_available():
        print("no ZMailer oracle (see /work/shared/oracle/README.md)", file=sys.stderr)
        return 2
    who = ("real", "real") if opts.self else ("real", "ours")
    kinds: collections.Counter[str] = collections.Counter()
    bad = 0
    with tempfile.TemporaryDirectory(prefix="oracle-diff-") as tmp:
        for seed in _seeds(opts.seeds):
            try:
                res = collect(make_spool(seed), Path(tmp) / str(seed), who)
            except (RuntimeError, TimeoutError, OSError) as exc:
                print(f"seed {seed}: not compared: {exc}", flush=True)
                kinds["not compared"] += 1
                continue
            a, b = res.values()
            diffs = differences(a, b)
            bad += bool(diffs)
            print(f"seed {seed}: {len(diffs)} difference(s)", flush=True)
            for d in diffs:
                kinds[d.split(":", 1)[0].split(" ", 2)[:2].__str__()] += 1
                if opts.verbose:
                    print("  " + d.replace("\n", "\n  "))
    print(f"{bad} seed(s) with differences; by report: {dict(kinds)}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
