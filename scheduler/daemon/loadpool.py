"""The daemon's side of the startup load (:mod:`scheduler.daemon.loadworker` is the workers'):
start the worker processes, read their length-prefixed batches without blocking, and merge
the ordered streams for the runner. Kept apart so that a worker process does not import
asyncio and subprocess machinery it never uses.

A worker is forked from the daemon when no other thread runs (the usual case: the first
scan comes before any TA or thread is started): it starts with everything imported, and
costs a fork instead of an interpreter's start and imports (about 0.1 s of CPU each).
Otherwise it is started as ``python -m scheduler.daemon.loadworker``. A forked worker
first drops what it shares with the daemon: its signal handlers and the event loop's
wakeup descriptor (signals stay blocked until then), every descriptor but its pipe; it
runs in a session of its own and dies with the daemon (:mod:`scheduler.lifeline`), as a
started one does, and leaves with ``os._exit``.
"""

from __future__ import annotations

import asyncio
import bisect
import collections
import contextlib
import fcntl
import functools
import gc
import logging
import marshal
import os
import pickle
import signal
import subprocess
import sys
import tempfile
import threading
import traceback
from collections.abc import Callable, Sequence
from operator import itemgetter
from typing import Final, NoReturn, Protocol

from scheduler.daemon import loadworker
from scheduler.daemon.loadworker import BATCH, FRAME, EntryTuple, Item, Job
from scheduler.lifeline import dies_with_parent, leave_parent
from spool.store import write_all

__all__ = ["LoadWorkers", "count_hashed", "hash_dirs"]

logger = logging.getLogger(__name__)

_F_SETPIPE_SZ: Final = getattr(fcntl, "F_SETPIPE_SZ", 1031)
_PIPE_SIZE: Final = 1 << 20


def count_hashed(transport: str, dirs: Sequence[str]) -> int:
    """How many control-file names the hash directories hold (no stat: a cheap size
    estimate to decide whether workers pay off)."""
    n = 0
    for d in dirs:
        try:
            with os.scandir(transport + d) as it:
                for entry in it:
                    name = entry.name
                    if "0" <= name[0] <= "9":
                        n += 1
                    elif len(name) == 1 and "A" <= name <= "Z":
                        n += count_hashed(transport, [d + name + "/"])
        except OSError:  # gone, or unreadable (reported by the scan)
            continue
    return n


def hash_dirs(transport: str) -> list[str]:
    """The one-letter ``A``-``Z`` directories of ``transport/`` (``"A/"`` ...)."""
    try:
        with os.scandir(transport) as it:
            return sorted(
                e.name + "/"
                for e in it
                if len(e.name) == 1
                and "A" <= e.name <= "Z"
                and e.is_dir(follow_symlinks=False)
            )
    except OSError:
        return []


class _Proc(Protocol):
    """What the pool uses of a worker process (a ``Popen`` or a :class:`_Forked`)."""

    @property
    def pid(self) -> int: ...

    def wait(self) -> int: ...

    def kill(self) -> None: ...


class _Forked:
    """A worker forked from the daemon (the ``Popen`` calls the pool makes)."""

    __slots__ = ("pid", "returncode")

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None

    def wait(self) -> int:
        if self.returncode is None:
            try:
                _, status = os.waitpid(self.pid, 0)
            except ChildProcessError:  # reaped by someone else: as Popen.wait
                status = 0
            self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def kill(self) -> None:
        if self.returncode is None:
            os.kill(self.pid, signal.SIGKILL)


def can_fork() -> bool:
    """True if a worker can be forked: POSIX, and this is the main thread and the
    only one (a fork copies no other thread, nor the locks they may hold)."""
    return (
        hasattr(os, "fork")
        and threading.current_thread() is threading.main_thread()
        and threading.active_count() == 1
    )


def _child(
    job: Job, wfd: int, mask: set[int | signal.Signals], then: Callable[[], None] | None
) -> NoReturn:
    """A forked worker: leave the daemon's signals, descriptors and session, do the
    job into ``wfd``, and exit without running anything of the daemon's."""
    code = 1
    try:
        leave_parent(wfd)  # the daemon's signals, session and descriptors
        if then is not None:
            then()  # dies with the daemon
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        gc.disable()  # short-lived acyclic objects only

        loadworker.work(job, functools.partial(write_all, wfd))
        code = 0
    except BrokenPipeError:
        code = 0  # the daemon went away
    except BaseException:
        with contextlib.suppress(BaseException):
            os.write(2, traceback.format_exc().encode("utf-8", "replace"))
    finally:
        os._exit(code)


class _Stream:
    """One worker's output: batches in order, then EOF."""

    __slots__ = ("batches", "buf", "done", "fd", "items", "pos", "proc")

    def __init__(self, proc: _Proc, fd: int) -> None:
        self.proc = proc
        self.fd = fd
        self.buf = bytearray()
        self.batches: collections.deque[bytes] = collections.deque()  # marshalled
        self.items: list[Item] = []
        self.pos = 0
        self.done = False


_KEY: Final = itemgetter(0, 2)
"""``(ctime, relpath)``, the scan's order, of an entry or a record."""


class LoadWorkers:
    """The daemon's side: start the workers, collect their ordered streams and merge
    them (:meth:`next_item`); ``on_ready`` is called whenever a batch arrives."""

    def __init__(
        self,
        transport: str,
        queue: str,
        hash_levels: int,
        max_bytes: int,
        *,
        entries: Sequence[EntryTuple] = (),
        dirs: Sequence[str] = (),
        workers: int,
        on_ready: Callable[[], None],
        batch: int = BATCH,
    ) -> None:
        self.failed = False  # a worker died: the caller should rescan
        self._on_ready = on_ready
        self._loop = asyncio.get_running_loop()
        self._streams: list[_Stream] = []
        self._merged: list[Item] = []  # merged items ready to hand out
        self._pos = 0
        self.again = False  # next_item: None for now, a batch is ready to decode
        self._took = False  # a batch was decoded (took_batch)
        n = max(1, workers)
        for w in range(n):
            job: Job = (
                transport,
                queue,
                hash_levels,
                max_bytes,
                list(entries[w::n]),
                list(dirs[w::n]),
                batch,
            )
            if not job[4] and not job[5]:
                continue
            try:
                stream = self._start(job)
            except OSError as exc:
                logger.warning("cannot start a load worker: %s", exc)
                self.failed = True
                continue
            self._streams.append(stream)
            self._loop.add_reader(stream.fd, self._readable, stream)
        logger.info(
            "startup load in %d worker process(es), %s",
            len(self._streams),
            "forked"
            if self._streams and type(self._streams[0].proc) is _Forked
            else "started",
        )

    @staticmethod
    def _start(job: Job) -> _Stream:
        if can_fork():
            return LoadWorkers._fork(job)
        return LoadWorkers._spawn(job)

    @staticmethod
    def _fork(job: Job) -> _Stream:
        then = dies_with_parent()
        rfd, wfd = os.pipe()
        mask = signal.pthread_sigmask(signal.SIG_BLOCK, signal.valid_signals())
        try:
            pid = os.fork()
        except BaseException:
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)
            os.close(rfd)
            os.close(wfd)
            raise
        if pid == 0:  # pragma: no cover - the child ends in os._exit
            os.close(rfd)
            _child(job, wfd, mask, then)
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        os.close(wfd)
        LoadWorkers._reader(rfd)
        return _Stream(_Forked(pid), rfd)

    @staticmethod
    def _reader(fd: int) -> None:
        os.set_blocking(fd, False)
        # room for several batches: workers never wait
        with contextlib.suppress(OSError):
            fcntl.fcntl(fd, _F_SETPIPE_SZ, _PIPE_SIZE)

    @staticmethod
    def _spawn(job: Job) -> _Stream:
        with tempfile.TemporaryFile() as f:  # no blocking write into a pipe
            pickle.dump(job, f, protocol=pickle.HIGHEST_PROTOCOL)
            f.seek(0)
            proc = subprocess.Popen(
                [sys.executable, "-m", "scheduler.daemon.loadworker"],
                stdin=f,
                stdout=subprocess.PIPE,
                start_new_session=True,  # a Ctrl-C on the terminal is the daemon's
                preexec_fn=dies_with_parent(),
            )
        assert proc.stdout is not None
        fd = os.dup(proc.stdout.fileno())  # the stream owns its descriptor
        proc.stdout.close()
        LoadWorkers._reader(fd)
        return _Stream(proc, fd)

    @property
    def finished(self) -> bool:
        """Every stream ended and was taken."""
        return not self._streams and self._pos >= len(self._merged)

    def next_item(self, decode: bool = True) -> Item | None:
        """The oldest item of all streams; None while a stream waits for its next
        batch (or when all are finished), or (:attr:`again`: call in the next loop
        step) when a batch is to be decoded and ``decode`` is false or one already
        was in this call. :meth:`took_batch` says whether one was."""
        if self._pos >= len(self._merged) and not self._merge(decode):
            return None
        item = self._merged[self._pos]
        self._pos += 1
        return item

    def took_batch(self) -> bool:
        """True (once) if a batch was decoded, or is to be, since the last call: the
        runner then ends its loop step (each batch costs several ms of the loop)."""
        took, self._took = self._took or self.again, False
        return took

    def _merge(self, decode: bool) -> bool:
        """Merge the streams' current batches up to the smallest of their last keys
        (a run of sorted lists: timsort merges it in C). False: a stream must wait, or
        (:attr:`again`) a batch is to be decoded and may not be now: one per call at
        most (the workers' streams tend to run out together)."""
        live: list[_Stream] = []
        self.again = False
        for st in list(self._streams):
            while st.pos >= len(st.items):
                if not st.batches and not st.done:
                    self._readable(st, notify=False)  # what arrived since the last poll
                if st.batches:
                    if not decode:
                        self.again = True
                        return False
                    st.items, st.pos = marshal.loads(st.batches.popleft()), 0
                    decode, self._took = False, True
                elif st.done:
                    self._streams.remove(st)
                    break
                else:
                    return False
            else:
                live.append(st)
        if not live:
            return False
        if len(live) == 1:
            st = live[0]
            merged = st.items[st.pos :] if st.pos else st.items
            st.items, st.pos = [], 0
        else:
            bound = min(_KEY(st.items[-1]) for st in live)
            merged = []
            for st in live:
                end = bisect.bisect_right(st.items, bound, st.pos, key=_KEY)
                merged += st.items[st.pos : end]
                st.pos = end
            merged.sort(key=_KEY)
        self._merged, self._pos = merged, 0
        return bool(merged)

    def _readable(self, stream: _Stream, notify: bool = True) -> None:
        while True:
            try:
                chunk = os.read(stream.fd, 1 << 20)
            except BlockingIOError:
                break
            except OSError as exc:
                logger.warning("load worker %d: %s", stream.proc.pid, exc)
                chunk = b""
            if not chunk:
                self._frames(stream)
                self._ended(stream)
                break
            stream.buf += chunk
        self._frames(stream)
        if notify:
            self._on_ready()

    def _frames(self, stream: _Stream) -> None:
        buf = stream.buf
        pos = 0
        while len(buf) - pos >= FRAME.size:
            (size,) = FRAME.unpack_from(buf, pos)
            end = pos + FRAME.size + size
            if len(buf) < end:
                break
            # kept marshalled until the merge needs it: a daemon slower than its
            # workers then holds compact bytes, not thousands of small objects
            # scattered through the heap it is filling with the model
            stream.batches.append(bytes(buf[pos + FRAME.size : end]))
            pos = end
        if pos:
            del buf[:pos]

    def _ended(self, stream: _Stream) -> None:
        self._loop.remove_reader(stream.fd)
        os.close(stream.fd)
        code = stream.proc.wait()
        stream.done = True
        if code or stream.buf:
            self.failed = True
            logger.warning(
                "load worker %d exited with %d: the rest is loaded in-process",
                stream.proc.pid,
                code,
            )

    def close(self) -> None:
        """Stop every worker still running (shutdown during the load)."""
        for stream in self._streams:
            if stream.done:
                continue
            self._loop.remove_reader(stream.fd)
            with contextlib.suppress(ProcessLookupError):
                stream.proc.kill()
            stream.proc.wait()
            os.close(stream.fd)
        self._streams.clear()
