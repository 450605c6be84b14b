"""The scheduler core's state and its upkeep: the model's indexes, batched counters, the
``QueueView`` read side, and the primitives every other part uses to link, unlink and
complete vertices and messages (docs/scheduler.md).

The decision logic is split by job into mixins layered on :class:`ModelState`:
:mod:`.expiry` -> :mod:`.feeding` -> :mod:`.limits` / :mod:`.agentlines` ->
:mod:`.sweeps` / :mod:`.operations` -> :mod:`.loading`, assembled in :mod:`.core`.
"""

from __future__ import annotations

import itertools
import logging
import random
from array import array
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

from scheduler.config.clauses import fallback_clause
from scheduler.core.agenda import Agenda
from scheduler.core.commands import Command, CompleteMessage, ReloadMessage, StatLog
from scheduler.core.model import (
    HELD_SHIFT,
    LIVE_MASK,
    LIVE_SHIFT,
    M_DIAG,
    M_DONE,
    M_KILLED,
    M_PATHNUM,
    M_REQUEUE,
    T_MASK,
    V_FED,
    V_UNFED,
    Group,
    Message,
    Proc,
    Thread,
    Vertex,
)
from spool.ids import spool_id

if TYPE_CHECKING:
    from scheduler.config.clauses import Clause, SchedulerConfig
    from spool.counters import CounterBlock

__all__ = ["ModelState"]

log = logging.getLogger(__name__)

SECOND_NS = 1_000_000_000
# retry granularity for threads with no usable wakeup (ZMailer's main-loop tick)
TICK = 10
IDLE_SWEEP = 120
EXPIRY_SWEEP = 900
EXPIRY_SLICE = 4000  # vertices looked at per tick by the expiry sweep (~4 ms)
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


class ModelState:
    """The model and its bookkeeping; the base of every part of the core."""

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
        # The runner's startup load: threads are queued, not started, until it is done
        # (or a bound has passed); the next Tick starts the due ones (as ZMailer -S).
        self.hold_starts = False
        self.retry_mode = retry_mode
        self._zenv = dict(zenv)
        self._rng = rng if rng is not None else random.Random()
        self._fallback = fallback_clause(config)
        self._messages: dict[int, Message] = {}
        self._threads: dict[tuple[str, str], Thread] = {}
        self._groups: dict[tuple[str, ...], Group] = {}
        self._procs: dict[int, Proc] = {}
        self._channel_kids: dict[str, int] = {}
        self._marked: dict[Message, int] = {}  # -> when to run its DSN pass
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
        # SHOW QUEUE SHAPE's histograms, kept from the first load on: per arrival minute
        # (mtime // 60), the linked recipients of each thread (parked ones not counted).
        # Keyed minute first: a few dozen dicts rather than one per thread.
        self._ages: dict[int, dict[Thread, int]] = {}
        self._shutdown = False
        self._now = start_time
        self._out: list[Command] = []
        self._next_idle_sweep = start_time
        self._next_expiry_sweep = start_time
        # the expiry sweep in progress: the threads it walks, and how far it got
        self._expiry_walk: list[Thread] | None = None
        self._expiry_pos = 0
        self._next_report_sweep = start_time

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

    def _begin(self, now: float) -> None:
        self._now = int(now)
        self._out = []

    def _end(self) -> list[Command]:
        out = self._out
        self._out = []
        return out

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
        mtime = (v.msg._t & T_MASK) // SECOND_NS  # Message.mtime, unpacked once
        th.note_added(mtime)
        if count:  # SHAPE's histogram (the inverse of _age_sub): per loaded vertex
            slot = mtime // 60
            d = self._ages.get(slot)
            if d is None:
                self._ages[slot] = {th: count}
            else:
                d[th] = d.get(th, 0) + count
        self.total_vertices += 1
        self.total_recipients += count
        if th.thrkids:
            v.state |= V_UNFED
            th.unfed += 1
        return th

    def _age_sub(self, th: Thread, t: int, n: int) -> None:
        """Uncount ``n`` recipients of a message (its packed ``_t``) from ``th``."""
        slot = (t & T_MASK) // SECOND_NS // 60  # two one-digit divisions: faster
        d = self._ages[slot]
        left = d[th] - n
        if left:
            d[th] = left
        else:
            del d[th]
            if not d:
                del self._ages[slot]

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
        if type(v._offs) is int:  # the only recipient, no extras: nothing to shift
            v._offs = array("i")
            th.touch()  # written raw: SHOW THREAD caches see it (rcpts changes too)
        else:
            v.drop_index(index)
        self._age_sub(th, v.msg._t, 1)
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
        if n:
            self._age_sub(th, v.msg._t, n)
        v.clear_offsets()
        self._free_vertex(v)

    def _free_vertex(self, v: Vertex) -> None:
        th = v.thread
        assert th is not None
        v.thread = None
        th.jobs -= 1
        th.dead += 1
        vs = v._vs
        if vs & V_UNFED:
            th.unfed -= 1
            v._vs = vs & ~V_UNFED
        msg = v.msg
        th.note_removed(msg.mtime)
        self.total_vertices -= 1
        self._count(STORED_VERTICES, -1)
        if th.dead > 32 and th.dead > th.jobs:
            th.compact()
        s = msg._s
        if (s >> LIVE_SHIFT) & LIVE_MASK:  # live -= 1, read once
            s -= 1 << LIVE_SHIFT
            msg._s = s
        else:
            msg.live -= 1  # below zero: the setter says so
        if th.jobs == 0 and th.thrkids == 0:
            self._delete_thread(th)
        if not (s >> LIVE_SHIFT) & LIVE_MASK:
            self._maybe_complete(msg)

    def _kill_vertex(self, v: Vertex) -> None:
        if v.state & V_FED:
            v.state |= V_KILLED  # dropped when the TA gives it back
            v.msg.flags |= M_KILLED  # and never unlinked under it
        else:
            self._drop_vertex(v)

    def _maybe_complete(self, msg: Message) -> None:
        s = msg._s  # flags | live | held, read once (this runs per delivered message)
        if (s >> LIVE_SHIFT) & LIVE_MASK or s & M_DONE:
            return
        if s >> HELD_SHIFT and s & (M_KILLED | M_REQUEUE | M_DROP):
            return
        msg._s = s | M_DONE
        number = msg.number
        messages = self._messages
        if messages.get(number) is msg:
            del messages[number]
        if self._marked:
            self._marked.pop(msg, None)
        d = self._deltas
        d[STORED_MSGS] = d.get(STORED_MSGS, 0) - 1
        self._ndeltas += 1
        if s & M_DROP:
            return
        if s & M_REQUEUE:
            self._out.append(ReloadMessage(msg.relpath))
            return
        d[SENT_MSGS] = d.get(SENT_MSGS, 0) + 1
        self._ndeltas += 1
        if s & M_PATHNUM:  # the relpath and mid from the number (msg.relpath, msg.mid)
            mid = str(number)
            relpath = msg._path + mid
        else:
            relpath, mid = msg.relpath, msg.mid
        self._out.append(CompleteMessage(relpath, mid, bool(s & M_DIAG)))

    def _mark_diag(self, msg: Message) -> None:
        msg.flags |= M_DIAG
        if msg not in self._marked and not msg.flags & M_DONE:
            self._marked[msg] = self._now

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

    def _schedule(self, th: Thread) -> None:
        if th.group.clause.queueonly:
            Agenda.cancel(th)
            return
        now = self._now
        self._agenda.schedule(th, th.wakeup if th.wakeup > now else now + TICK)
