"""``$POSTOFFICE/.pid.scheduler``: one scheduler per postoffice (SCHED-REF 3.2 step 9).

ZMailer SIGTERMs whatever pid it finds there and sleeps 5 s. We refuse to start when a
live scheduler holds the file (:class:`SchedulerRunning`), unless asked to ``replace``
it; a stale file (dead pid, garbage, or a pid reused by a process that is not a
scheduler) is taken over. The file is written atomically (``<pid>\\n``) and removed on
exit only if it still names us (S41 fix).
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import signal
import time
from pathlib import Path

from spool import procs

__all__ = [
    "PidFileError",
    "SchedulerRunning",
    "acquire",
    "pid_alive",
    "read_pid",
    "release",
]

logger = logging.getLogger(__name__)


class PidFileError(Exception):
    """The pid file could not be written or another scheduler holds it."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


class SchedulerRunning(PidFileError):
    """A live scheduler already owns this postoffice."""

    def __init__(self, path: Path, pid: int) -> None:
        super().__init__(
            path,
            f"a scheduler with pid {pid} is running on this postoffice "
            "(stop it first, or start with --replace)",
        )
        self.pid = pid


def read_pid(path: Path) -> int | None:
    """The pid in the file, or None when missing or not a positive number."""
    try:
        text = path.read_text(encoding="ascii", errors="replace")
    except FileNotFoundError:
        return None
    try:
        pid = int(text.split()[0]) if text.split() else 0
    except ValueError:
        return None
    return pid if pid > 0 else None


def pid_alive(pid: int) -> bool:
    """Whether ``pid`` is a live process that could be a scheduler."""
    return procs.pid_alive(pid) and _looks_like_scheduler(pid)


def _looks_like_scheduler(pid: int) -> bool:
    """On Linux, a reused pid of an unrelated program is not a live scheduler."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except FileNotFoundError:
        return not Path("/proc/self").exists()  # no procfs: assume alive
    except OSError:
        return True
    if not cmdline:  # zombie or kernel thread
        return False
    return b"scheduler" in cmdline


def acquire(
    path: Path, *, replace: bool = False, wait: float = 10.0, pid: int | None = None
) -> int:
    """Write our pid into ``path``; return it.

    Raises :class:`SchedulerRunning` when a live scheduler owns the file and
    ``replace`` is false; with ``replace`` it is sent SIGTERM and we wait up to
    ``wait`` seconds for it to go (ZMailer's ``killed previous daemon``).
    """
    me = os.getpid() if pid is None else pid
    old = read_pid(path)
    if old is not None and old != me and pid_alive(old):
        if not replace:
            raise SchedulerRunning(path, old)
        _terminate(path, old, wait)
    _write(path, me)
    return me


def _terminate(path: Path, pid: int, wait: float) -> None:
    logger.warning("killing previous daemon, pid = %d", pid)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        if not pid_alive(pid):
            return
        time.sleep(0.05)
    raise PidFileError(path, f"previous scheduler pid {pid} did not exit in {wait:g} s")


def _write(path: Path, pid: int) -> None:
    tmp = path.with_name(f"{path.name}.{pid}.tmp")
    try:
        tmp.write_text(f"{pid}\n", encoding="ascii")
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise PidFileError(path, f"cannot write pid file: {exc.strerror}") from exc


def release(path: Path, pid: int | None = None) -> bool:
    """Remove the pid file if it still names us; True if removed."""
    me = os.getpid() if pid is None else pid
    if read_pid(path) != me:
        return False
    try:
        path.unlink()
    except OSError as exc:
        if exc.errno != errno.ENOENT:
            logger.warning("cannot remove pid file %s: %s", path, exc.strerror)
        return False
    return True
