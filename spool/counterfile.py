"""Opening ZMailer's counter file safely (the block itself is :mod:`spool.counters`).

* A missing file is made whole under a temporary name and linked into place, so no
  reader ever sees a half-written one.
* An existing file is allocated on disk before it is mapped (``posix_fallocate``, else
  its bytes are written back): a hole in a mapped file on a full disk would be SIGBUS
  at the first counter update; here it is one clear :class:`CounterFileError` instead.
* A short file that is ZMailer's (magic ``0x33120006`` or still zero: an interrupted
  creation) is completed in place and keeps its values; a file of our earlier private
  format is converted; anything else is renamed to ``PATH.bad`` and a new block made.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import mmap
import os
import time

from spool.counters import (
    BLOCK_SIZE,
    MAGIC,
    CounterFileError,
    Counters,
    block_magic,
    convert_old,
    new_block,
)

__all__ = ["open_counters", "read_counters"]

log = logging.getLogger(__name__)

_NO_FALLOCATE = {errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS}


def open_counters(path: str) -> Counters:
    """The daemon's read-write mapping of ``path`` (created or repaired as needed)."""
    for _ in range(5):
        try:
            fd = os.open(
                path, os.O_RDWR | os.O_CLOEXEC
            )  # a symlink is followed, as by ZMailer
        except FileNotFoundError:
            _install(path, new_block(int(time.time())), replace=False)
            continue
        except OSError as exc:
            raise CounterFileError(path, f"cannot open: {exc.strerror}") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)  # as ZMailer's attach does, while it checks
            if _repair(fd, path):
                return _map(fd, path)
        finally:
            fcntl.flock(
                fd, fcntl.LOCK_UN
            )  # explicitly: the mapping keeps the file open
            os.close(fd)
    raise CounterFileError(path, "the file keeps changing under us")


def read_counters(path: str) -> Counters:
    """A read-only copy of ``path`` for ``mailq -M``; nothing is created or written."""
    try:
        with open(path, "rb") as f:
            data = f.read(BLOCK_SIZE + 1)
    except OSError as exc:
        raise CounterFileError(path, exc.strerror or str(exc)) from exc
    old = convert_old(data)
    if old is not None:
        return Counters(old, path, readonly=True)
    if len(data) != BLOCK_SIZE:
        raise CounterFileError(
            path, f"not of the proper size ({len(data)} bytes, not {BLOCK_SIZE})"
        )
    if block_magic(data) not in (MAGIC, 0):
        raise CounterFileError(
            path, f"magic value mismatch (0x{block_magic(data):08X})"
        )
    return Counters(bytearray(data), path, readonly=True)


def _repair(fd: int, path: str) -> bool:
    """Make the open file a whole block; False when it was replaced (reopen it)."""
    size = os.fstat(fd).st_size
    data = os.pread(fd, BLOCK_SIZE + 1, 0)
    old = convert_old(data)
    if old is not None:
        log.warning("%s: converting our earlier counter format to ZMailer's", path)
        _install(path, old, replace=True)
        return False
    if size <= BLOCK_SIZE and block_magic(data) in (MAGIC, 0):
        if size < BLOCK_SIZE:
            log.warning("%s: completing a short counter file (%d bytes)", path, size)
        _allocate(fd, path)
        return True
    bad = path + ".bad"
    log.error(
        "%s: not a ZMailer counter block (%d bytes, magic 0x%08X); moved to %s",
        path,
        size,
        block_magic(data),
        bad,
    )
    try:
        os.replace(path, bad)
    except OSError as exc:
        raise CounterFileError(path, f"cannot move it aside: {exc.strerror}") from exc
    return False


def _allocate(fd: int, path: str) -> None:
    """Every byte of the block backed by disk before it is mapped."""
    try:
        os.posix_fallocate(fd, 0, BLOCK_SIZE)
        return
    except OSError as exc:
        if exc.errno not in _NO_FALLOCATE:
            raise _alloc_error(path, exc) from exc
    data = os.pread(fd, BLOCK_SIZE, 0).ljust(BLOCK_SIZE, b"\0")
    try:
        if os.pwrite(fd, data, 0) != BLOCK_SIZE:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        os.fsync(fd)
    except OSError as exc:
        raise _alloc_error(path, exc) from exc


def _alloc_error(path: str, exc: OSError) -> CounterFileError:
    return CounterFileError(
        path, f"cannot allocate {BLOCK_SIZE} bytes on disk: {exc.strerror}"
    )


def _map(fd: int, path: str) -> Counters:
    os.ftruncate(fd, BLOCK_SIZE)  # a no-op unless posix_fallocate left it shorter
    mapped = mmap.mmap(fd, BLOCK_SIZE)
    if block_magic(mapped) == 0:  # new, or zero-filled by an interrupted creation
        fresh = new_block(int(time.time()))
        mapped[:16] = fresh[:16]
    return Counters(mapped, path)


def _install(path: str, block: bytearray, *, replace: bool) -> None:
    """Write ``block`` whole to a temporary file, then put it at ``path``."""
    tmp = f"{path}.new.{os.getpid()}"
    try:
        fd = os.open(
            tmp,
            os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
            0o664,
        )
    except FileExistsError:
        os.unlink(tmp)  # our own pid's leftover
        return
    except OSError as exc:
        raise CounterFileError(path, f"cannot create: {exc.strerror}") from exc
    try:
        try:
            if os.write(fd, block) != len(block):
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            os.fsync(fd)
        finally:
            os.close(fd)
        if replace:
            os.replace(tmp, path)
        else:
            with contextlib.suppress(FileExistsError):  # another process won the race
                os.link(tmp, path)
    except OSError as exc:
        raise _alloc_error(path, exc) from exc
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
