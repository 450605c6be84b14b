"""Children that end with their parent, on Linux.

Transport agents, load workers and the demo's scheduler run in sessions of their own (a
Ctrl-C on the terminal is the parent's alone), so neither a terminal hang-up nor the
parent's SIGKILL would reach them. :func:`dies_with_parent` gives a ``preexec_fn`` that
asks the kernel (``PR_SET_PDEATHSIG``) to send them a signal when the process that started
them ends, however it ends; a parent already gone before the request took effect is caught
by comparing the parent pid. The daemon's agents are instead handed to a :class:`Lifeline`
helper, which does the same for them without a ``preexec_fn`` (so that they are started
with ``vfork``). Agents also see their stdin close when the scheduler dies (the TA
protocol's EOF), which covers systems without either.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import gc
import os
import resource
import select
import signal
import socket
import sys
import time
from collections.abc import Callable
from typing import Final, NoReturn

__all__ = ["Lifeline", "dies_with_parent", "leave_parent"]

PR_SET_PDEATHSIG: Final = 1
PR_SET_NAME: Final = 15


def _prctl() -> Callable[..., int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        fn: Callable[..., int] = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    return fn


_PRCTL: Final = _prctl()


def dies_with_parent(
    sig: int = signal.SIGTERM, then: Callable[[], None] | None = None
) -> Callable[[], None] | None:
    """A ``preexec_fn``: the child gets ``sig`` when this process ends; ``then`` runs
    after (e.g. ``os.nice``). None where the kernel offers no such thing and ``then`` is
    None."""
    prctl = _PRCTL
    if prctl is None:
        return then
    parent = os.getpid()

    def preexec() -> None:
        prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0)
        if os.getppid() != parent:  # the parent died before the request took effect
            os.kill(os.getpid(), sig)
        if then is not None:
            then()

    return preexec


def leave_parent(keep: int) -> None:
    """In a forked child: drop the parent's signal handlers and its event loop's wakeup
    descriptor, leave its session (a Ctrl-C on the terminal is the parent's), and close
    every descriptor above 2 but ``keep``."""
    signal.set_wakeup_fd(-1)  # the parent's loop must not see our signals
    for s in signal.valid_signals():
        if callable(signal.getsignal(s)):
            signal.signal(s, signal.SIG_DFL)
    os.setsid()
    os.closerange(3, keep)
    os.closerange(keep + 1, os.sysconf("SC_OPEN_MAX"))  # the limit as it is now


class Lifeline:
    """A small helper process that signals every child handed to it (:meth:`adopt`)
    when this process ends, however it ends.

    ``dies_with_parent`` needs a ``preexec_fn``, and a ``preexec_fn`` makes
    :mod:`subprocess` start the child with ``fork`` instead of ``vfork``: the kernel
    then copies the parent's page tables and the parent takes its working set's page
    faults again (about 2 ms a child for a loaded daemon). The helper is forked once,
    while the daemon is still small; children started with ``vfork`` are handed to it as
    pidfds (safe against pid reuse) over a socket pair, and when the socket reads EOF,
    which the kernel makes happen when this process ends, it sends ``sig`` to those
    still running. A child the daemon had started but not yet handed over when it died
    (the few loop steps of its start) still sees its stdin close.

    :meth:`start` returns None where there are no pidfds (not Linux, a kernel before
    5.3); callers then use :func:`dies_with_parent`. The helper takes no lock after the
    fork (no logging, no import, no thread), so it may be forked while other threads
    wait (a new helper after the first one was killed: :meth:`fileno` reads EOF).
    """

    def __init__(self, pid: int, sock: socket.socket) -> None:
        self.pid = pid
        self._sock = sock
        self._poll = select.poll()
        self._poll.register(sock, select.POLLIN)
        self._dead = False

    @classmethod
    def start(cls, sig: int = signal.SIGTERM) -> Lifeline | None:
        if not _pidfds():
            return None
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        mask = signal.pthread_sigmask(signal.SIG_BLOCK, signal.valid_signals())
        try:
            pid = os.fork()
        except OSError:
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)
            ours.close()
            theirs.close()
            return None
        if pid == 0:  # pragma: no cover - the child ends in os._exit
            _hold(theirs.detach(), int(sig), mask)
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        theirs.close()
        ours.setblocking(False)
        return cls(pid, ours)

    def fileno(self) -> int:
        """Readable (EOF) once the helper has gone."""
        return self._sock.fileno()

    @property
    def alive(self) -> bool:
        """False once the helper has gone (then start children with
        :func:`dies_with_parent`)."""
        if not self._dead and self._poll.poll(0):  # EOF, or an error: it is gone
            self._gone()
        return not self._dead

    def adopt(self, pid: int) -> bool:
        """Hand the child ``pid`` over; False if the helper has gone (the child then
        has no lifeline but its stdin)."""
        if self._dead:
            return False
        try:
            fd = os.pidfd_open(pid)
        except ProcessLookupError:
            return True  # already ended
        except OSError:
            return False  # out of descriptors: this child goes without
        try:
            socket.send_fds(self._sock, [b"+"], [fd])
        except BlockingIOError:
            return False  # a stopped helper: this child goes without
        except OSError:
            self._gone()
            return False
        finally:
            os.close(fd)
        return True

    def close(self) -> None:
        """End the helper (it signals the children still running) and reap it; again:
        nothing."""
        if self._sock.fileno() < 0:
            return
        self._sock.close()
        self._dead = True
        with contextlib.suppress(ChildProcessError):
            for _ in range(100):  # it ends at once, unless stopped: 1 s at most
                if os.waitpid(self.pid, os.WNOHANG)[0]:
                    return
                time.sleep(0.01)
            os.kill(self.pid, signal.SIGKILL)
            os.waitpid(self.pid, 0)

    def _gone(self) -> None:
        self._dead = True
        with contextlib.suppress(ChildProcessError):
            os.waitpid(self.pid, os.WNOHANG)


def _pidfds() -> bool:
    if not sys.platform.startswith("linux") or not hasattr(os, "pidfd_open"):
        return False
    try:
        os.close(os.pidfd_open(os.getpid()))
    except OSError:
        return False
    return True


_IGNORED: Final = (
    signal.SIGHUP,
    signal.SIGINT,
    signal.SIGQUIT,
    signal.SIGTERM,
    signal.SIGUSR1,
    signal.SIGUSR2,
)
"""What the helper ignores: its command line is the daemon's, so ``pkill -f`` and
``pkill -HUP -f`` reach it too."""


def _hold(fd: int, sig: int, mask: object) -> NoReturn:
    """The helper: leave the parent's signals, descriptors, session and directory, then
    keep the pidfds it is given until the socket reads EOF, and signal the children
    still running."""
    try:
        os.chdir("/")
        fd = fcntl.fcntl(fd, fcntl.F_DUPFD, 3)  # above the standard descriptors
        null = os.open(os.devnull, os.O_RDWR)
        for n in (0, 1, 2):
            os.dup2(null, n)
        leave_parent(fd)  # closes the parent's, the first copy of ours, null
        for s in _IGNORED:  # it ends with its parent, not with a pkill -f of both
            signal.signal(s, signal.SIG_IGN)
        _name(b"sched-lifeline")
        with contextlib.suppress(ValueError, OSError):  # a pidfd per running agent
            hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        gc.disable()
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)  # type: ignore[arg-type]
        sock = socket.socket(fileno=fd)
        poll = select.poll()
        poll.register(fd, select.POLLIN)
        children: set[int] = set()
        while True:
            for ready, _ in poll.poll():
                if ready != fd:  # a child ended
                    poll.unregister(ready)
                    children.discard(ready)
                    os.close(ready)
                    continue
                data, fds, _, _ = socket.recv_fds(sock, 16, 16)
                if not data and not fds:  # the parent has ended
                    for child in children:
                        with contextlib.suppress(OSError):
                            signal.pidfd_send_signal(child, sig)
                    os._exit(0)
                for child in fds:
                    children.add(child)
                    poll.register(child, select.POLLIN)
    except BaseException:
        os._exit(1)
    os._exit(0)


def _name(comm: bytes) -> None:
    prctl = _PRCTL
    if prctl is not None:
        with contextlib.suppress(Exception):
            prctl(PR_SET_NAME, ctypes.c_char_p(comm), 0, 0, 0)
