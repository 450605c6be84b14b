"""Record the real ZMailer's replies for generated spools into the golden fixture.

``python -m bench.oracle_diff.record [-o FILE] SEED...|A-B``

For each seed: the spool (control files and ages, so the fixture does not depend on
later changes to the generator), the time it was aged from, and the real scheduler's
replies to SHOW SNMP, SHOW QUEUE SHORT/THREADS/THREADS2, SHOW THREAD for every thread
and SHOW COUNTERS. One JSON object per line, gzip-compressed. ``tests/oracle/`` replays
them against our core and reports (see its README).
"""

from __future__ import annotations

import argparse
import gzip
import json
import signal
import sys
import tempfile
import time
from pathlib import Path

from bench.oracle_diff.gen import make_spool
from bench.oracle_diff.runner import AUTH, CONF, collect, oracle_available
from bench.oracle_diff.sweep import _seeds

DEFAULT = Path(__file__).resolve().parents[2] / "tests/oracle/golden.jsonl.gz"
KEPT = ("SHOW ",)  # the MAILQ v2 replies (the real mailq client's output is not kept)


def record(seed: int, work: Path) -> dict[str, object]:
    spool = make_spool(seed)
    now = time.time()
    res = collect(spool, work, ("real",), now=now, mailq=False)["real"]
    counters = res.get("SHOW COUNTERS", "")
    res["SHOW COUNTERS"] = "\n".join(
        line.split(" ", 1)[0] for line in counters.split("\n")
    )
    return {
        "seed": seed,
        "now": now,
        "files": [[m.name, m.data.decode("utf-8"), m.age] for m in spool.messages],
        "replies": {k: v for k, v in res.items() if k.startswith(KEPT)},
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("-o", "--output", type=Path, default=DEFAULT)
    ap.add_argument("seeds", nargs="+")
    opts = ap.parse_args(argv)
    # a SIGTERM unwinds like an exception, so the daemons of the running seed are stopped
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if not oracle_available():
        print("no ZMailer oracle (see /work/shared/oracle/README.md)", file=sys.stderr)
        return 2
    out: list[str] = [json.dumps({"conf": CONF, "auth": AUTH, "zmailer": "70d34a57"})]
    with tempfile.TemporaryDirectory(prefix="oracle-rec-") as tmp:
        for seed in _seeds(opts.seeds):
            try:
                rec = record(seed, Path(tmp) / str(seed))
            except (RuntimeError, TimeoutError, OSError) as exc:
                print(f"seed {seed}: skipped: {exc}", file=sys.stderr, flush=True)
                continue
            out.append(json.dumps(rec, sort_keys=True))
            print(f"seed {seed}: {len(rec['replies'])} replies", flush=True)  # type: ignore[arg-type]
    opts.output.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(opts.output, "wt", encoding="utf-8") as f:
        f.write("\n".join(out) + "\n")
    print(f"wrote {len(out) - 1} seed(s) to {opts.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
