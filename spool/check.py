"""Consistency check of a postoffice: corrupt control files, missing message files, and
message files no control file refers to (orphans, e.g. left by a crash between the two
unlinks of a completed message)."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from dataclasses import dataclass

from spool.controlfile import ControlFile, parse
from spool.errors import CorruptControlFile, SpoolError
from spool.layout import Postoffice
from spool.scan import scan, scan_queue
from spool.store import read_control

__all__ = ["ORPHAN_MIN_AGE", "Problem", "check_control", "check_postoffice"]

MAX_CONTROL_BYTES = 64 * 1024 * 1024  # the daemon's limit too
ORPHAN_MIN_AGE = 3600.0
"""A message file without a control file is only an orphan after this many seconds
(submission writes the message file first, then the control file)."""


@dataclass(frozen=True, slots=True)
class Problem:
    """One finding; ``str()`` is ``path:line: reason``."""

    relpath: str
    path: str
    line: int
    reason: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.reason}"


def _line_of(data: bytes, offset: int) -> int:
    return data.count(b"\n", 0, offset) + 1


def check_control(po: Postoffice, relpath: str, data: bytes) -> list[Problem]:
    """Problems of one control file: corrupt, no ``i``/``l`` line, no message file.

    ETRN request files (``T`` lines only, SCHED-REF 3.6) need no ``i``/``l`` line.
    """
    path = os.fspath(po.control_path(relpath))
    try:
        cf: ControlFile = parse(data, path)
    except CorruptControlFile as exc:
        return [Problem(relpath, path, exc.line, exc.reason)]
    if cf.etrn and cf.mid is None:
        return []
    problems = []
    if cf.mid is None:
        problems.append(
            Problem(relpath, path, 1, "missing 'i' line (message file name)")
        )
    if cf.log_id is None:
        problems.append(Problem(relpath, path, 1, "missing 'l' line (log identifier)"))
    if cf.mid is not None:
        message = po.message_path(relpath, cf.mid)
        if message.is_symlink() or (message.exists() and not message.is_file()):
            problems.append(
                Problem(
                    relpath, path, 1, f"message file {message} is not a regular file"
                )
            )
        elif not message.is_file():
            i_line = next(ln for ln in cf.lines if ln.tag == "i" and ln.status == " ")
            line = _line_of(data, i_line.offset)
            problems.append(
                Problem(relpath, path, line, f"missing message file {message}")
            )
    return problems


def check_postoffice(
    po: Postoffice, *, orphan_min_age: float = ORPHAN_MIN_AGE, now: float | None = None
) -> Iterator[Problem]:
    """Every problem of every control file (files vanishing meanwhile are skipped),
    then every orphaned message file older than ``orphan_min_age`` seconds."""
    referenced: set[str] = set()
    unreadable: list[str] = []
    for entry in scan(po, unreadable=unreadable):
        control = po.control_path(entry.relpath)
        try:
            data = read_control(control, MAX_CONTROL_BYTES)
        except FileNotFoundError:
            continue
        except (OSError, SpoolError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) else str(exc)
            yield Problem(
                entry.relpath, os.fspath(control), 0, f"cannot read: {reason}"
            )
            continue
        referenced.add(os.fspath(po.message_path(entry.relpath, _mid(data))))
        yield from check_control(po, entry.relpath, data)
    queue_files = scan_queue(po, unreadable)
    for text in unreadable:
        where, _, reason = text.rpartition(": ")
        yield Problem("", where, 0, f"cannot read directory ({reason}); skipped")
    cutoff = (time.time() if now is None else now) - orphan_min_age
    for entry in queue_files:
        path = os.fspath(po.queue / entry.relpath)
        if path not in referenced and entry.ctime <= cutoff:
            reason = "orphaned message file: no control file refers to it"
            yield Problem(entry.relpath, path, 0, reason)


def _mid(data: bytes) -> str | None:
    """The ``i`` line's value, best effort (a corrupt file is reported by check_control)."""
    start = data.find(b"\ni ")
    if start < 0:
        return None
    end = data.find(b"\n", start + 1)
    value = data[start + 3 : end if end >= 0 else len(data)]
    return value.decode("utf-8", "surrogateescape") if value else None
