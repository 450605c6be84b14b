"""The asyncio shell around the decision core (DESIGN.md 2; SCHED-REF 4.1).

The :class:`Runner` owns the clock, the TA subprocesses (:mod:`scheduler.daemon.agents`), the
spool calls and the loading of control files (:mod:`scheduler.daemon.loader`). It turns what
happens into :mod:`scheduler.core.events`, feeds them to ``Scheduler.handle(event, now)`` one
at a time, and executes the returned :mod:`scheduler.core.commands` in order. Its timer is
the core's ``next_wakeup()`` (so threads run on time, not at 10 s ticks), the next
rescan (top level every ``scan_interval`` s, A-Z subdirectories every
``deep_scan_interval`` s) and the next delayed (locked) file.

Loading never starves the loop: at most ``load_batch`` files or ``load_budget`` seconds
per pass, then the loop yields so TA lines, MAILQ v2 sessions and notifications run.
While no TA is running and no event waits (the startup load of a big spool), a pass
loads for up to ``bulk_budget`` seconds instead, with the garbage collector off; the
objects loaded are moved out of the collector's sight (``gc.freeze``) until the queue is
empty, when they are handed back (``gc.unfreeze``). The loop stays responsive: MAILQ v2
sessions are answered between passes.
The runner also implements ``mailq.server.views.QueueOperations`` for the MAILQ v2 server.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import ctypes
import gc
import logging
import os
import time
from collections.abc import Callable, Iterable
from typing import Final, Protocol

from scheduler.config.clauses import SchedulerConfig
from scheduler.core import commands as cmd
from scheduler.core.events import (
    AgentExited,
    AgentOutput,
    AgentStarted,
    AgentStartFailed,
    ConfigChanged,
    Event,
    MessageLoaded,
    ShutdownRequested,
    Tick,
)
from scheduler.daemon.agents import AgentPool
from scheduler.daemon.loader import MAX_CONTROL_BYTES, CounterSink, Entry, Loader
from scheduler.daemon.loadpool import LoadWorkers, count_hashed, hash_dirs
from scheduler.daemon.loadworker import (
    MIN_FILES,
    RECORD_LEN,
    Item,
    PreparedControl,
    Record,
)
from scheduler.lifeline import Lifeline
from spool import store
from spool.controlfile import ControlFile, parse
from spool.errors import SpoolError
from spool.layout import Postoffice

__all__ = ["Core", "DsnPass", "Runner", "Tap"]

logger = logging.getLogger(__name__)
stats_logger = logging.getLogger("scheduler.stats")

SCAN_INTERVAL: Final = 10.0
DEEP_SCAN_INTERVAL: Final = 120.0
SYSTEM_REFRESH: Final = 30.0
MIN_SLEEP: Final = 0.01
BULK_BUDGET: Final = 0.005
BULK_TURNS: Final = 4  # loop turns after each bulk load pass (a query needs about 8)
STARTUP_HOLD: Final = 1.0
"""Seconds at most that the startup load in workers holds thread starts back."""


class Core(Protocol):
    """What the runner needs of ``scheduler.core.scheduler.Scheduler``."""

    def handle(self, event: Event, now: float) -> list[cmd.Command]: ...
    def next_wakeup(self) -> float | None: ...
    def etrn(self, domain: str, now: float) -> tuple[int, list[cmd.Command]]: ...
    def kill_msg(self, ident: str, now: float) -> tuple[bool, list[cmd.Command]]: ...
    def kill_thread(
        self, channel: str, host: str, now: float
    ) -> tuple[int, list[cmd.Command]]: ...
    def requeue_msg(self, ident: str, now: float) -> tuple[bool, list[cmd.Command]]: ...
    def is_loaded(self, number: int) -> bool: ...
    def flush_counters(self) -> None: ...


class Tap(Protocol):
    """An observer (``scheduler.daemon.deliveries.DeliveryTap``): each event before the
    core handles it, each command before it is executed."""

    def event(self, ev: Event) -> None: ...
    def command(self, c: cmd.Command) -> None: ...


class DsnPass(Protocol):
    def __call__(
        self, po: Postoffice, relpath: str, *, now: int, hostname: str
    ) -> str | None: ...


class Runner:
    """Drive one core: events in, commands out, until :meth:`stop`."""

    def __init__(
        self,
        core: Core,
        po: Postoffice,
        *,
        hash_levels: int = 0,
        counters: CounterSink | None = None,
        dsn_pass: DsnPass | None = None,
        hostname: str = "localhost",
        clock: Callable[[], float] = time.time,
        scan_interval: float = SCAN_INTERVAL,
        deep_scan_interval: float = DEEP_SCAN_INTERVAL,
        load_batch: int = 200,
        load_budget: float = 0.05,
        bulk_budget: float = BULK_BUDGET,
        agent_env: dict[str, str] | None = None,
        load_workers: int | None = None,
        worker_min_files: int = MIN_FILES,
        agent_timeout: float = 0.0,
        startup_hold: float = STARTUP_HOLD,
        lifeline: Lifeline | None = None,
    ) -> None:
        self.core = core
        self.po = po
        self.clock = clock
        self.hostname = hostname
        self.loader = Loader(
            po,
            is_loaded=core.is_loaded,
            counters=counters if counters is not None else _NoCounters(),
            hash_levels=hash_levels,
            on_big=self._parse_big,
        )
        self._big_tasks: set[asyncio.Task[None]] = set()
        self.agents = AgentPool(
            self,
            cwd=po.transport,
            base_env=agent_env,
            silence_timeout=agent_timeout,
            lifeline=lifeline,
        )
        self._counters = counters
        self._dsn_pass = dsn_pass
        self._scan_interval = scan_interval
        self._deep_interval = deep_scan_interval
        self._load_batch = load_batch
        self._load_budget = load_budget
        self._bulk_budget = bulk_budget
        self._frozen = False  # gc.freeze() done by a bulk pass, not yet undone
        self._bulk_pass = False  # the last pass was a bulk load pass
        # The startup load of a big queue runs in worker processes (scheduler.daemon.loadworker)
        if load_workers is None:
            load_workers = 2 if (os.cpu_count() or 1) >= 2 else 1
        self._load_workers = load_workers
        self._worker_min = worker_min_files
        self._workers: LoadWorkers | None = None
        self._worker_item: Item | None = None  # taken from the workers, not fed yet
        self._startup_hold = startup_hold
        self._hold_until = 0.0  # monotonic end of the startup hold (0: not holding)
        self._first_scan = True
        self._stats_flag()
        self._transport = os.fspath(po.transport) + "/"
        self._queue = os.fspath(po.queue) + "/"
        self._events: collections.deque[Event] = collections.deque()
        self._wake = asyncio.Event()
        self._stopping = False
        self._next_scan = 0.0
        self._next_deep = 0.0
        self._next_refresh = 0.0
        self.loaded_total = 0
        self.startup_loaded = False  # the first scan's files are all loaded
        self.tap: Tap | None = (
            None  # sees events and commands (scheduler.daemon.monitor)
        )
        # relpath -> recipient offsets whose d line could not be written (ENOSPC, EIO):
        # such a message is not completed on disk, so a rescan retries the recipient.
        self._unsaved: dict[str, set[int]] = {}

    # -- AgentListener ------------------------------------------------------------

    def agent_started(self, proc: int, pid: int) -> None:
        self.post(AgentStarted(proc, pid))

    def agent_start_failed(self, proc: int, reason: str) -> None:
        self.post(AgentStartFailed(proc, reason))

    def agent_lines(self, proc: int, lines: list[str]) -> None:
        """One read of a TA, handled at once when no event waits before it (its
        answers, the next jobs, go out in the same loop turn)."""
        event = AgentOutput(proc, lines)
        if self._events or self._stopping:
            self.post(event)
            return
        if self.tap is not None:
            self.tap.event(event)
        self.execute(self.core.handle(event, self.clock()))
        self._wake.set()  # the loop recomputes its next wakeup

    def agent_exited(self, proc: int, returncode: int) -> None:
        self.post(AgentExited(proc, returncode))

    # -- inputs -------------------------------------------------------------------

    def post(self, event: Event) -> None:
        """Queue an event for the core (handled in order by the loop)."""
        self._events.append(event)
        self._wake.set()

    def notify(self, relpath: str) -> None:
        """A ``NEW <relpath>`` notification: queue the file for loading."""
        if self.loader.offer(relpath):
            self._wake.set()

    def reconfigure(self, config: SchedulerConfig) -> None:
        self.post(ConfigChanged(config))

    def rescan(self, *, deep: bool = True) -> None:
        """Make the next pass scan (used by tests and SIGUSR-style pokes)."""
        self._next_scan = 0.0
        if deep:
            self._next_deep = 0.0
        self._wake.set()

    def poke(self) -> None:
        """Wake the loop so that it recomputes its next wakeup (operator commands)."""
        self._wake.set()

    def stop(self) -> None:
        self._stopping = True
        self._wake.set()

    # -- QueueOperations (MAILQ v2) -------------------------------------------------

    def etrn(self, domain: str) -> int:
        n, commands = self.core.etrn(domain, self.clock())
        self.execute(commands)
        return n

    def kill_msg(self, ident: str) -> bool:
        ok, commands = self.core.kill_msg(ident, self.clock())
        self.execute(commands)
        return ok

    def kill_thread(self, channel: str, host: str) -> int:
        n, commands = self.core.kill_thread(channel, host, self.clock())
        self.execute(commands)
        return n

    def requeue_msg(self, ident: str) -> bool:
        ok, commands = self.core.requeue_msg(ident, self.clock())
        self.execute(commands)
        return ok

    # -- the loop -----------------------------------------------------------------

    async def run(self) -> None:
        """Run until :meth:`stop`; then retire the TAs (see :meth:`shutdown`)."""
        while not self._stopping:
            self._wake.clear()
            now = self.clock()
            self._maybe_scan(now)
            self.loader.recheck_locks(now)
            busy = self._drain_events()
            busy |= self._load_batch_now()
            busy |= self._tick_if_due()
            if busy or self._events:
                await self._yield_turns()
                continue
            self.core.flush_counters()  # so readers of the shared block see them
            await self._sleep(self._timeout(self.clock()))

    async def _yield_turns(self) -> None:
        """One loop turn; ``BULK_TURNS`` after a bulk load pass, so that a MAILQ v2
        query (accept, greeting, AUTH, reply) waits a few short passes, not dozens."""
        turns, self._bulk_pass = (BULK_TURNS if self._bulk_pass else 1), False
        for _ in range(turns):
            await asyncio.sleep(0)

    async def shutdown(self, grace: float) -> None:
        """Slow shutdown: the core retires every TA; TERM, then KILL after ``grace``."""
        self._stopping = True
        if self._workers is not None:
            self._workers.close()
            self._workers = None
        self._holding()  # ends the startup hold
        self.execute(self.core.handle(ShutdownRequested(), self.clock()))
        await self.agents.shutdown(grace)
        self._drain_events()
        self.core.flush_counters()

    def _maybe_scan(self, now: float) -> None:
        if now < self._next_scan:
            return
        if self._workers is not None:  # the startup load is still in the workers
            self._next_scan = now + self._scan_interval
            return
        deep = now >= self._next_deep
        self._stats_flag()
        try:
            first, self._first_scan = self._first_scan, False
            if not (first and deep and self._start_workers()):
                self.loader.scan(deep=deep)
        except OSError as exc:
            logger.error("scan of %s failed: %s", self.po.transport, exc)
        backlog = min(10.0, len(self.loader.queue) / 32)
        self._next_scan = now + self._scan_interval + backlog
        if deep:
            self._next_deep = now + self._deep_interval
        if self._counters is not None and now >= self._next_refresh:
            self._next_refresh = now + SYSTEM_REFRESH
            refresh = getattr(self._counters, "refresh_system", None)
            if refresh is not None:
                refresh(str(self.po.root))

    def _stats_flag(self) -> None:
        """No StatLog is built while ``scheduler.stats`` is off (checked at every scan)."""
        if hasattr(self.core, "stats_enabled"):
            self.core.stats_enabled = stats_logger.isEnabledFor(logging.INFO)

    def _drain_events(self, limit: int = 1000) -> bool:
        n = 0
        while self._events and n < limit:
            event = self._events.popleft()
            if self.tap is not None:
                self.tap.event(event)
            self.execute(self.core.handle(event, self.clock()))
            n += 1
        return n > 0

    def _start_workers(self) -> bool:
        """The first scan of a big spool: the hash directories are scanned and their
        files prepared by load workers (scheduler.daemon.loadworker); the top level is scanned
        here (its files are hashed in-process, or with no hashing also handed over).
        False: a small spool, to be scanned and loaded in-process."""
        if self._load_workers <= 0:
            return False
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return False  # not inside the loop (a test driving passes by hand)
        loader = self.loader
        dirs = hash_dirs(self._transport)
        # an estimate from two hash directories (counting them all costs 0.1 s/100k)
        sample = dirs[:2]
        hashed = (
            count_hashed(self._transport, sample) * len(dirs) // max(1, len(sample))
        )
        loader.scan(deep=False)
        top = len(loader.queue) if loader.hash_levels <= 0 else 0
        if hashed + top < self._worker_min:
            return False
        entries = loader.take_ready(self.clock()) if top else []
        loader.taken = set()
        self._workers = LoadWorkers(
            self._transport,
            self._queue,
            loader.hash_levels,
            MAX_CONTROL_BYTES,
            entries=[(e.ctime, e.number, e.relpath) for e in entries],
            dirs=dirs,
            workers=self._load_workers,
            on_ready=self._wake.set,
        )
        self._hold()
        return True

    def _worker_ready(self) -> bool:
        """True if the load workers have an item ready (and clean up when done)."""
        workers = self._workers
        if workers is None:
            return False
        if self._worker_item is None:
            self._worker_item = workers.next_item()
        if self._worker_item is not None:
            return True
        if workers.finished:
            self._workers = None
            self.loader.inflight.clear()
            self.loader.taken = None
            if workers.failed:
                self.rescan()  # what a dead worker did not deliver
            _release_free_memory()
        return False

    def _load_batch_now(self) -> bool:
        queue = self.loader.queue
        now = self.clock()
        from_workers = self._worker_ready()
        if self._workers is not None and self._workers.took_batch():
            return True  # a batch was decoded in this step: fed from the next one
        if not from_workers and not queue.has_ready(now):
            self._thaw()
            if not self._first_scan and self._workers is None:
                self.startup_loaded = True
            return False
        load = self._feed_workers if from_workers else self._load
        if self._events or len(self.agents):
            self._thaw()
            load(now, self._load_batch, self._load_budget)
            return True
        # Nothing else to serve: a big pass, the collector off (it would rescan every
        # loaded object again and again), the loaded objects frozen out of its sight.
        enabled = gc.isenabled()
        gc.disable()
        self._bulk_pass = True
        try:
            load(now, len(queue) + 1_000_000, self._bulk_budget)
        finally:
            gc.freeze()
            self._frozen = True
            if enabled:
                gc.enable()
        return True

    def _load(self, now: float, limit: int, budget: float) -> None:
        queue = self.loader.queue
        load_next = self.loader.load_next
        handle = self.core.handle
        deadline = time.monotonic() + budget
        for _ in range(limit):
            event = load_next(now)
            if event is not None:
                self.loaded_total += 1
                commands = handle(event, now)
                if commands:
                    self.execute(commands)
            if not queue.has_ready(now) or time.monotonic() > deadline:
                break

    def _feed_workers(self, now: float, limit: int, budget: float) -> None:
        """Feed the load workers' files to the core, oldest first."""
        workers = self._workers
        assert workers is not None
        loader = self.loader
        inflight = loader.inflight
        is_loaded = self.core.is_loaded
        taken = loader.taken if loader.taken is not None else set()
        handle = self.core.handle
        deadline = time.monotonic() + budget
        item = self._worker_item
        self._worker_item = None
        for _ in range(limit):
            if item is None:
                item = workers.next_item(decode=False)  # in a step of its own
                if item is None:
                    break
            if inflight:
                inflight.discard(item[1])
            if not is_loaded(item[1]) and item[1] not in taken:
                if len(item) == RECORD_LEN:
                    rec: Record = item  # type: ignore[assignment]
                    control: ControlFile = PreparedControl(rec)  # type: ignore[assignment]
                    event: MessageLoaded | None = MessageLoaded(
                        rec[2], control, rec[4], rec[5], rec[0]
                    )
                else:  # the worker left it to us: quarantine, hashing, locks, ETRN ...
                    event = loader.load(Entry._make(item), now)
                if event is not None:
                    self.loaded_total += 1
                    commands = handle(event, now)
                    if commands:
                        self.execute(commands)
            item = None
            if time.monotonic() > deadline:
                break

    def _parse_big(self, entry: Entry, data: bytes) -> None:
        """A big control file: parse it in a thread, so the loop keeps serving."""
        logger.info("%s: %d bytes, parsed off the event loop", entry.relpath, len(data))
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # passes driven by hand (tests): parse here
            self._load_parsed(entry, data, _parse_or_error(data, entry.relpath))
            return
        task = loop.create_task(self._parse_in_thread(entry, data))
        self._big_tasks.add(task)
        task.add_done_callback(self._big_tasks.discard)

    async def _parse_in_thread(self, entry: Entry, data: bytes) -> None:
        try:
            parsed = await asyncio.to_thread(_parse_or_error, data, entry.relpath)
        except BaseException:
            self.loader.parsing.discard(entry.number)
            raise
        self._load_parsed(entry, data, parsed)
        self._wake.set()

    def _load_parsed(
        self, entry: Entry, data: bytes, parsed: ControlFile | SpoolError
    ) -> None:
        self.loader.parsing.discard(entry.number)
        if self._stopping or self.core.is_loaded(entry.number):
            return
        event = self.loader.load(entry, self.clock(), prepared=(data, parsed))
        if event is not None:
            self.loaded_total += 1
            self.post(event)

    def _thaw(self) -> None:
        """Give the objects frozen by bulk passes back to the garbage collector."""
        if self._frozen:
            self._frozen = False
            gc.unfreeze()

    def _hold(self) -> None:
        """Hold thread starts back while the load workers run (at most
        ``startup_hold`` s), as ZMailer's -S: the queue loads in bulk passes (the
        collector off, no TA to serve meanwhile) and delivery starts on all of it."""
        if self._startup_hold > 0 and hasattr(self.core, "hold_starts"):
            self.core.hold_starts = True
            self._hold_until = time.monotonic() + self._startup_hold

    def _holding(self) -> bool:
        """True while the startup hold lasts; its end lets the next Tick start threads."""
        if not self._hold_until:
            return False
        if self._workers is not None and time.monotonic() < self._hold_until:
            return True
        self._hold_until = 0.0
        self.core.hold_starts = False  # type: ignore[attr-defined]
        return False

    def _tick_if_due(self) -> bool:
        if self._holding():
            return False
        wakeup = self.core.next_wakeup()
        now = self.clock()
        if wakeup is None or wakeup > now:
            return False
        self.execute(self.core.handle(Tick(), now))
        after = self.core.next_wakeup()
        return after is not None and after > now  # no busy loop on a stuck wakeup

    def _timeout(self, now: float) -> float:
        candidates = [self._next_scan]
        wakeup = self.core.next_wakeup()
        if wakeup is not None:
            candidates.append(wakeup)
        dues = (self.loader.queue.next_due(), self.loader.next_lock_poll())
        candidates.extend(due for due in dues if due is not None)
        return max(MIN_SLEEP, min(candidates) - now)

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._wake.wait()

    # -- commands -------------------------------------------------------------------

    def execute(self, commands: Iterable[cmd.Command]) -> None:
        for command in commands:
            try:
                self._execute_one(command)
            except OSError as exc:
                logger.error("%s failed: %s", type(command).__name__, exc)

    def _execute_one(self, c: cmd.Command) -> None:
        if isinstance(c, cmd.WriteAgent):
            self.agents.write(c.proc, c.data)
        elif isinstance(c, cmd.CompleteMessage):
            if self._unsaved.pop(c.relpath, None) is not None:
                logger.error(
                    "%s kept: a diagnostic could not be written; retried at a rescan",
                    c.relpath,
                )
                return
            self._complete(c)
        elif isinstance(c, cmd.StartAgent):
            self.agents.start(c)
        elif isinstance(c, cmd.RetireAgent):
            self.agents.retire(c.proc, c.kill_after)
        elif isinstance(c, cmd.MarkRecipient):
            if c.status == "-" and c.offset in self._unsaved.get(c.relpath, ()):
                return  # its d line is not on disk: leave it pending for a retry
            store.mark_recipient(self._transport + c.relpath, c.offset, c.status)
        elif isinstance(c, cmd.AppendDiagnostic):
            try:
                store.append_diagnostic(self._transport + c.relpath, c.line, fsync=True)
            except OSError:
                self._keep_pending(c.relpath, c.line)
                raise
        elif isinstance(c, cmd.RunDsnPass):
            self._dsn(c.relpath)
        elif isinstance(c, cmd.ReloadMessage):
            self.post(self.loader.reload(c.relpath))
        elif isinstance(c, cmd.StatLog):
            if self.tap is not None:
                self.tap.command(c)
            if stats_logger.isEnabledFor(logging.INFO):
                stats_logger.info("%s", c.line)
        else:  # pragma: no cover - the Command union is closed
            raise AssertionError(f"unknown command {c!r}")

    def _keep_pending(self, relpath: str, line: bytes) -> None:
        """A d line failed: put its recipient back to pending on disk (a TA may have
        marked it already) so the message is not completed without its report."""
        try:
            offset = int(line[2:].split(b":", 1)[0])
        except ValueError:
            return
        self._unsaved.setdefault(relpath, set()).add(offset)
        with contextlib.suppress(OSError):
            store.mark_recipient(self._transport + relpath, offset, " ")

    def _complete(self, c: cmd.CompleteMessage) -> None:
        if c.dsn and not self._dsn(c.relpath):
            logger.error(
                "%s kept: its DSN was not written; retried at a rescan", c.relpath
            )
            return
        store.remove_message(self.po, c.relpath, c.mid)
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug("completed %s", c.relpath)

    def _dsn(self, relpath: str) -> bool:
        """Run the DSN pass; False if it failed (the message must then be kept)."""
        if self._dsn_pass is None:
            return True
        try:
            new = self._dsn_pass(
                self.po, relpath, now=int(self.clock()), hostname=self.hostname
            )
        except FileNotFoundError:
            logger.warning("DSN pass: %s vanished", relpath)
            return True
        except Exception:  # a bad file must never stop the daemon
            logger.exception("DSN pass on %s failed", relpath)
            return False
        if new is not None:
            logger.info("Created 'delivery' report on spoolid: %s for %s", new, relpath)
            self.notify(new)
        return True


def _parse_or_error(data: bytes, relpath: str) -> ControlFile | SpoolError:
    try:
        return parse(data, relpath)
    except SpoolError as exc:
        return exc


class _NoCounters:
    def incr(self, name: str, by: int = 1) -> None:
        pass


def _release_free_memory() -> None:
    """Hand the heap freed after a bulk load back to the OS (glibc ``malloc_trim``).

    The batches streamed from the load workers are unmarshalled and dropped; without this
    the freed pages stay in the process (about 100 bytes per queued message).
    """
    try:
        # the process's own symbols (libc among them): find_library("c") would run
        # ldconfig in a child process
        trim = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):  # not glibc: nothing to do
        return
    trim(0)
