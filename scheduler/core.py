"""The scheduler's pure decision core (SCHED-REF §2, §4, §5): events in, commands out.

:class:`Scheduler` never reads a clock, a file or a pipe. The runner calls
``handle(event, now)`` and executes the returned commands in order; it asks
``next_wakeup()`` when to send the next :class:`~scheduler.events.Tick`. The object is also
the :class:`mailq.view.QueueView` the MAILQ v2 reports read, and offers the operations
(ETRN, KILL MSG, KILL THREAD, REQUEUE), each returning its result and the commands to run.

Behaviour and every deliberate difference from ZMailer are documented in docs/scheduler.md.
"""

from __future__ import annotations

import itertools
import logging
import random
import sys
from array import array
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

from spool.controlfile import format_diagnostic
from spool.ids import message_number, spool_id

from . import retry
from .agenda import Agenda
from .commands import (
    AppendDiagnostic,
    Command,
    CompleteMessage,
    MarkRecipient,
    ReloadMessage,
    RetireAgent,
    RunDsnPass,
    StartAgent,
    StatLog,
    WriteAgent,
)
from .config import expand_command, fallback_clause
from .dsn import expiry_diagnostic
from .events import (
    AgentExited,
    AgentLine,
    AgentStarted,
    AgentStartFailed,
    ConfigChanged,
    MessageGone,
    MessageLoaded,
    MessageReloaded,
    ShutdownRequested,
    Tick,
)
from .loading import split_recipients
from .model import (
    ERROR,
    FINISH,
    IDLE,
    LARVA,
    M_DIAG,
    M_DONE,
    M_KILLED,
    M_REQUEUE,
    STUFF,
    V_EXPIRING,
    V_FED,
    V_UNFED,
    Group,
    Message,
    Proc,
    Thread,
    Vertex,
)
from .taproto import (
    FINAL_STATUSES,
    Garbage,
    Hungry,
    Report,
    Resync,
    parse_line,
    parse_retryat,
)

if TYPE_CHECKING:
    from mailq.view import CounterBlock
    from spool.controlfile import ControlFile, Recipient

    from .config import Clause, SchedulerConfig
    from .events import Event

__all__ = ["Scheduler"]

log = logging.getLogger(__name__)

# retry granularity for threads with no usable wakeup (ZMailer's main-loop tick)
TICK = 10
IDLE_SWEEP = 120
EXPIRY_SWEEP = 900
REPORT_SWEEP = 300
STUCK_SECONDS = 600
SHUTDOWN_KILL_AFTER = 10.0

# vertex killed (KILL/REQUEUE/drop) while a TA held it: dropped when given back
V_KILLED = 8
M_DROP = 16  # message dropped from memory without completing (MessageGone)

# counter names (SCHED-REF 5.1)
RECV_MSGS = "SC.ReceivedMessages"
RECV_RCPTS = "SC.ReceivedRecipients"
SENT_MSGS = "SC.TransmittedMessages"
SENT_RCPTS = "SC.TransmittedRecipients"
STORED_MSGS = "SC.StoredMessages-G"
STORED_THREADS = "SC.StoredThreads-G"
STORED_VERTICES = "SC.StoredVertices-G"
STORED_RCPTS = "SC.StoredRecipients-G"
TA_FORKS = "SC.TransportAgentForks"
TA_PROCS = "SC.TransportAgentProcesses-G"
TA_ACTIVE = "SC.TransportAgentsActive-G"
TA_IDLE = "SC.TransportAgentsIdle-G"

BAD_HOST_NOTARY = (
    "\x03\x01failed\x015.1.2\x01x-local; 500 (unparsable destination host)\x01"
)
BAD_HOST_TEXT = "unparsable destination host in the control file"


class Scheduler:
    """ZMailer's scheduling decisions over an in-memory model (also a ``QueueView``)."""

    def __init__(
        self,
        config: SchedulerConfig,
        counters: CounterBlock,
        *,
        zenv: Mapping[str, str] = {},
        start_time: int,
        frozen: bool = False,
        rng: random.Random | None = None,
        retry_mode: str = "fixed",
    ) -> None:
        if retry_mode not in ("fixed", "zmailer"):
            raise ValueError(
                f"retry_mode must be 'fixed' or 'zmailer', not {retry_mode!r}"
            )
        self.config = config
        self._counters = counters
        self._deltas: dict[str, int] = {}
        self._ndeltas = 0
        self.start_time = start_time
        self.frozen = frozen
        self.retry_mode = retry_mode
        self._zenv = dict(zenv)
        self._rng = rng if rng is not None else random.Random()
        self._fallback = fallback_clause(config)
        self._messages: dict[int, Message] = {}
        self._threads: dict[tuple[str, str], Thread] = {}
        self._groups: dict[tuple[str, ...], Group] = {}
        self._procs: dict[int, Proc] = {}
        self._channel_kids: dict[str, int] = {}
        self._marked: dict[Message, None] = {}
        self._ints: dict[
            int, int
        ] = {}  # shares equal small-ish ints (header offsets ...)
        self._agenda: Agenda[Thread] = Agenda()
        self._chain = itertools.count(1)
        self._proc_ids = itertools.count(1)
        self.kids = 0
        self.idle = 0
        self.total_vertices = 0
        self.total_recipients = 0
        self._shutdown = False
        self._now = start_time
        self._out: list[Command] = []
        self._next_idle_sweep = start_time
        self._next_expiry_sweep = start_time
        self._next_report_sweep = start_time
        self._handlers: dict[type, Callable[[Any], None]] = {
            MessageLoaded: self._on_loaded,
            MessageReloaded: self._on_reloaded,
            MessageGone: self._on_gone,
            AgentStarted: self._on_started,
            AgentStartFailed: self._on_start_failed,
            AgentLine: self._on_line,
            AgentExited: self._on_exited,
            Tick: self._on_tick,
            ConfigChanged: self._on_config,
            ShutdownRequested: self._on_shutdown,
        }

    # ------------------------------------------------------------------ QueueView

    @property
    def counters(self) -> CounterBlock:
        """The counter block, with every pending increment written first."""
        self.flush_counters()
        return self._counters

    def flush_counters(self) -> None:
        """Write the batched counter increments (done at least every Tick)."""
        if self._deltas:
            block = self._counters
            for name, by in self._deltas.items():
                if by:
                    block.incr(name, by)
            self._deltas.clear()
            self._ndeltas = 0

    def _count(self, name: str, by: int = 1) -> None:
        d = self._deltas
        d[name] = d.get(name, 0) + by
        self._ndeltas += 1
        if self._ndeltas >= 4096:
            self.flush_counters()

    @property
    def msgs(self) -> int:
        return len(self._messages)

    @property
    def total_threads(self) -> int:
        return len(self._threads)

    def groups(self) -> Iterable[Group]:
        return list(self._groups.values())

    def find_thread(self, channel: str, host: str) -> Thread | None:
        th = self._threads.get((channel, host))
        if th is None:
            th = self._threads.get((channel.lower(), host.strip().lower()))
        return th

    def threads(self) -> Iterable[Thread]:
        """Every thread, in time-chain order (last rescheduled last)."""
        return sorted(self._threads.values(), key=lambda t: t.chain_seq)

    def is_loaded(self, number: int) -> bool:
        return number in self._messages

    def message(self, number: int) -> Message | None:
        return self._messages.get(number)

    def proc(self, proc: int) -> Proc | None:
        return self._procs.get(proc)

    # ------------------------------------------------------------------ driving

    def handle(self, event: Event, now: float) -> list[Command]:
        self._now = int(now)
        out: list[Command] = []
        self._out = out
        self._handlers[type(event)](event)
        self._out = []
        return out

    def next_wakeup(self) -> float | None:
        times: list[float] = []
        t = self._agenda.next_time()
        if t is not None:
            times.append(t)
        if self._procs:
            times.append(self._next_idle_sweep)
        if self.total_vertices:
            times.append(self._next_expiry_sweep)
        if self._marked:
            times.append(self._next_report_sweep)
        return min(times) if times else None

    def _begin(self, now: float) -> None:
        self._now = int(now)
        self._out = []

    def _end(self) -> list[Command]:
        out = self._out
        self._out = []
        return out

    # ------------------------------------------------------------------ operations

    def etrn(self, domain: str, now: float) -> tuple[int, list[Command]]:
        """ETRN (SCHED-REF 4.8, B16 fixed: lower-cased). Returns the threads started."""
        self._begin(now)
        words = domain.split()
        n = self._etrn(words[0].lower()) if words else 0
        return n, self._end()

    def kill_msg(self, ident: str, now: float) -> tuple[bool, list[Command]]:
        """KILL MSG by spool-id or message-file name (docs/scheduler.md, B4 decision)."""
        self._begin(now)
        msg = self._find_message(ident)
        if msg is None:
            log.info("deletemsg: %s ID not found", ident)
            return False, self._end()
        log.info("deletemsg: %s %s killed", self._spool_id(msg), msg.mid)
        for v in msg.vertices:
            if v.thread is not None:
                self._kill_vertex(v)
        self._maybe_complete(msg)
        return True, self._end()

    def kill_thread(
        self, channel: str, host: str, now: float
    ) -> tuple[int, list[Command]]:
        """Remove every vertex of one thread silently; returns the recipients removed."""
        self._begin(now)
        th = self.find_thread(channel, host)
        n = 0
        if th is not None:
            for v in list(th.vertices()):
                n += len(v.offsets)
                self._kill_vertex(v)
        return n, self._end()

    def requeue_msg(self, ident: str, now: float) -> tuple[bool, list[Command]]:
        """Drop a message from memory and re-read it from disk (attempts reset)."""
        self._begin(now)
        msg = self._find_message(ident)
        if msg is None:
            return False, self._end()
        msg.flags |= M_REQUEUE
        for v in msg.vertices:
            if v.thread is not None:
                self._kill_vertex(v)
        self._maybe_complete(msg)
        return True, self._end()

    # ------------------------------------------------------------------ loading

    def _on_loaded(self, ev: MessageLoaded) -> None:
        control = ev.control
        self._count(RECV_MSGS)
        for value in control.etrn:
            words = value.split()
            if words:
                log.info("ETRN: %s", value)
                self._etrn(words[0].lower())
        if control.mid is None:
            return  # an ETRN request file (or a file without an i line): nothing to queue
        self._load(ev.relpath, control, ev.mtime, ev.mtime_ns, int(ev.ctime))

    def _load(
        self, relpath: str, control: ControlFile, mtime: int, mtime_ns: int, ctime: int
    ) -> None:
        name = relpath.rpartition("/")[2]
        number = int(name) if name.isdigit() else message_number(name)
        if number in self._messages:
            log.warning("message %s is already loaded; ignored", relpath)
            return
        specs, bad, hdr = split_recipients(control)
        ints = self._ints
        cdelta = ctime - mtime
        msg = Message(
            number,
            relpath,
            sys.intern(control.error_address),
            mtime,
            mtime_ns,
            ints.setdefault(cdelta, cdelta),
            ints.setdefault(hdr, hdr),
        )
        if len(ints) > 65536:
            ints.clear()
        if control.diagnostics and any(d.status == " " for d in control.diagnostics):
            msg.flags |= M_DIAG
            msg.report_at = self._now + self.config.params.global_report_interval
            self._marked[msg] = None
        if bad:
            self._bounce_bad_hosts(msg, bad)
        self._messages[number] = msg
        if not specs:
            self._count(STORED_MSGS)
            self._maybe_complete(msg)
            return
        total = 0
        vertices = []
        for spec in specs:
            v = Vertex(msg, spec.offsets, spec.extra)
            vertices.append(v)
            total += spec.count
        msg.vertices = tuple(vertices)
        msg.live = len(vertices)
        d = self._deltas
        d[STORED_MSGS] = d.get(STORED_MSGS, 0) + 1
        d[RECV_RCPTS] = d.get(RECV_RCPTS, 0) + total
        d[STORED_RCPTS] = d.get(STORED_RCPTS, 0) + total
        d[STORED_VERTICES] = d.get(STORED_VERTICES, 0) + len(vertices)
        for v, spec in zip(vertices, specs, strict=True):
            th = self._link(v, spec.channel, spec.host, spec.count)
            clause = th.group.clause
            if not clause.queueonly and not (clause.wakeuprestartonly and th.thrkids):
                self._start_thread(th)

    def _bounce_bad_hosts(self, msg: Message, bad: list[Recipient]) -> None:
        """S33 fix: a recipient with an unparsable host gets an error ``d`` line and ``-``."""
        for r in bad:
            line = format_diagnostic(
                r.offset,
                r.header_offset,
                r.dsn_offset,
                self._now,
                BAD_HOST_NOTARY,
                BAD_HOST_TEXT,
            )
            self._out.append(AppendDiagnostic(msg.relpath, line))
            self._out.append(MarkRecipient(msg.relpath, r.offset, "-"))
            log.warning(
                "bad destination host in %s at offset %d", msg.relpath, r.offset
            )
        self._mark_diag(msg)

    def _on_reloaded(self, ev: MessageReloaded) -> None:
        number = message_number(ev.relpath.rpartition("/")[2])
        msg = self._messages.get(number)
        if msg is None:
            self._load(ev.relpath, ev.control, ev.mtime, ev.mtime_ns, ev.mtime)
            return
        self._resync(msg, ev.control)

    def _resync(self, msg: Message, control: ControlFile) -> None:
        """Keep only the recipients still pending (or locked) on disk (SCHED-REF 4.11)."""
        pending = {r.offset for r in control.recipients if r.status in " ~"}
        self._count(RECV_RCPTS, len(pending))  # S30 keep
        if any(d.status == " " for d in control.diagnostics):
            self._mark_diag(msg)
        for v in msg.vertices:
            if v.thread is None:
                continue
            for i in range(len(v.offsets) - 1, -1, -1):
                if v.offsets[i] not in pending:
                    self._remove_rcpt(v, i)
                    if not v.offsets:
                        break
        self._maybe_complete(msg)

    def _on_gone(self, ev: MessageGone) -> None:
        number = message_number(ev.relpath.rpartition("/")[2])
        msg = self._messages.get(number)
        if msg is None:
            return
        log.info("message %s dropped from memory: %s", ev.relpath, ev.reason)
        msg.flags |= M_DROP
        for v in msg.vertices:
            if v.thread is not None:
                self._kill_vertex(v)
        self._maybe_complete(msg)

    # ------------------------------------------------------------------ model upkeep

    def _group_key(self, clause: Clause, channel: str, host: str) -> tuple[str, ...]:
        sel = "\0fallback" if clause is self._fallback else clause.selector
        return (sel, channel, host if clause.withhost else "")

    def _clause_for(self, channel: str, host: str) -> Clause:
        clause = self.config.match(channel, host)
        if clause is None:
            log.error("no pattern matched %s/%s", channel, host)
            return self._fallback
        return clause

    def _new_thread(self, channel: str, host: str) -> Thread:
        clause = self._clause_for(channel, host)
        key = self._group_key(clause, channel, host)
        group = self._groups.get(key)
        if group is None:
            group = Group(clause, channel, key[2], key)
            self._groups[key] = group
        th = Thread(group, channel, host)
        th.chain_seq = next(self._chain)
        group.ring.append(th)
        self._threads[(channel, host)] = th
        self._count(STORED_THREADS)
        if clause.queueonly:
            if clause.retries:
                th.wakeup = self._now + clause.retries[0]  # S36 keep
        else:
            self._agenda.schedule(th, self._now)
        return th

    def _link(self, v: Vertex, channel: str, host: str, count: int) -> Thread:
        th = self._threads.get((channel, host))
        if th is None:
            th = self._new_thread(channel, host)
        v.thread = th
        th.vlist.append(v)
        th.jobs += 1
        th.rcpts += count
        th.note_added(v.msg.mtime)
        self.total_vertices += 1
        self.total_recipients += count
        if th.thrkids:
            v.state |= V_UNFED
            th.unfed += 1
        return th

    def _delete_thread(self, th: Thread) -> None:
        if not th.alive:
            return
        th.alive = False
        del self._threads[(th.channel, th.host)]
        th.group.remove_thread(th)
        Agenda.cancel(th)
        self._count(STORED_THREADS, -1)

    def _maybe_delete_group(self, g: Group) -> None:
        if not g.ring and g.proc_count <= 0 and self._groups.get(g.key) is g:
            del self._groups[g.key]

    def _remove_rcpt(self, v: Vertex, index: int) -> None:
        th = v.thread
        assert th is not None
        v.drop_index(index)
        th.rcpts -= 1
        self.total_recipients -= 1
        self._count(STORED_RCPTS, -1)
        if not v.offsets:
            self._free_vertex(v)

    def _drop_vertex(self, v: Vertex) -> None:
        """Remove every remaining recipient of ``v`` silently (KILL, drop)."""
        th = v.thread
        assert th is not None
        n = len(v.offsets)
        th.rcpts -= n
        self.total_recipients -= n
        self._count(STORED_RCPTS, -n)
        v.offsets = array("i")
        v.extra = None
        self._free_vertex(v)

    def _free_vertex(self, v: Vertex) -> None:
        th = v.thread
        assert th is not None
        v.thread = None
        th.jobs -= 1
        th.dead += 1
        if v.state & V_UNFED:
            th.unfed -= 1
            v.state &= ~V_UNFED
        th.note_removed(v.msg.mtime)
        self.total_vertices -= 1
        self._count(STORED_VERTICES, -1)
        if th.dead > 32 and th.dead > th.jobs:
            th.compact()
        msg = v.msg
        msg.live -= 1
        if th.jobs == 0 and th.thrkids == 0:
            self._delete_thread(th)
        if msg.live == 0:
            self._maybe_complete(msg)

    def _kill_vertex(self, v: Vertex) -> None:
        if v.state & V_FED:
            v.state |= V_KILLED  # dropped when the TA gives it back
            v.msg.flags |= M_KILLED  # and never unlinked under it
        else:
            self._drop_vertex(v)

    def _maybe_complete(self, msg: Message) -> None:
        if msg.live or msg.flags & M_DONE:
            return
        if msg.held and msg.flags & (M_KILLED | M_REQUEUE | M_DROP):
            return
        msg.flags |= M_DONE
        if self._messages.get(msg.number) is msg:
            del self._messages[msg.number]
        self._count(STORED_MSGS, -1)
        self._marked.pop(msg, None)
        if msg.flags & M_DROP:
            return
        if msg.flags & M_REQUEUE:
            self._out.append(ReloadMessage(msg.relpath))
            return
        self._count(SENT_MSGS)
        self._out.append(
            CompleteMessage(msg.relpath, msg.mid, bool(msg.flags & M_DIAG))
        )

    def _mark_diag(self, msg: Message) -> None:
        msg.flags |= M_DIAG
        if msg not in self._marked and not msg.flags & M_DONE:
            if not msg.report_at:
                msg.report_at = self._now
            self._marked[msg] = None

    def _find_message(self, ident: str) -> Message | None:
        ident = ident.strip()
        if not ident:
            return None
        if ident.isdigit():
            msg = self._messages.get(int(ident))
            if msg is not None and msg.mid == ident:
                return msg
        if ident[0] == "S" and ident[1:2].isdigit():
            digits = ""
            for ch in ident[1:]:
                if not ch.isdigit():
                    break
                digits += ch
            msg = self._messages.get(int(digits))
            if msg is not None and self._spool_id(msg) == ident:
                return msg
        for msg in self._messages.values():
            if msg.mid == ident:
                return msg
        return None

    @staticmethod
    def _spool_id(msg: Message) -> str:
        return spool_id(msg.number, msg.mtime, msg.mtime_ns)

    def _stat(self, msg: Message, reason: str, th: Thread) -> None:
        ctime = msg.mtime + msg.cdelta
        self._out.append(
            StatLog(
                f"{self._spool_id(msg)} {msg.cdelta} {self._now - ctime} {reason} "
                f"{th.channel}/{th.host}"
            )
        )

    # ------------------------------------------------------------------ starting threads

    def _start_thread(self, th: Thread, etrn: bool = False) -> bool:
        """SCHED-REF 4.3; returns True when a TA was started or reused."""
        if th.jobs == 0 and th.thrkids == 0:
            self._delete_thread(th)
            return False
        if self._shutdown:
            return False
        g = th.group
        c = g.clause
        if c.queueonly and not etrn:
            return False
        if self.frozen:
            th.pending = "Frozen"
            if not th.agenda_seq:
                self._agenda.schedule(th, self._now + TICK)
            return False
        th.pending = ""
        if th.thrkids >= c.maxthr or (th.thrkids and th.thrkids >= th.unfed):
            return False
        if g.idle and self._reuse_idle(th):
            return True
        reason, wait = self._limit_hit(th, c)
        if reason:
            th.pending = reason
            first = th.first_vertex()
            if first is not None:
                first.waiting_for = wait
            self._limit_reschedule(th)
            return False
        if not c.argv:
            th.pending = "ConfBUG:NoCmdDefined!"
            log.error("No command defined for %s/%s!", th.channel, th.host)
            self._agenda.schedule(th, self._now + c.interval)
            return False
        self._fork(th)
        return True

    def _limit_hit(self, th: Thread, c: Clause) -> tuple[str, int]:
        if self.kids >= c.maxta:
            return ">MaxTA", 3
        if self._channel_kids.get(th.channel, 0) >= c.maxchannel:
            return ">MaxChannel", 2
        if th.group.proc_count >= c.maxring:
            return ">MaxRing", 1
        if th.thrkids >= c.maxthr:
            return ">MaxThr", 3
        return "", 0

    def _limit_reschedule(self, th: Thread) -> None:
        """A resource limit refused a new TA: try again at the next tick."""
        now = self._now
        if self.retry_mode == "zmailer":
            c = th.group.clause
            first = th.first_vertex()
            w, ri, _ = retry.zm_reschedule(
                th.wakeup,
                th.retryindex,
                now,
                c.interval,
                c.skew,
                c.retries,
                0,
                first.attempts if first is not None else 0,
                self._rng,
            )
            th.wakeup, th.retryindex = w, ri
        if not th.group.clause.queueonly:
            self._agenda.schedule(th, max(th.wakeup, now + TICK))

    def _fork(self, th: Thread) -> None:
        g = th.group
        c = g.clause
        env, argv = expand_command(c, th.channel, th.host, self._zenv)
        p = Proc(next(self._proc_ids), g, th.channel, th.host, self._now)
        self._procs[p.proc] = p
        self.kids += 1
        self._channel_kids[th.channel] = self._channel_kids.get(th.channel, 0) + 1
        g.proc_count += 1
        self._count(TA_FORKS)
        self._count(TA_PROCS)
        self._count(TA_ACTIVE)
        self._attach(p, th)
        self._out.append(
            StartAgent(
                p.proc,
                tuple(argv),
                env,
                c.uid,
                c.gid,
                c.nice,
                th.channel,
                th.host,
            )
        )

    def _reuse_idle(self, th: Thread) -> bool:
        g = th.group
        pick: Proc | None = None
        for p in g.idle:
            if not p.retiring and p.host == th.host and p.channel == th.channel:
                pick = p
                break
        if pick is None and not g.clause.withhost:
            for p in g.idle:
                if not p.retiring and p.channel == th.channel:
                    pick = p
                    break
        if pick is None:
            return False
        g.idle.remove(pick)
        self.idle -= 1
        self._count(TA_IDLE, -1)
        self._count(TA_ACTIVE)
        self._attach(pick, th)
        pick.state = LARVA
        pick.virtual = 0
        if self._feed(pick, 1):
            pick.state = STUFF
        else:
            self._finish(pick)
        return True

    def _attach(self, p: Proc, th: Thread) -> None:
        if th.thrkids == 0:
            self._init_order(th)
        p.thread = th
        p.host = th.host
        th.proclist.append(p)
        th.thrkids += 1
        th.pending = ""
        Agenda.cancel(th)

    def _init_order(self, th: Thread) -> None:
        """The first TA attaches: shuffle (or age-sort) the vertices; all are unfed."""
        if th.dead:
            th.compact()
        vl = th.vlist
        if th.group.clause.ageorder:
            vl.sort(key=lambda v: (v.msg.mtime, v.msg.mtime_ns))
        elif len(vl) > 1:
            self._rng.shuffle(vl)
        n = 0
        for v in vl:
            if not v.state & V_FED:
                v.state |= V_UNFED
                n += 1
        th.unfed = n
        th.feedptr = 0

    def _detach(self, p: Proc) -> Thread | None:
        th = p.thread
        if th is None:
            return None
        p.thread = None
        th.proclist.remove(p)
        th.thrkids -= 1
        th.group.advance_pickup(th)
        if th.thrkids == 0 and th.unfed:
            for v in th.vlist:
                v.state &= ~V_UNFED
            th.unfed = 0
        return th

    # ------------------------------------------------------------------ feeding

    def _next_unfed(self, th: Thread, peek: bool = False) -> Vertex | None:
        vl = th.vlist
        i = th.feedptr
        n = len(vl)
        while i < n:
            v = vl[i]
            i += 1
            if v.thread is th and v.state & V_UNFED:
                if not peek:
                    th.feedptr = i
                return v
        th.feedptr = i
        return None

    def _feed(self, p: Proc, count: int) -> int:
        th = p.thread
        if th is None or self._shutdown:
            return 0
        now = self._now
        host = th.host
        withhost = th.group.clause.withhost
        parts: list[str] = []
        fed = 0
        while fed < count and th.unfed > 0:
            v = self._next_unfed(th)
            if v is None:
                break
            v.state = (v.state & ~V_UNFED) | V_FED
            th.unfed -= 1
            v.msg.held += 1
            v.lastfeed = now
            v.waiting_for = 0
            p.jobs.append(v)
            parts.append(
                f"{v.msg.relpath}\n" if withhost else f"{v.msg.relpath}\t{host}\n"
            )
            fed += 1
        if fed:
            p.feedtime = now
            self._out.append(
                WriteAgent(p.proc, "".join(parts).encode("utf-8", "surrogateescape"))
            )
        return fed

    def _job_done(self, v: Vertex) -> None:
        """A job was acknowledged (``#hungry``) or its TA died: the vertex is free again."""
        msg = v.msg
        if v.state & V_FED:
            v.state &= ~V_FED
            msg.held -= 1
        if v.thread is not None:
            if v.state & V_KILLED:
                v.state &= ~V_KILLED
                self._drop_vertex(v)
            elif v.state & V_EXPIRING:
                v.state &= ~V_EXPIRING
                self._expire_vertex(v)
        v.state &= ~V_KILLED
        if msg.live == 0:
            self._maybe_complete(msg)

    def _on_line(self, ev: AgentLine) -> None:
        p = self._procs.get(ev.proc)
        if p is None:
            return
        line = ev.line
        if line == "#hungry":
            self._on_hungry(p)
            return
        parsed = parse_line(line)
        if isinstance(parsed, Report):
            self._on_report(p, parsed)
        elif isinstance(parsed, Resync):
            self._on_resync(parsed.path)
        elif isinstance(parsed, Garbage):
            log.warning(
                "TA %d (pid %d): %s: %r", p.proc, p.pid, parsed.reason, parsed.line
            )
        elif isinstance(parsed, Hungry):
            self._on_hungry(p)
        else:
            log.debug("DBGdiag: %s", line)

    def _on_hungry(self, p: Proc) -> None:
        p.hungertime = self._now
        if p.virtual:
            p.virtual = 0
        elif p.jobs:
            self._job_done(p.jobs.popleft())
        if p.thread is None or p.retiring:
            return
        if p.jobs:
            return
        st = p.state
        if st == IDLE:
            self._to_idle_pool(p)
        elif st == LARVA:
            if self._feed(p, 1):
                p.state = STUFF
            else:
                self._finish(p)
        elif st == STUFF:
            if not self._feed(p, p.group.clause.overfeed + 1):
                self._finish(p)
        elif st == FINISH:
            self._finish(p)

    def _finish(self, p: Proc) -> None:
        """OF is 0 and this thread is done for now: switch threads in the group, or idle."""
        old = p.thread
        assert old is not None
        if self._shutdown:
            return
        nxt = self._pick_next_thread(p)
        if nxt is not None:
            self._detach(p)
            self._thread_reschedule(old)
            self._attach(p, nxt)
            p.state = STUFF
            if self._feed(p, p.group.clause.overfeed + 1):
                return
            nxt.pending = "NoNextFeed"
        p.state = IDLE
        p.virtual = 1
        self._out.append(WriteAgent(p.proc, b"#idle\n"))

    def _pick_next_thread(self, p: Proc) -> Thread | None:
        g = p.group
        cur = p.thread
        c = g.clause
        if c.queueonly:
            return None
        now = self._now
        for th in g.threads():
            if th is cur or th.channel != p.channel:
                continue
            if th.wakeup > now and th.attempts > 0:
                continue
            if th.thrkids >= c.maxthr or th.thrkids >= th.jobs:
                continue
            if th.thrkids and not th.unfed:
                continue
            return th
        return None

    def _to_idle_pool(self, p: Proc) -> None:
        th = self._detach(p)
        p.state = IDLE
        p.group.idle.insert(0, p)
        self.idle += 1
        self._count(TA_ACTIVE, -1)
        self._count(TA_IDLE)
        if th is not None:
            self._thread_reschedule(th)

    # ------------------------------------------------------------------ TA reports

    def _on_report(self, p: Proc, rep: Report) -> None:
        msg = self._messages.get(rep.number)
        if msg is None:
            log.warning("cannot find control file for %d!", rep.number)
            return
        off = rep.offset
        for v in msg.vertices:
            if v.thread is not None and off in v.offsets:
                break
        else:
            log.warning(
                "unknown address offset %d in control file %d!", off, rep.number
            )
            return
        idx = v.offsets.index(off)
        th = v.thread
        assert th is not None
        status = rep.status
        if v.state & V_KILLED or msg.flags & (M_REQUEUE | M_DROP):
            if status in FINAL_STATUSES:
                self._count(SENT_RCPTS)
            self._remove_rcpt(v, idx)
            return
        v.attempts += 1
        th.attempts += 1
        v.notary = rep.notary or None
        if status in FINAL_STATUSES:
            self._final(v, idx, status, rep)
        elif status in ("deferred", "deferback"):
            if rep.message:
                v.message = rep.message
            self._deferred(v, idx)
        elif status == "retryat":
            when, text = parse_retryat(rep.message, self._now)
            if text:
                v.message = text
            if when is None:  # T2 fix: no argument = deferred
                self._deferred(v, idx)
                return
            th.retry_floor = max(th.retry_floor, when)
            self._to_finish(p)
        elif status == "deferall":
            self._deferall(p, v, rep.message)
        else:
            log.warning("Unknown diagnostic type ignored: %s", status)

    def _final(self, v: Vertex, idx: int, status: str, rep: Report) -> None:
        msg = v.msg
        th = v.thread
        assert th is not None
        notify, hdr, dsn = v.rcpt_extra(idx)
        if status == "ok":
            if "SUCCESS" in notify:
                self._append_diag(v, idx, hdr, dsn, rep.notary, rep.message)
        elif status == "error":
            if "FAILURE" in notify:
                self._append_diag(
                    v, idx, hdr, dsn, rep.notary, rep.message or "(unknown)"
                )
        elif status == "error2" or (status == "ok2" and "SUCCESS" in notify):
            self._mark_diag(msg)
        self._stat(msg, status, th)
        self._count(SENT_RCPTS)
        self._remove_rcpt(v, idx)

    def _append_diag(
        self, v: Vertex, idx: int, hdr: int, dsn: int, notary: str, message: str
    ) -> None:
        line = format_diagnostic(v.offsets[idx], hdr, dsn, self._now, notary, message)
        self._out.append(AppendDiagnostic(v.msg.relpath, line))
        self._mark_diag(v.msg)

    def _to_finish(self, p: Proc) -> None:
        if p.state != STUFF:
            return
        th = p.thread
        if th is not None:
            nxt = self._next_unfed(th, peek=True)
            if nxt is not None and 0 < nxt.expiry <= self._now:
                return  # keep feeding: old messages get diagnosed quickly
        p.state = FINISH

    def _deferall(self, p: Proc, v: Vertex, text: str) -> None:
        th = v.thread
        assert th is not None
        self._to_finish(p)
        v.attempts -= 1
        try:
            start = th.vlist.index(v)
        except ValueError:
            start = len(th.vlist)
        for u in th.vlist[start:]:
            if u.thread is th:
                u.attempts += 1
                if text:
                    u.message = text

    def _deferred(self, v: Vertex, idx: int) -> None:
        th = v.thread
        assert th is not None
        c = th.group.clause
        now = self._now
        if self.retry_mode == "zmailer":
            w, ri, _ = retry.zm_reschedule(
                th.wakeup,
                th.retryindex,
                now,
                c.interval,
                c.skew,
                c.retries,
                -1,
                v.attempts,
                self._rng,
            )
        else:
            w, ri = retry.fixed_reschedule(
                th.wakeup, th.retryindex, now, c.interval, c.skew, c.retries, self._rng
            )
        th.wakeup, th.retryindex = w, ri
        e = v.expiry
        if e and v.attempts > 0 and e <= th.wakeup:  # S21 keep: against the next wakeup
            self._expire_rcpt(v, idx)
            if v.thread is not None:
                if v.state & V_FED:
                    v.state |= V_EXPIRING  # S20 fix: the rest when the job ends
                else:
                    self._expire_vertex(v)

    # ------------------------------------------------------------------ expiry

    def _expire_rcpt(self, v: Vertex, idx: int) -> None:
        th = v.thread
        assert th is not None
        msg = v.msg
        c = th.group.clause
        _notify, hdr, dsn = v.rcpt_extra(idx)
        off = v.offsets[idx]
        # S23 fix: "\x03" = the recipient's own address (the DSN pass reads its r line)
        line = expiry_diagnostic(
            off, hdr, dsn, self._now, c.expiry, v.notary or "", v.message or "", "\x03"
        )
        self._out.append(AppendDiagnostic(msg.relpath, line))
        self._out.append(MarkRecipient(msg.relpath, off, "-"))
        self._mark_diag(msg)
        self._stat(msg, "expire", th)
        self._count(SENT_RCPTS)
        self._remove_rcpt(v, idx)

    def _expire_vertex(self, v: Vertex) -> None:
        while v.thread is not None and v.offsets:
            self._expire_rcpt(v, 0)

    def _expire_due(self, th: Thread) -> None:
        now = self._now
        for v in list(th.vertices()):
            if v.state & V_FED:
                continue
            e = v.expiry
            if e and ((e <= now and v.attempts > 0) or v.expiry2 <= now):
                self._expire_vertex(v)

    # ------------------------------------------------------------------ rescheduling

    def _thread_reschedule(self, th: Thread) -> None:
        """A TA left the thread (SCHED-REF 4.6.3)."""
        if not th.alive:
            return
        if th.jobs == 0 and th.thrkids == 0:
            self._delete_thread(th)
            return
        if th.thrkids:
            return
        th.chain_seq = next(self._chain)
        c = th.group.clause
        now = self._now
        if self.retry_mode == "zmailer":
            w, ri, advanced = retry.zm_thread_reschedule(
                th.wakeup, th.retryindex, now, c.interval, c.retries, self._rng
            )
        else:
            w, ri = retry.fixed_thread_reschedule(
                th.wakeup, th.retryindex, now, c.interval, c.skew, c.retries, self._rng
            )
            advanced = True
        if th.retry_floor > w:
            w = th.retry_floor
        th.retry_floor = 0
        th.wakeup, th.retryindex = w, ri
        if advanced:
            self._expire_due(th)
        if th.alive:
            self._schedule(th)

    def _schedule(self, th: Thread) -> None:
        if th.group.clause.queueonly:
            Agenda.cancel(th)
            return
        now = self._now
        self._agenda.schedule(th, th.wakeup if th.wakeup > now else now + TICK)

    # ------------------------------------------------------------------ TA lifecycle

    def _on_started(self, ev: AgentStarted) -> None:
        p = self._procs.get(ev.proc)
        if p is not None:
            p.pid = ev.pid

    def _on_start_failed(self, ev: AgentStartFailed) -> None:
        p = self._procs.get(ev.proc)
        if p is None:
            return
        log.error("Fork failed! %s/%s: %s", p.channel, p.host, ev.reason)
        th = p.thread
        self._reap(p)
        if th is not None and th.alive:
            th.pending = "System:ForkFailure!"

    def _on_exited(self, ev: AgentExited) -> None:
        p = self._procs.get(ev.proc)
        if p is None:
            return
        if ev.returncode:
            log.warning(
                "reclaim pid=%d chan=%s host=%s %s=%d",
                p.pid,
                p.channel,
                p.host,
                "SIGNAL" if ev.returncode < 0 else "EXIT",
                abs(ev.returncode),
            )
        self._reap(p)

    def _reap(self, p: Proc) -> None:
        del self._procs[p.proc]
        self.kids -= 1
        n = self._channel_kids.get(p.channel, 0) - 1
        if n > 0:
            self._channel_kids[p.channel] = n
        else:
            self._channel_kids.pop(p.channel, None)
        self._count(TA_PROCS, -1)
        g = p.group
        if p in g.idle:
            g.idle.remove(p)
            self.idle -= 1
            self._count(TA_IDLE, -1)
        else:
            self._count(TA_ACTIVE, -1)
        jobs = p.jobs
        p.jobs = deque()
        p.virtual = 0
        for v in jobs:
            # fed but unreported: back to the thread, no attempt counted
            self._job_done(v)
        th = self._detach(p)
        p.state = ERROR
        g.proc_count -= 1
        if th is not None:
            self._thread_reschedule(th)
        self._maybe_delete_group(g)

    def _retire(self, p: Proc, kill_after: float = 0.0) -> None:
        if not p.retiring:
            p.retiring = True
            self._out.append(RetireAgent(p.proc, kill_after))

    def _on_resync(self, path: str) -> None:
        try:
            number = message_number(path.rpartition("/")[2])
        except ValueError:
            log.warning("#resync of an unusable path %r", path)
            return
        msg = self._messages.get(number)
        if msg is None:
            log.warning("#resync of %s: not loaded", path)
            return
        log.info('Resyncing file "%s"', path)
        self._out.append(ReloadMessage(msg.relpath))

    # ------------------------------------------------------------------ ticks and sweeps

    def _on_tick(self, ev: Tick) -> None:
        self.flush_counters()
        now = self._now
        for th in self._agenda.pop_due(now):
            self._run_due(th)
        if len(self._agenda) > 4 * len(self._threads) + 1024:
            self._agenda.compact()
        if now >= self._next_idle_sweep:
            self._next_idle_sweep = now + IDLE_SWEEP
            self._idle_sweep()
        if now >= self._next_expiry_sweep:
            self._next_expiry_sweep = now + EXPIRY_SWEEP
            for th in list(self._threads.values()):
                if th.thrkids == 0:
                    self._expire_due(th)
        if now >= self._next_report_sweep:
            self._next_report_sweep = now + REPORT_SWEEP
            self._report_sweep()

    def _run_due(self, th: Thread) -> None:
        if not th.alive or th.thrkids or th.group.clause.queueonly:
            return
        if th.wakeup > self._now:
            self._schedule(th)
            return
        maxthr = th.group.clause.maxthr
        while self._start_thread(th) and th.thrkids < maxthr:
            pass

    def _idle_sweep(self) -> None:
        now = self._now
        for g in list(self._groups.values()):
            idlemax = g.clause.idlemax
            for p in g.idle:
                if not p.retiring and now - p.hungertime >= idlemax:
                    self._retire(p)
            for th in g.ring:
                for p in th.proclist:
                    stuck = (
                        p.overfed == 0 or p.state == IDLE
                    )  # hungry, or mute on #idle
                    if stuck and not p.retiring and now - p.hungertime >= STUCK_SECONDS:
                        log.warning(
                            "kludge shutdown of TA %s/%s HA=%ds",
                            th.channel,
                            th.host,
                            now - p.hungertime,
                        )
                        th.wakeup = now - 1
                        self._retire(p)
            self._maybe_delete_group(g)

    def _report_sweep(self) -> None:
        now = self._now
        interval = self.config.params.global_report_interval
        for msg in list(self._marked):
            if msg.report_at <= now:
                msg.report_at = now + interval
                self._out.append(RunDsnPass(msg.relpath))

    # ------------------------------------------------------------------ ETRN

    def _etrn(self, domain: str) -> int:
        if not domain:
            return 0
        found = [t for t in self._threads.values() if t.host == domain]
        found.sort(key=lambda t: t.chain_seq)
        started = 0
        for th in found:
            if th.alive and th.thrkids == 0:
                th.wakeup = 0
                if self._start_thread(th, etrn=True):
                    started += 1
        return started

    # ------------------------------------------------------------------ config, shutdown

    def _on_config(self, ev: ConfigChanged) -> None:
        """Rebuild groups and threads for the new clauses (SCHED-REF 4.14, S27 fixed)."""
        self.config = ev.config
        self._fallback = fallback_clause(ev.config)
        moved: list[tuple[Vertex, str, str]] = []
        for th in list(self._threads.values()):
            clause = self._clause_for(th.channel, th.host)
            key = self._group_key(clause, th.channel, th.host)
            if key == th.group.key:
                th.group.clause = clause
                continue
            for p in list(th.proclist):
                self._retire(p)
                for v in p.jobs:
                    if v.state & V_FED:
                        v.state &= ~V_FED
                        v.msg.held -= 1
                p.jobs.clear()
                p.virtual = 0
                self._detach(p)
            for v in list(th.vertices()):
                n = len(v.offsets)
                v.thread = None
                v.state &= ~V_UNFED
                th.jobs -= 1
                th.rcpts -= n
                self.total_vertices -= 1
                self.total_recipients -= n
                moved.append((v, th.channel, th.host))
            self._delete_thread(th)
        for v, channel, host in moved:
            self._link(v, channel, host, len(v.offsets))
        for g in list(self._groups.values()):
            clause = self._clause_for(g.channel, g.host or "")
            if self._group_key(clause, g.channel, g.host) != g.key:
                for p in g.idle:
                    self._retire(p)
            self._maybe_delete_group(g)
        for th in self._threads.values():
            if th.thrkids == 0 and th.agenda_seq == 0:
                self._schedule(th)

    def _on_shutdown(self, ev: ShutdownRequested) -> None:
        self._shutdown = True
        for p in list(self._procs.values()):
            self._retire(p, SHUTDOWN_KILL_AFTER)
        self._agenda = Agenda()
