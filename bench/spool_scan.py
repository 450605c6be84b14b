"""Benchmark: scan + read + parse every control file of a postoffice, against a plain
read of the same tree.

    python bench/spool_scan.py [--files N] [--rcpts R] [--dir D] [--keep]
                               [--repeat K] [--retain] [--gc default|disable|freeze]

Builds N control files (R recipients each, 2-level hash directories, with message
files) unless D already holds that many, warms the page cache by reading everything
once, then measures, best of K, interleaved:

(a) ``spool.scan.scan`` + ``store.read_control`` + ``parse`` of every file, taking
    what a caller takes from it:
    (a1) ``cf.recipients``: every :class:`Recipient` object (what the scheduler's
         loader uses today);
    (a2) ``cf.pending_summary()`` + ``cf.has_locked_recipients``: the tuples the
         loader needs, without building the objects;
    (a3) nothing: ``parse`` alone (every line validated, recipients not built);
(b) a plain ``os.scandir`` + ``open().read()`` loop over the same tree.

Wall-clock and process CPU time are both printed (best of K each); on a shared
machine the CPU figures move much less.

``--retain`` keeps every parsed file alive until the end of a pass (as a loader that
holds what it loaded); ``--gc`` then shows what the cyclic GC costs and saves.
"""

from __future__ import annotations

import argparse
import gc
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from spool.controlfile import ControlFile, format_quad, format_recipient_line, parse
from spool.ids import hash_prefix
from spool.layout import Postoffice, init_postoffice
from spool.scan import make_hash_dirs, scan
from spool.store import read_control

MESSAGE = b"From: a@example.com\nSubject: bench\nMessage-Id: <x@y>\n\nbody\n"


def control(number: int, rcpts: int) -> bytes:
    lines = [
        f"@ 0x00000007\ni {number}\no 56\nl <{number}.bench@example.com>\n"
        "e alice@example.com\ns local - alice@example.com 0\n".encode()
    ]
    for i in range(rcpts):
        host = f"mx{(number + i) % 97}.example.net"
        lines.append(
            format_recipient_line(format_quad("smtp", host, f"u{i}@{host}", "0"))
        )
    lines.append(b"m\nFrom: a@example.com\nSubject: bench\nMessage-Id: <x@y>\n\n")
    return b"".join(lines)


def build(po: Postoffice, files: int, rcpts: int) -> None:
    for number in range(100000, 100000 + files):
        prefix = hash_prefix(number, 2)
        if number < 100000 + 676:
            make_hash_dirs(po, prefix)
        (po.queue / (prefix + str(number))).write_bytes(MESSAGE)
        (po.transport / (prefix + str(number))).write_bytes(control(number, rcpts))


def plain_read(top: str) -> int:
    count = 0
    stack = [top]
    while stack:
        with os.scandir(stack.pop()) as it:
            for entry in it:
                if entry.is_dir(follow_symlinks=False):
                    stack.append(entry.path)
                else:
                    with open(entry.path, "rb") as f:
                        f.read()
                    count += 1
    return count


def _recipients(cf: ControlFile) -> int:
    return len(cf.recipients)


def _summary(cf: ControlFile) -> int:
    if cf.has_locked_recipients:
        raise AssertionError("no locked recipients in the bench files")
    return len(cf.pending_summary())


def _nothing(cf: ControlFile) -> int:
    return 0


TAKES: dict[str, Callable[[ControlFile], int]] = {
    "a1 recipients": _recipients,
    "a2 pending_summary": _summary,
    "a3 parse only": _nothing,
}


def parse_all(
    po: Postoffice, take: Callable[[ControlFile], int], retain: bool
) -> tuple[int, int]:
    files = recipients = 0
    kept: list[ControlFile] = []
    transport = str(po.transport) + "/"
    for entry in scan(po):
        path = transport + entry.relpath
        cf = parse(read_control(path), path)
        files += 1
        recipients += take(cf)
        if retain:
            kept.append(cf)
    return files, recipients


def _gc_mode(mode: str) -> None:
    gc.collect()
    if mode == "disable":
        gc.disable()
    elif mode == "freeze":
        gc.freeze()  # everything alive now is left out of later collections


def _gc_restore() -> None:
    gc.unfreeze()
    gc.enable()
    gc.collect()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--files", type=int, default=100_000)
    ap.add_argument("--rcpts", type=int, default=10)
    ap.add_argument("--dir", type=Path, default=None)
    ap.add_argument("--keep", action="store_true", help="keep the postoffice")
    ap.add_argument("--repeat", type=int, default=3, help="best of this many runs")
    ap.add_argument("--retain", action="store_true", help="keep parsed files alive")
    ap.add_argument("--gc", choices=["default", "disable", "freeze"], default="default")
    args = ap.parse_args()
    root = args.dir or Path(tempfile.mkdtemp(prefix="spool-bench-"))
    po = init_postoffice(root)
    try:
        if len(scan(po)) != args.files:
            t0 = time.perf_counter()
            build(po, args.files, args.rcpts)
            print(
                f"built {args.files} files in {time.perf_counter() - t0:.1f} s at {root}"
            )
        plain_read(str(po.transport))  # warm the cache
        best = dict.fromkeys([*TAKES, "b"], float("inf"))
        cpu = dict.fromkeys([*TAKES, "b"], float("inf"))
        counts: dict[str, tuple[int, int]] = {}
        plain = 0
        for _ in range(args.repeat):
            for name, take in TAKES.items():
                _gc_mode(args.gc)
                c0, t0 = time.process_time(), time.perf_counter()
                counts[name] = parse_all(po, take, args.retain)
                best[name] = min(best[name], time.perf_counter() - t0)
                cpu[name] = min(cpu[name], time.process_time() - c0)
                _gc_restore()
            c0, t0 = time.process_time(), time.perf_counter()
            plain = plain_read(str(po.transport))
            best["b"] = min(best["b"], time.perf_counter() - t0)
            cpu["b"] = min(cpu["b"], time.process_time() - c0)
        b, b_cpu = plain / best["b"], plain / cpu["b"]
        print(f"gc={args.gc} retain={args.retain} repeat={args.repeat}")
        for name in TAKES:
            files, rcpts = counts[name]
            assert plain == files, (plain, files)
            a, a_cpu = files / best[name], files / cpu[name]
            print(
                f"({name}) scan+read+parse: {files} files, {rcpts} recipients"
                f" in {best[name]:.2f} s: {a:,.0f} files/s, ratio to (b) {a / b:.2f}"
                f" | CPU {cpu[name]:.2f} s: {a_cpu:,.0f} files/s, ratio {a_cpu / b_cpu:.2f}"
            )
        print(
            f"(b) plain scandir+read: {plain} files in {best['b']:.2f} s: {b:,.0f} files/s"
            f" | CPU {cpu['b']:.2f} s: {b_cpu:,.0f} files/s"
        )
    finally:
        if not args.keep and args.dir is None:
            shutil.rmtree(root)


if __name__ == "__main__":
    main()
