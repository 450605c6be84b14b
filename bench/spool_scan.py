"""Benchmark: scan + read + parse every control file of a postoffice, against a plain
read of the same tree.

    python bench/spool_scan.py [--files N] [--rcpts R] [--dir D] [--keep]

Builds N control files (R recipients each, 2-level hash directories, with message
files) unless D already holds that many, warms the page cache by reading everything
once, then measures (a) ``spool.scan.scan`` + ``store.read_control`` + ``parse`` of
every file and (b) a plain ``os.scandir`` + open/read loop over the same tree.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

from spool.controlfile import format_quad, format_recipient_line, parse
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


def parse_all(po: Postoffice) -> tuple[int, int]:
    files = recipients = 0
    transport = str(po.transport) + "/"
    for entry in scan(po):
        path = transport + entry.relpath
        cf = parse(read_control(path), path)
        files += 1
        recipients += len(cf.recipients)
    return files, recipients


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--files", type=int, default=100_000)
    ap.add_argument("--rcpts", type=int, default=10)
    ap.add_argument("--dir", type=Path, default=None)
    ap.add_argument("--keep", action="store_true", help="keep the postoffice")
    ap.add_argument("--repeat", type=int, default=3, help="best of this many runs")
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
        best_parse = best_plain = float("inf")
        files = rcpts = plain = 0
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            files, rcpts = parse_all(po)
            best_parse = min(best_parse, time.perf_counter() - t0)
            t0 = time.perf_counter()
            plain = plain_read(str(po.transport))
            best_plain = min(best_plain, time.perf_counter() - t0)
        assert plain == files, (plain, files)
        a, b = files / best_parse, plain / best_plain
        print(
            f"(a) scan+read+parse: {files} files, {rcpts} recipients in {best_parse:.2f} s:"
            f" {a:,.0f} files/s, {rcpts / best_parse:,.0f} recipients/s"
        )
        print(
            f"(b) plain scandir+read: {plain} files in {best_plain:.2f} s: {b:,.0f} files/s"
        )
        print(f"ratio (a)/(b): {a / b:.2f}")
    finally:
        if not args.keep and args.dir is None:
            shutil.rmtree(root)


if __name__ == "__main__":
    main()
