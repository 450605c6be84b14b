"""Reading control files ahead of a ``WHERE rcpt=`` scan, on a thread.

A ``rcpt=`` filter that the recipient index cannot answer (no literal local part or
domain) reads every loaded message's control file. The scan itself (the core's
``select``) runs on the event loop in slices; :class:`Prefetch` reads the files on a
thread in the order the scan visits them, and keeps only what the scan needs: the
bytes of a file that holds every literal part of the pattern (``hints``), or the fact
that it does not. Reading releases the GIL, so the loop goes on while the disk or the
page cache works, and the scan's own cost per file drops to a dictionary lookup.

When the scan outruns the thread, it marks the files it read itself and the thread skips
them when it gets there. The thread never changes the scheduler's model: it gets a list of the messages taken on
the loop (a C-speed copy) and reads their ``relpath`` itself. It stays at most :data:`AHEAD` files ahead and stops when the scan is
closed (:meth:`Prefetch.close`). A file the thread has not reached yet when the scan
asks is read by the scan itself; the two never both keep it (``dict.setdefault``
decides who was first, atomically under the GIL).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from typing import Final, Protocol

from spool.errors import SpoolError
from spool.store import read_control

__all__ = ["AHEAD", "MISS", "Prefetch", "read_hinted"]

AHEAD: Final = 2048
MISS: Final = b""
"""What :meth:`Prefetch.take` returns for a file that lacks a hint or cannot be read."""
_TAKEN: Final = object()  # the scan got there first


def read_hinted(path: str, hints: Sequence[bytes]) -> bytes:
    """A control file's bytes (``spool.store.read_control``: never a link, never a
    FIFO), or :data:`MISS` when it cannot be read or lacks one of ``hints`` (lower-case
    literal parts of a pattern)."""
    try:
        data = read_control(path)
    except (OSError, SpoolError):
        return MISS
    if data and hints:
        low = data.lower()
        if not all(h in low for h in hints):
            return MISS
    return data


class _Named(Protocol):
    @property
    def relpath(self) -> str: ...


class Prefetch:
    """Reads ``transport + m.relpath`` for each message ``m`` on a daemon thread."""

    def __init__(
        self, transport: str, msgs: Sequence[_Named], hints: Sequence[bytes]
    ) -> None:
        self._cache: dict[str, object] = {}
        self._stop = False
        self._stored = 0  # files read ahead, and of them taken by the scan: the
        self._consumed = 0  # thread waits while it is AHEAD files ahead
        self._thread = threading.Thread(
            target=self._run,
            args=(transport, msgs, tuple(hints)),
            name="rcpt-prefetch",
            daemon=True,
        )
        self._thread.start()

    def _run(
        self, transport: str, msgs: Sequence[_Named], hints: tuple[bytes, ...]
    ) -> None:
        cache = self._cache
        for msg in msgs:
            relpath = msg.relpath
            while self._stored - self._consumed > AHEAD and not self._stop:
                time.sleep(0.001)
            if self._stop:
                return
            if cache.get(relpath) is _TAKEN:
                del cache[relpath]
                continue
            data = read_hinted(transport + relpath, hints)
            if cache.setdefault(relpath, data) is _TAKEN:
                del cache[relpath]
            else:
                self._stored += 1  # written by this thread only

    def take(self, relpath: str) -> bytes | None:
        """The file's bytes, :data:`MISS`, or None when the caller must read it."""
        got = self._cache.setdefault(relpath, _TAKEN)
        if got is _TAKEN:
            return None
        del self._cache[relpath]
        self._consumed += 1  # written by the scan only
        assert isinstance(got, bytes)
        return got

    def close(self) -> None:
        self._stop = True
