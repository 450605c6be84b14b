"""Scanning ``transport/`` for control files, and moving them into hash directories."""

from __future__ import annotations

import contextlib
import logging
import os
from dataclasses import dataclass

from spool.ids import hash_prefix, message_number
from spool.layout import Postoffice

__all__ = [
    "HASH_DIR_MODE",
    "ScanEntry",
    "hash_into_place",
    "make_hash_dirs",
    "scan",
    "scan_queue",
]

log = logging.getLogger(__name__)

HASH_DIR_MODE = 0o2755


@dataclass(slots=True)
class ScanEntry:
    """One control file: ``relpath`` under ``transport/``, message number, ctime."""

    relpath: str
    number: int
    ctime: float


def _is_hash_dir(name: str) -> bool:
    return len(name) == 1 and "A" <= name <= "Z"


def _walk(
    path: str,
    prefix: str,
    depth: int,
    deep: bool,
    out: list[ScanEntry],
    unreadable: list[str],
) -> None:
    try:
        it = os.scandir(path)
    except (FileNotFoundError, NotADirectoryError):
        return  # a hash directory removed under us
    except OSError as exc:  # EACCES, EIO: skip it, scan the rest
        if depth == 0:
            raise
        unreadable.append(f"{path}: {exc.strerror or exc}")
        log.warning("%s: cannot read directory (%s); skipped", path, exc.strerror)
        return
    with it:
        for entry in it:
            name = entry.name
            try:
                if "0" <= name[0] <= "9":  # is_candidate_name(), inlined
                    if entry.is_file(follow_symlinks=False):
                        ctime = entry.stat(follow_symlinks=False).st_ctime
                        number = int(name) if name.isdigit() else message_number(name)
                        out.append(ScanEntry(prefix + name, number, ctime))
                elif (
                    deep
                    and depth < 2
                    and _is_hash_dir(name)
                    and entry.is_dir(follow_symlinks=False)
                ):
                    _walk(
                        entry.path,
                        prefix + name + "/",
                        depth + 1,
                        deep,
                        out,
                        unreadable,
                    )
            except OSError:
                continue  # vanished between readdir and stat, or cannot be stat()ed


def _order(entry: ScanEntry) -> tuple[float, str]:
    return entry.ctime, entry.relpath


def scan(
    po: Postoffice, *, deep: bool = True, unreadable: list[str] | None = None
) -> list[ScanEntry]:
    """Every control file: names starting with a digit at the top level of
    ``transport/`` and, when ``deep``, in one-letter ``A``-``Z`` subdirectories (two
    levels). Dot files (submissions in progress) and other names are ignored. Oldest
    ctime first (the scheduler's loading order, SCHED-REF 3.3).

    A hash directory that cannot be read is skipped (logged, and appended to
    ``unreadable`` as ``path: reason``); the rest is scanned."""
    out: list[ScanEntry] = []
    _walk(
        os.fspath(po.transport),
        "",
        0,
        deep,
        out,
        [] if unreadable is None else unreadable,
    )
    out.sort(key=_order)
    return out


def scan_queue(po: Postoffice, unreadable: list[str] | None = None) -> list[ScanEntry]:
    """Every message file in ``queue/`` (same naming and hashing as ``transport/``),
    oldest ctime first; unreadable hash directories as in :func:`scan`."""
    out: list[ScanEntry] = []
    _walk(
        os.fspath(po.queue), "", 0, True, out, [] if unreadable is None else unreadable
    )
    out.sort(key=_order)
    return out


def make_hash_dirs(po: Postoffice, prefix: str) -> None:
    """Create ``transport/<prefix>`` and ``queue/<prefix>`` (mode 02755)."""
    for top in (po.transport, po.queue):
        path = top
        for part in prefix.strip("/").split("/"):
            if not part:
                continue
            path = path / part
            try:
                path.mkdir(mode=HASH_DIR_MODE)
            except FileExistsError:
                continue
            os.chmod(path, HASH_DIR_MODE)


def hash_into_place(
    po: Postoffice, relpath: str, levels: int, mid: str | None = None
) -> str:
    """Move a top-level control file and its message file into their hash
    directories (SCHED-REF 3.4 step 5) and return the new relpath. Files already in a
    subdirectory (or ``levels`` 0) stay where they are.

    The message file moves first, then the control file; repeating the call after a
    crash in between completes the move (a missing message file is skipped).
    """
    if "/" in relpath or levels <= 0:
        return relpath
    name = relpath
    mid = mid if mid is not None else name
    prefix = hash_prefix(message_number(mid), levels)
    make_hash_dirs(po, prefix)
    with contextlib.suppress(FileNotFoundError):
        os.rename(po.queue / mid, po.queue / (prefix + mid))
    new = prefix + name
    os.rename(po.control_path(relpath), po.control_path(new))
    log.debug("hashed %s into %s", relpath, new)
    return new
