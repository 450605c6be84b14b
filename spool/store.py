"""File I/O on control and message files: in-place marks, ``d`` lines, removal.

Every in-place edit is a read-check-write of a few bytes under a byte-range lock
(:mod:`spool.locking`); appends are ``O_APPEND`` writes followed by ``fsync``.

Every control and message file is opened with :func:`open_spool_fd` (or
:func:`open_message`): ``O_NOFOLLOW`` (a symlink is never followed), ``O_NONBLOCK`` (a
FIFO never blocks the open) and an ``fstat`` check that it is a regular file, else
:class:`~spool.errors.NotRegularFile`.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import shutil
import stat
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from spool.controlfile import parse
from spool.errors import NotRegularFile, OversizedFile, SpoolError
from spool.layout import Postoffice
from spool.locking import APPEND_LOCK_OFFSET, range_lock
from spool.procs import pid_alive

__all__ = [
    "append_diagnostic",
    "fsync_dir",
    "lock_recipient",
    "mark_diagnostic_reported",
    "mark_recipient",
    "open_message",
    "open_spool_fd",
    "pid_alive",
    "quarantine",
    "read_control",
    "read_control_stat",
    "remove_message",
    "reset_stale_locks",
]

log = logging.getLogger(__name__)

PathLike = str | os.PathLike[str]
_READ_SIZE = 1 << 16


def fsync_dir(path: PathLike) -> None:
    """fsync a directory, so that a file created or renamed in it survives a crash."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


_SAFE_FLAGS = os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK


def write_all(fd: int, data: bytes) -> None:
    """Write every byte of ``data`` to ``fd``: a short write (a disk filling up, a
    signal) is continued where it stopped."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _kind(mode: int) -> str:
    for test, name in (
        (stat.S_ISLNK, "symlink"),
        (stat.S_ISFIFO, "FIFO"),
        (stat.S_ISDIR, "directory"),
        (stat.S_ISSOCK, "socket"),
        (stat.S_ISCHR, "character device"),
        (stat.S_ISBLK, "block device"),
    ):
        if test(mode):
            return name
    return "not a plain file"


def open_spool_fd(path: PathLike, flags: int = os.O_RDONLY) -> int:
    """Open a control or message file safely (see the module doc); the fd.

    Raises :class:`~spool.errors.NotRegularFile` for a symlink (``ELOOP`` from
    ``O_NOFOLLOW``), a FIFO, device, socket or directory.
    """
    return _open_regular(path, flags)[0]


def _open_regular(path: PathLike, flags: int) -> tuple[int, os.stat_result]:
    """:func:`open_spool_fd`, with the ``fstat`` it made."""
    try:
        fd = os.open(path, flags | _SAFE_FLAGS)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise NotRegularFile(os.fspath(path), "symlink") from exc
        if exc.errno in (errno.EISDIR, errno.ENXIO):  # ENXIO: a FIFO opened for writing
            raise NotRegularFile(os.fspath(path), "not a plain file") from exc
        raise
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise NotRegularFile(os.fspath(path), _kind(st.st_mode))
    except BaseException:
        os.close(fd)
        raise
    return fd, st


def open_message(path: PathLike) -> BinaryIO:
    """A message file for reading (a regular file only: never a link or a FIFO)."""
    return os.fdopen(open_spool_fd(path), "rb")


def read_control(path: PathLike, max_bytes: int | None = None) -> bytes:
    """The whole control file (``os.read``: twice as fast as ``open().read()``).

    With ``max_bytes``, a larger file is refused from its ``fstat`` size before a
    byte is read (:class:`~spool.errors.OversizedFile`), and no more than
    ``max_bytes + 1`` bytes are ever read (a file growing meanwhile).
    """
    return read_control_stat(path, max_bytes)[0]


def read_control_stat(
    path: PathLike, max_bytes: int | None = None
) -> tuple[bytes, os.stat_result]:
    """:func:`read_control`, with the ``fstat`` of the file it read (its ctime: the
    load workers need no ``stat`` of their own)."""
    fd, st = _open_regular(path, os.O_RDONLY)
    try:
        if max_bytes is not None:
            size = st.st_size
            if size > max_bytes:
                raise OversizedFile(os.fspath(path), size, max_bytes)
        data = os.read(fd, _READ_SIZE)
        if len(data) < _READ_SIZE:
            return data, st
        chunks = [data]
        total = len(data)
        limit = max_bytes if max_bytes is not None else -1
        while chunk := os.read(fd, 1 << 20):
            chunks.append(chunk)
            total += len(chunk)
            if 0 <= limit < total:
                raise OversizedFile(os.fspath(path), total, limit)
        return b"".join(chunks), st
    finally:
        os.close(fd)


def _slot_width(fd: int) -> tuple[int, int]:
    """(PID slot width, PID + delay width) from the file's ``@`` line (MQ2-REF 12.3)."""
    head = os.pread(fd, 32, 0)
    flags = 0
    if head.startswith(b"@ "):
        try:
            flags = int(head[2 : head.index(b"\n")], 16)
        except ValueError:
            flags = 0
    pid = 6 if flags & 1 else 0
    return pid, pid + (4 if flags & 2 else 0)


def _open_rw(path: PathLike) -> int:
    return open_spool_fd(path, os.O_RDWR)


def _check_r(path: PathLike, head: bytes, offset: int) -> None:
    if head[:1] != b"r" or len(head) < 2:
        raise SpoolError(f"{path}: no recipient line at offset {offset}")


def lock_recipient(path: PathLike, offset: int, pid: int) -> bool:
    """``' '`` -> ``'~'`` plus ``%6d`` PID at ``offset``, atomically; False if the
    recipient is not ``' '`` (already locked or done).

    A PID wider than 6 digits spills into the (unused) delay slot when the file has
    one; :func:`spool.controlfile.parse` reads both slots.
    """
    fd = _open_rw(path)
    try:
        pid_w, slots_w = _slot_width(fd)
        mark = b"~"
        if pid_w:
            text = b"%6d" % pid
            if len(text) > slots_w:
                raise SpoolError(f"{path}: PID {pid} does not fit the PID slot")
            mark += text if len(text) <= pid_w else text.ljust(slots_w)
        with range_lock(fd, offset, 2 + slots_w):
            head = os.pread(fd, 2 + slots_w, offset)
            _check_r(path, head, offset)
            if head[1:2] != b" ":
                return False
            os.pwrite(fd, mark, offset + 1)
        return True
    finally:
        os.close(fd)


def mark_recipient(path: PathLike, offset: int, status: str) -> None:
    """Set the status byte to ``'+'``, ``'-'`` or ``' '`` and blank the PID slot."""
    if status not in ("+", "-", " "):
        raise ValueError(f"bad recipient mark {status!r}")
    fd = _open_rw(path)
    try:
        _, slots_w = _slot_width(fd)
        with range_lock(fd, offset, 2 + slots_w):
            head = os.pread(fd, 2 + slots_w, offset)
            _check_r(path, head, offset)
            os.pwrite(fd, status.encode() + b" " * slots_w, offset + 1)
    finally:
        os.close(fd)


def reset_stale_locks(
    path: PathLike, is_alive: Callable[[int], bool] = pid_alive
) -> tuple[int, list[int]]:
    """Reset every ``~`` recipient whose PID is gone (or unreadable) back to ``' '``.

    Returns ``(locks reset, live PIDs found)``; a live PID means the file is busy.
    Raises :class:`~spool.errors.CorruptControlFile` for a corrupt file.
    """
    data = read_control(path)
    cf = parse(data, str(path))
    stale: list[tuple[int, bytes]] = []
    live: list[int] = []
    for rcpt in cf.recipients:
        if rcpt.status != "~":
            continue
        if rcpt.pid is not None and is_alive(rcpt.pid):
            live.append(rcpt.pid)
        else:
            stale.append((rcpt.offset, data[rcpt.offset : rcpt.offset + 12]))
    if not stale:
        return 0, live
    reset = 0
    fd = _open_rw(path)
    try:
        _, slots_w = _slot_width(fd)
        for offset, _ in stale:
            with range_lock(fd, offset, 2 + slots_w):
                head = os.pread(fd, 2 + slots_w, offset)
                if head[:2] != b"r~" or head != data[offset : offset + 2 + slots_w]:
                    continue  # changed since we read it: someone else owns it now
                os.pwrite(fd, b" " * (1 + slots_w), offset + 1)
                reset += 1
    finally:
        os.close(fd)
    if reset:
        log.info("%s: reset %d stale recipient lock(s)", path, reset)
    return reset, live


def append_diagnostic(path: PathLike, line: bytes, *, fsync: bool = True) -> int:
    """Append one ``d`` line (``O_APPEND``, then ``fsync``); return its offset."""
    if not line.startswith(b"d") or not line.endswith(b"\n") or line.count(b"\n") != 1:
        raise ValueError(f"not a single d line: {line!r}")
    fd = open_spool_fd(path, os.O_RDWR | os.O_APPEND)
    try:
        with range_lock(fd, APPEND_LOCK_OFFSET, 1):
            size = os.fstat(fd).st_size
            if (
                size and os.pread(fd, 1, size - 1) != b"\n"
            ):  # pragma: no cover - O_WRONLY
                raise SpoolError(f"{path}: does not end in a newline")
            try:
                write_all(fd, line)
                if fsync:
                    os.fsync(fd)
            except BaseException:  # ENOSPC/EIO: never leave half a d line behind
                with contextlib.suppress(OSError):
                    os.ftruncate(fd, size)
                raise
            return size
    finally:
        os.close(fd)


def mark_diagnostic_reported(path: PathLike, offset: int) -> None:
    """``d `` -> ``d+`` at ``offset`` (a no-op when it already is ``d+``)."""
    fd = _open_rw(path)
    try:
        with range_lock(fd, offset, 2):
            head = os.pread(fd, 2, offset)
            if head == b"d+":
                return
            if head != b"d ":
                raise SpoolError(f"{path}: no diagnostic line at offset {offset}")
            os.pwrite(fd, b"+", offset + 1)
    finally:
        os.close(fd)


def remove_message(po: Postoffice, relpath: str, mid: str) -> None:
    """Unlink the control file, then the message file; missing files are fine.

    A control file not named by its number alone (``<n>-<pid>``, the fallback name of
    a submission) names its message file in its ``i`` line, which is read first.

    Built on ``str`` paths (the same files as ``control_path``/``message_path``): this
    runs once per delivered message, and pathlib joins cost microseconds each.
    """
    prefix, sep, name = relpath.rpartition("/")
    control = f"{po.transport_dir}/{relpath}"
    if not name.isdigit():  # "<n>-<pid>": the message file is the i line's name
        mid = _mid_of(Path(control)) or mid
    message = f"{po.queue_dir}/{prefix}{sep}{mid}"
    for path in (control, message):
        # not contextlib.suppress: this runs twice per delivered message
        try:  # noqa: SIM105
            os.unlink(path)
        except FileNotFoundError:
            pass


def _move(src: Path, dst: Path) -> bool:
    try:
        os.rename(src, dst)
    except FileNotFoundError:
        return False
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
        shutil.move(src, dst)
    return True


def quarantine(po: Postoffice, relpath: str, reason: str) -> Path:
    """Move a control file and its message file into ``freezer/`` with the reason.

    ``freezer/<name>`` is the control file, ``freezer/<name>.msg`` the message file
    and ``freezer/<name>.reason`` says why (``<name>`` is the relpath with ``/`` -> ``_``,
    plus ``.1``, ``.2`` ... if taken). The reason is written first and files are only
    renamed, so a crash in between never loses anything. Returns the new control path.
    """
    po.freezer.mkdir(mode=0o700, exist_ok=True)
    base = relpath.replace("/", "_")
    name, n = base, 0
    while any((po.freezer / (name + ext)).exists() for ext in ("", ".msg", ".reason")):
        n += 1
        name = f"{base}.{n}"
    dest = po.freezer / name
    control = po.control_path(relpath)
    mid = _mid_of(control) or relpath.rpartition("/")[2]
    tmp = po.freezer / f".{name}.reason"
    tmp.write_text(f"{relpath}: {reason}\n", encoding="utf-8", errors="replace")
    os.rename(tmp, po.freezer / f"{name}.reason")
    moved_ctl = _move(control, dest)
    moved_msg = _move(po.message_path(relpath, mid), po.freezer / f"{name}.msg")
    log.warning(
        "quarantined %s (control %s, message %s): %s",
        relpath,
        "moved" if moved_ctl else "missing",
        "moved" if moved_msg else "missing",
        reason,
    )
    return dest


def _mid_of(control: Path) -> str | None:
    """The ``i`` line of a (possibly corrupt) control file, best effort."""
    try:
        fd = open_spool_fd(control)
        try:
            data = os.read(fd, _READ_SIZE)  # the i line comes first
        finally:
            os.close(fd)
    except (OSError, SpoolError):
        return None
    for line in data.split(b"\n"):
        if line.startswith(b"i ") and b"/" not in line and len(line) > 2:
            return line[2:].decode("utf-8", "surrogateescape")
    return None
