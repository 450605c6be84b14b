"""Consistency check of a postoffice: corrupt control files and missing message files."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass

from .controlfile import ControlFile, parse
from .errors import CorruptControlFile
from .layout import Postoffice
from .scan import scan
from .store import read_control

__all__ = ["Problem", "check_control", "check_postoffice"]


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
        if not message.is_file():
            i_line = next(ln for ln in cf.lines if ln.tag == "i" and ln.status == " ")
            line = _line_of(data, i_line.offset)
            problems.append(
                Problem(relpath, path, line, f"missing message file {message}")
            )
    return problems


def check_postoffice(po: Postoffice) -> Iterator[Problem]:
    """Every problem of every control file (files vanishing meanwhile are skipped)."""
    for entry in scan(po):
        try:
            data = read_control(po.control_path(entry.relpath))
        except FileNotFoundError:
            continue
        yield from check_control(po, entry.relpath, data)
