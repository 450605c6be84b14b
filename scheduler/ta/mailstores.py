"""Writing one message into a mailbox: mbox (with ZMailer's locking) or Maildir.

mbox: the ``From <sender> <ctime>`` line, the message with lines that begin ``From ``
quoted as ``>From `` (mboxo), and an empty line after it. Locking as ZMailer's mailbox
does by default (``MBOXLOCKS=".L:L"``): a ``<mailbox>.lock`` file made exclusively (one
not touched for five minutes is stale and removed), then an ``fcntl`` lock on the open file.
A failed write is cut back to the old end of file, so a full disk leaves the mailbox
as it was.

Maildir: ``tmp/`` -> fsync -> link into ``new/`` with a unique name, the directory
fsynced.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import itertools
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

from spool.store import fsync_dir, write_all

__all__ = [
    "LockBusy",
    "dotlock",
    "mbox_bytes",
    "quote_from",
    "unique_name",
    "write_maildir",
    "write_mbox",
]

STALE_LOCK = 300.0
LOCK_TRIES = 20
LOCK_SLEEP = 0.25

_counter = itertools.count(1)


class LockBusy(OSError):
    """The mailbox stayed locked by someone else."""


def quote_from(data: bytes) -> bytes:
    """``>From `` for every line that begins ``From `` (mboxo quoting)."""
    if data.startswith(b"From "):
        data = b">" + data
    return data.replace(b"\nFrom ", b"\n>From ")


def mbox_bytes(sender: str, message: bytes, now: float | None = None) -> bytes:
    """One mbox entry: From_ line, quoted message ending in a newline, empty line."""
    stamp = time.ctime(time.time() if now is None else now)
    who = sender or "MAILER-DAEMON"
    if not message.endswith(b"\n"):
        message += b"\n"
    line = f"From {who} {stamp}\n".encode("utf-8", "surrogateescape")
    return line + quote_from(message) + b"\n"


@contextlib.contextmanager
def dotlock(path: str, sleep: float = LOCK_SLEEP) -> Iterator[None]:
    """Hold ``path.lock`` (created exclusively); stale locks are removed."""
    lock = path + ".lock"
    for _ in range(LOCK_TRIES):
        try:
            fd = os.open(
                lock, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600
            )
        except FileExistsError:
            with contextlib.suppress(OSError):
                if os.lstat(lock).st_mtime < time.time() - STALE_LOCK:
                    os.unlink(lock)
                    continue
            time.sleep(sleep)
            continue
        os.write(fd, f"{os.getpid()}\n".encode())
        os.close(fd)
        break
    else:
        raise LockBusy(errno.EBUSY, f"{lock} is held by another process")
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            os.unlink(lock)


def _fcntl_lock(fd: int, sleep: float = LOCK_SLEEP) -> None:
    for _ in range(LOCK_TRIES):
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except (BlockingIOError, PermissionError):
            time.sleep(sleep)
    raise LockBusy(errno.EBUSY, "the mailbox stays locked (fcntl)")


def write_mbox(
    path: str, entry: bytes, *, create_mode: int = 0o600, dot: bool = True
) -> None:
    """Append ``entry`` (from :func:`mbox_bytes`) to the mbox at ``path``, locked.

    The file is never followed through a symbolic link. On any write error the file is
    truncated back to its old size and the error raised (the caller defers).
    """
    guard = dotlock(path) if dot else contextlib.nullcontext()
    with guard:
        fd = os.open(
            path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, create_mode
        )
        try:
            _fcntl_lock(fd)
            end = os.fstat(fd).st_size
            lead = _separator(fd, end)
            try:
                write_all(fd, lead + entry)
                os.fsync(fd)
            except OSError:
                with contextlib.suppress(OSError):
                    os.ftruncate(fd, end)
                raise
        finally:
            os.close(fd)


def _separator(fd: int, end: int) -> bytes:
    """What makes the previous entry end in an empty line (b"", b"\\n" or b"\\n\\n")."""
    if end == 0:
        return b""
    tail = os.pread(fd, 2, max(0, end - 2))
    if tail.endswith(b"\n\n") or (end == 1 and tail == b"\n"):
        return b""
    return b"\n" if tail.endswith(b"\n") else b"\n\n"


def unique_name(now: float | None = None) -> str:
    """A Maildir unique name: ``<sec>.M<usec>P<pid>Q<n>.<host>``."""
    t = time.time() if now is None else now
    sec = int(t)
    usec = int((t - sec) * 1_000_000)
    host = socket.gethostname().replace("/", "\\057").replace(":", "\\072")
    return f"{sec}.M{usec}P{os.getpid()}Q{next(_counter)}.{host}"


def write_maildir(folder: Path, data: bytes) -> Path:
    """Write ``data`` into ``folder/tmp``, fsync, move it to ``folder/new``; return the path."""
    name = unique_name()
    tmp = folder / "tmp" / name
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        write_all(fd, data)
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        tmp.unlink(missing_ok=True)
        raise
    os.close(fd)
    final = folder / "new" / name
    os.link(tmp, final)
    tmp.unlink()
    fsync_dir(folder / "new")
    return final


def make_maildir(folder: Path) -> None:
    for sub in ("", "tmp", "new", "cur"):
        (folder / sub).mkdir(mode=0o700, exist_ok=True)
