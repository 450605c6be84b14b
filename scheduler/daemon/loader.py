"""From ``transport/`` to ``MessageLoaded``: scanning, the pre-schedule queue, loading.

SCHED-REF 3.3 and 3.4, with the S32 fix: a control file that cannot be used (corrupt,
truncated, oversized, unreadable, no ``i``/``l`` line, unknown format bits, message file
missing) is **quarantined** into ``freezer/`` with a logged reason instead of being
unlinked; nothing here ever raises out to the daemon for a bad file.

The pre-schedule queue is ordered by control-file ctime (oldest first). A file whose
recipients are locked by a live process is put aside for :data:`LOCK_RETRY` seconds and
counted again in ``SC.ReceivedMessages`` each time (S29, Keep); the decision core counts
the final, successful pick-up. ETRN request files (``T`` lines, no ``i`` line) are handed to
the core, which runs the (lower-cased) ETRNs, and then removed.
"""

from __future__ import annotations

import collections
import heapq
import logging
import os
import stat
from collections.abc import Callable
from typing import Final, NamedTuple, Protocol

from scheduler.core.events import MessageGone, MessageLoaded, MessageReloaded
from spool import store
from spool.controlfile import ControlFile, parse
from spool.errors import SpoolError
from spool.ids import hash_prefix, message_number, parse_spool_id
from spool.layout import Postoffice
from spool.procs import pid_alive
from spool.scan import hash_into_place, scan

__all__ = [
    "KNOWN_FLAGS",
    "LOCK_RETRY",
    "MAX_CONTROL_BYTES",
    "CounterSink",
    "Entry",
    "Loader",
    "PreScheduleQueue",
]

logger = logging.getLogger(__name__)

LOCK_RETRY: Final = 32.0
LOCK_POLL: Final = 1.0
"""How often the processes holding set-aside files are looked at: a file whose locking
process has died is loaded then, not ``LOCK_RETRY`` seconds after it was set aside."""
MAX_CONTROL_BYTES: Final = 64 * 1024 * 1024
BIG_CONTROL_BYTES: Final = 1024 * 1024
"""A control file this large is parsed off the event loop (``on_big``), then loaded."""
KNOWN_FLAGS: Final = 0x7
RECEIVED_MESSAGES: Final = "SC.ReceivedMessages"


class CounterSink(Protocol):
    def incr(self, name: str, by: int = 1) -> None: ...


class Entry(NamedTuple):
    """One queued control file; ordered by (ctime, number) (a tuple: the heap compares
    in C, which matters when a million files are queued at startup)."""

    ctime: float
    number: int
    relpath: str


class PreScheduleQueue:
    """Control files waiting to be loaded: a ctime heap plus a delayed heap.

    ZMailer keeps one second queue for delayed (locked) files and sends *all* new files
    there while it is non-empty; we simply keep delayed entries in their own heap by due
    time and move them back when due, so a locked file never holds up new mail.
    """

    def __init__(self) -> None:
        # Entries arriving in order (a scan is sorted by ctime, new files are newer)
        # go to a plain FIFO; only out-of-order ones pay for the heap.
        self._run: collections.deque[Entry] = collections.deque()
        self._ready: list[Entry] = []
        self._delayed: list[tuple[float, Entry]] = []
        self._numbers: set[int] = set()

    def __len__(self) -> int:
        return len(self._run) + len(self._ready) + len(self._delayed)

    def __contains__(self, number: int) -> bool:
        return number in self._numbers

    def add(self, entry: Entry) -> bool:
        if entry.number in self._numbers:
            return False
        self._numbers.add(entry.number)
        self._push(entry)
        return True

    def _push(self, entry: Entry) -> None:
        run = self._run
        if not run or entry >= run[-1]:
            run.append(entry)
        else:
            heapq.heappush(self._ready, entry)

    def delay(self, entry: Entry, until: float) -> None:
        self._numbers.add(entry.number)
        heapq.heappush(self._delayed, (until, entry))

    def _promote(self, now: float) -> None:
        while self._delayed and self._delayed[0][0] <= now:
            heapq.heappush(self._ready, heapq.heappop(self._delayed)[1])

    def has_ready(self, now: float) -> bool:
        if self._delayed:
            self._promote(now)
        return bool(self._run or self._ready)

    def pop(self, now: float) -> Entry | None:
        if self._delayed:
            self._promote(now)
        run, ready = self._run, self._ready
        if run and (not ready or run[0] <= ready[0]):
            entry = run.popleft()
        elif ready:
            entry = heapq.heappop(ready)
        else:
            return None
        self._numbers.discard(entry.number)
        return entry

    def next_due(self) -> float | None:
        """When the earliest delayed entry becomes loadable (None: nothing delayed)."""
        return self._delayed[0][0] if self._delayed else None

    def hurry(self, number: int, now: float) -> None:
        """Make the delayed entry of file ``number`` due at ``now``."""
        delayed = self._delayed
        for i, (until, entry) in enumerate(delayed):
            if entry.number == number and until > now:
                delayed[i] = (now, entry)
                heapq.heapify(delayed)
                return


_LOCKED: Final = b"\nr~"
"""A recipient line locked by a TA (``r~<pid>``); only then is the lock sweep needed."""


class _Reject(Exception):
    """The file cannot be loaded: quarantine it with this reason."""


class _Deferred(Exception):
    """A big file handed to ``on_big`` to be parsed elsewhere (or, while another one is
    being parsed, put back for :data:`BIG_RETRY` seconds: one big file in memory at a
    time)."""

    def __init__(self, busy: bool) -> None:
        super().__init__(busy)
        self.busy = busy


BIG_RETRY: Final = 1.0


Prepared = tuple[bytes, "ControlFile | SpoolError"]
"""What ``on_big``'s parse gives back: the bytes and the parsed file (or the error)."""


class Loader:
    """Scan, queue and load control files of one postoffice (no asyncio here)."""

    def __init__(
        self,
        po: Postoffice,
        *,
        is_loaded: Callable[[int], bool],
        counters: CounterSink,
        hash_levels: int = 0,
        max_bytes: int = MAX_CONTROL_BYTES,
        big_bytes: int = BIG_CONTROL_BYTES,
        on_big: Callable[[Entry, bytes], None] | None = None,
    ) -> None:
        self.po = po
        self.queue = PreScheduleQueue()
        self.hash_levels = hash_levels
        self.quarantined = 0
        self.inflight: set[int] = set()  # handed to load workers, not loaded yet
        # while load workers run: numbers loaded here meanwhile (a worker's copy of
        # such a file is stale: the message may be delivered and gone already)
        self.taken: set[int] | None = None
        # files held back by a live lock, with the processes holding them
        self._set_aside: dict[int, tuple[int, ...]] = {}
        self._lock_pids: tuple[int, ...] = ()  # of the file _read() just set aside
        self._next_lock_poll = 0.0
        self._is_loaded = is_loaded
        self._counters = counters
        self._max_bytes = max_bytes
        self._big_bytes = big_bytes
        # on_big(entry, data): parse data elsewhere, then call load(entry, prepared=...)
        self.on_big = on_big
        self.parsing: set[int] = set()  # numbers whose big file is being parsed
        # Plain str paths: pathlib costs ~10 us per join on the loading path.
        self._transport = os.fspath(po.transport) + "/"
        self._queue = os.fspath(po.queue) + "/"

    # -- queueing ---------------------------------------------------------------

    def scan(self, *, deep: bool) -> int:
        """Queue every new control file (deep: also the A-Z subdirectories)."""
        added = 0
        for found in scan(self.po, deep=deep):
            added += self._add(Entry(found.ctime, found.number, found.relpath))
        if added:
            logger.debug(
                "scan (%s) queued %d file(s)", "deep" if deep else "top", added
            )
        return added

    def offer(self, relpath: str) -> bool:
        """Queue a file named by a ``NEW`` notification; False if ignored."""
        try:
            number = message_number(relpath)
            st = os.lstat(self._transport + relpath)
        except (ValueError, OSError):
            logger.debug("notification for %s: no such control file", relpath)
            return False
        if not stat.S_ISREG(st.st_mode):
            return False
        return bool(self._add(Entry(st.st_ctime, number, relpath)))

    def _add(self, entry: Entry) -> int:
        number = entry.number
        if (
            self._is_loaded(number)
            or number in self.queue
            or number in self.inflight
            or number in self.parsing
        ):
            return 0
        return int(self.queue.add(entry))

    def take_ready(self, now: float) -> list[Entry]:
        """Pop every ready entry, oldest first, and count them in flight (handed to
        load workers; the runner discards each number from ``inflight`` as it feeds
        it). A scan or notification skips in-flight files."""
        taken: list[Entry] = []
        pop = self.queue.pop
        while (entry := pop(now)) is not None:
            taken.append(entry)
        self.inflight.update(e.number for e in taken)
        return taken

    # -- loading ----------------------------------------------------------------

    def load_next(self, now: float) -> MessageLoaded | None:
        """Pop and load the oldest ready file; None if it was skipped or nothing is ready.

        Use :meth:`PreScheduleQueue.has_ready` to tell the two apart.
        """
        entry = self.queue.pop(now)
        if entry is None or self._is_loaded(entry.number):
            return None
        if self.taken is not None:
            self.taken.add(entry.number)
        return self.load(entry, now)

    def load(
        self, entry: Entry, now: float, prepared: Prepared | None = None
    ) -> MessageLoaded | None:
        """Load one file; ``prepared``: its bytes already parsed off the loop."""
        relpath = entry.relpath
        ctime = entry.ctime  # the scan's (or the notification's) ctime: no stat here
        try:
            control = self._read(relpath, entry if prepared is None else None, prepared)
            if control is None:
                # S29: ZMailer counts queue insertions: the scan's (the core would
                # count it at the load) and each one that sets the file aside
                first = entry.number not in self._set_aside
                self._set_aside[entry.number] = self._lock_pids
                self._counters.incr(RECEIVED_MESSAGES, 2 if first else 1)
                self.queue.delay(entry, now + LOCK_RETRY)
                return None
            if entry.number in self._set_aside:
                del self._set_aside[entry.number]
                self._counters.incr(RECEIVED_MESSAGES, -1)  # the core counts it again
            if control.mid is None and control.etrn:
                return self._etrn(relpath, control, ctime)
            self._check(control)
            relpath = self._hash(relpath, control)
            mtime, mtime_ns = self._message_time(relpath, control)
            if control.obsoletes:
                self._owner_check(relpath, control)
        except FileNotFoundError:
            logger.debug("%s vanished before loading", relpath)
            self._set_aside.pop(entry.number, None)
            return None
        except _Deferred as exc:
            if exc.busy:
                self.queue.delay(entry, now + BIG_RETRY)
            return None
        except _Reject as exc:
            self._counters.incr(
                RECEIVED_MESSAGES
            )  # ZMailer counts every file it picks up
            self._quarantine(relpath, str(exc))
            return None
        return MessageLoaded(relpath, control, mtime, mtime_ns, ctime)

    def recheck_locks(self, now: float) -> None:
        """Every ``LOCK_POLL`` seconds: a file set aside for a live lock is due at once
        when every process that held it has died (an agent of a killed scheduler);
        otherwise it is tried again ``LOCK_RETRY`` seconds after it was set aside."""
        if not self._set_aside or now < self._next_lock_poll:
            return
        self._next_lock_poll = now + LOCK_POLL
        for number, pids in self._set_aside.items():
            if not any(map(pid_alive, pids)):
                self.queue.hurry(number, now)

    def next_lock_poll(self) -> float | None:
        """When :meth:`recheck_locks` has work next (None: no file is set aside)."""
        return self._next_lock_poll if self._set_aside else None

    def reload(self, relpath: str) -> MessageReloaded | MessageGone:
        """Re-read a loaded file (``#resync``, REQUEUE): no hashing, no queue."""
        try:
            control = self._read(relpath)
            if control is None:
                return MessageGone(relpath, "locked by a live process")
            self._check(control)
            mtime, mtime_ns = self._message_time(relpath, control)
        except FileNotFoundError:
            return MessageGone(relpath, "control file vanished")
        except _Reject as exc:
            self._quarantine(relpath, str(exc))
            return MessageGone(relpath, f"quarantined: {exc}")
        return MessageReloaded(relpath, control, mtime, mtime_ns)

    def _read(
        self,
        relpath: str,
        entry: Entry | None = None,
        prepared: Prepared | None = None,
    ) -> ControlFile | None:
        """Parse the file, resetting stale locks; None when a live PID holds it.

        One safe ``open`` (no symlink, no FIFO: :func:`spool.store.open_spool_fd`), an
        ``fstat`` (the size is checked before a byte is read), ``read``, ``close`` per
        file; the lock sweep runs only when the bytes hold a ``~``-locked recipient
        line. With ``entry`` and ``on_big`` set, a file over ``big_bytes`` is handed
        to ``on_big`` to be parsed off the event loop (:class:`_Deferred`).
        """
        path = self._transport + relpath
        try:
            if prepared is not None:
                data, parsed = prepared
                if isinstance(parsed, SpoolError):
                    raise parsed
                control = parsed
            else:
                data = store.read_control(path, self._max_bytes)
                if (
                    entry is not None
                    and self.on_big is not None
                    and len(data) > self._big_bytes
                ):
                    if self.parsing:
                        raise _Deferred(busy=True)
                    self.parsing.add(entry.number)
                    self.on_big(entry, data)
                    raise _Deferred(busy=False)
                control = parse(data, relpath)
            if _LOCKED in data and control.has_locked_recipients:
                _, live = store.reset_stale_locks(path)
                if live:
                    logger.info(
                        "Skipped a job-file because it is held locked by PID=%d: %s",
                        live[0],
                        relpath,
                    )
                    self._lock_pids = tuple(live)
                    return None
                control = parse(store.read_control(path), relpath)
        except (FileNotFoundError, _Deferred):
            raise
        except PermissionError as exc:
            raise _Reject(f"permission denied: {exc.strerror}") from exc
        except IsADirectoryError as exc:
            raise _Reject("not a regular file") from exc
        except SpoolError as exc:  # CorruptControlFile and friends
            raise _Reject(str(exc)) from exc
        except OSError as exc:
            raise _Reject(f"cannot read: {exc.strerror}") from exc
        return control

    @staticmethod
    def _check(control: ControlFile) -> None:
        if control.flags & ~KNOWN_FLAGS:
            raise _Reject(f"unknown/unsupported format set: 0x{control.flags:08x}")
        if control.mid is None:
            raise _Reject("no 'i' line")
        if control.log_id is None:
            raise _Reject("no 'l' line")
        if "/" in control.mid or control.mid in ("", ".", ".."):
            raise _Reject(f"bad message file name {control.mid!r}")

    def _hash(self, relpath: str, control: ControlFile) -> str:
        if self.hash_levels <= 0 or "/" in relpath:
            return relpath
        try:
            return hash_into_place(self.po, relpath, self.hash_levels, control.mid)
        except FileNotFoundError:
            raise
        except OSError as exc:
            logger.warning("%s: cannot move into hash directory: %s", relpath, exc)
            return relpath

    def _message_time(self, relpath: str, control: ControlFile) -> tuple[int, int]:
        prefix, _, _ = relpath.rpartition("/")
        name = f"{prefix}/{control.mid}" if prefix else f"{control.mid}"
        try:
            st = os.lstat(self._queue + name)
        except FileNotFoundError:
            if not os.path.exists(self._transport + relpath):
                raise
            raise _Reject(f"message file queue/{name} missing") from None
        except OSError as exc:
            raise _Reject(f"cannot stat message file: {exc.strerror}") from exc
        if not stat.S_ISREG(st.st_mode):
            raise _Reject(f"message file queue/{name} is not a regular file")
        ns = st.st_mtime_ns
        return ns // 1_000_000_000, ns % 1_000_000_000

    def _owner(self, name: str) -> int:
        try:
            return os.stat(self._queue + name).st_uid
        except OSError:
            return -9  # as ZMailer's ctlowner(): two unreadable files "match"

    def _owner_check(self, relpath: str, control: ControlFile) -> None:
        """ZMailer's ``deletemsg()`` security check: an ``x <spool-id>`` line only
        obsoletes a message whose message file has the same owner as this one's. The
        sender check and the lookup are the core's; here the ones whose owner differs
        are dropped (identifiers that are no spool-id are left to the core's lookup)."""
        prefix = relpath.rpartition("/")[0]
        mine = self._owner(f"{prefix}/{control.mid}" if prefix else str(control.mid))
        kept = []
        for ident in control.obsoletes:
            try:
                number = parse_spool_id(ident.strip())[0]
            except ValueError:
                kept.append(ident)
                continue
            name = hash_prefix(number, self.hash_levels) + str(number)
            if not os.path.lexists(self._queue + name):
                name = str(number)  # not (yet) hashed
            if self._owner(name) == mine:
                kept.append(ident)
            else:
                logger.info("%s: not obsoleted by %s (owner differs)", ident, relpath)
        control.obsoletes[:] = kept

    def _etrn(self, relpath: str, control: ControlFile, ctime: float) -> MessageLoaded:
        try:
            os.unlink(self._transport + relpath)
        except FileNotFoundError:
            pass
        except OSError as exc:
            logger.warning("%s: cannot remove ETRN file: %s", relpath, exc)
        return MessageLoaded(relpath, control, 0, 0, ctime)

    def _quarantine(self, relpath: str, reason: str) -> None:
        self.quarantined += 1
        try:
            dest = store.quarantine(self.po, relpath, reason)
        except OSError as exc:
            logger.error("cannot quarantine %s (%s): %s", relpath, reason, exc)
            return
        logger.error("quarantined %s as %s: %s", relpath, dest, reason)
