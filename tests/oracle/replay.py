"""Replay a golden record (real ZMailer replies for one generated spool) against our
loader, core and reports, without processes or sockets."""

from __future__ import annotations

import gzip
import json
import os
from pathlib import Path
from typing import Any

from mailq.server import reports
from scheduler.config.clauses import parse_config
from scheduler.core.scheduler import Scheduler
from scheduler.daemon.loader import Loader
from spool.counters import Counters
from spool.layout import init_postoffice

__all__ = ["GOLDEN", "load_golden", "our_replies", "write_record"]

GOLDEN = Path(__file__).with_name("golden.jsonl.gz")


def load_golden() -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """``(header, records)`` of the golden fixture."""
    with gzip.open(GOLDEN, "rt", encoding="utf-8") as f:
        lines = f.read().splitlines()
    return json.loads(lines[0]), [json.loads(line) for line in lines[1:] if line]


def write_record(rec: dict[str, Any], po_root: Path) -> None:
    """The record's spool in a fresh postoffice, aged from the record's ``now``."""
    init_postoffice(po_root)
    live = f"~{os.getpid():6d}"  # gen.LIVE_PID: a lock held by a live process
    for name, text, age in rec["files"]:
        when = rec["now"] - age
        text = text.replace("~LIVEPD", live)
        for sub, data in (("transport", text.encode("utf-8")), ("queue", b"x\n")):
            path = po_root / sub / name
            path.write_bytes(data)
            os.utime(path, (when, when))


def _multi(lines: Any) -> str:
    return "+OK until LF.LF\n" + "".join(line + "\n" for line in lines)


def our_replies(
    header: dict[str, Any], rec: dict[str, Any], tmp: Path
) -> dict[str, str]:
    """Our replies to the record's commands: the spool loaded the way the daemon loads
    it (frozen, 2-level hashing), the reports made at the record's time."""
    po_root = tmp / "po"
    write_record(rec, po_root)
    now = int(rec["now"])
    config = parse_config(header["conf"], "golden.conf", {})
    counters = Counters.open(None)
    core = Scheduler(config, counters, start_time=now, frozen=True)
    po = init_postoffice(po_root)
    loader = Loader(po, is_loaded=core.is_loaded, counters=counters, hash_levels=2)
    loader.scan(deep=True)
    while loader.queue.has_ready(now + 1):
        ev = loader.load_next(now)
        if ev is not None:
            core.handle(ev, now)
    out: dict[str, str] = {}
    for key in rec["replies"]:
        if key == "SHOW SNMP":
            out[key] = _multi(reports.snmp_report(core, now))
        elif key == "SHOW QUEUE SHORT":
            out[key] = _multi(reports.short_report(core, now))
        elif key == "SHOW QUEUE THREADS":
            out[key] = _multi(reports.threads_report(core, now))
        elif key == "SHOW QUEUE THREADS2":
            out[key] = _multi(reports.threads2_report(core, now))
        elif key.startswith("SHOW THREAD "):
            _, _, channel, host = key.split(" ", 3)
            out[key] = _multi(reports.thread_detail_report(core, channel, host, now))
        elif key == "SHOW COUNTERS":
            dump = _multi(counters.dump(now))
            out[key] = "\n".join(line.split(" ", 1)[0] for line in dump.split("\n"))
    return out
