"""POSIX byte-range locks around the in-place edits of a control file.

ZMailer's own transport agents write status bytes without locks; ours (and the
scheduler) take an ``fcntl`` lock on exactly the bytes they read-check-write, so two
processes working on different recipients of one file never interfere, and two
processes racing for the same recipient are serialised. Appends of ``d`` lines take a
lock on a sentinel byte far past any real offset, so appenders are serialised without
blocking the recipient locks.

``fcntl`` locks belong to the process, so a thread lock is taken too; and they are
dropped when *any* descriptor of the file is closed by the process, so the callers
keep exactly one descriptor open while they hold a lock.
"""

from __future__ import annotations

import fcntl
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["APPEND_LOCK_OFFSET", "range_lock"]

APPEND_LOCK_OFFSET = 1 << 60
"""The sentinel byte appenders lock (beyond any control file's size)."""

_thread_lock = threading.RLock()


@contextmanager
def range_lock(fd: int, start: int, length: int) -> Iterator[None]:
    """Hold an exclusive lock on ``length`` bytes at ``start`` of ``fd`` (blocking)."""
    with _thread_lock:
        fcntl.lockf(fd, fcntl.LOCK_EX, length, start, os.SEEK_SET)
        try:
            yield
        finally:
            fcntl.lockf(fd, fcntl.LOCK_UN, length, start, os.SEEK_SET)
