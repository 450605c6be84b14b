"""Feeding transport agents (SCHED-REF 4.4, 4.5): attaching a TA to a thread, the
LARVA/STUFF/FINISH/IDLE states, overfeed batches, switching threads in a group, and the
idle pool."""

from __future__ import annotations

from collections.abc import Sequence

from scheduler.core.agenda import Agenda
from scheduler.core.commands import WriteAgent
from scheduler.core.expiry import Expiry
from scheduler.core.model import (
    FEED_SHIFT,
    FINISH,
    HELD_SHIFT,
    IDLE,
    LARVA,
    LIVE_MASK,
    LIVE_SHIFT,
    M_DONE,
    STUFF,
    V_EXPIRING,
    V_FED,
    V_UNFED,
    WAIT_BITS,
    Proc,
    Thread,
    Vertex,
)
from scheduler.core.state import TA_ACTIVE, TA_IDLE, V_KILLED

__all__ = ["Feeding"]


class Feeding(Expiry):
    """Attaching TAs to threads and feeding them jobs."""

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
        th.touch()  # SHOW THREAD lists the vertices in this order
        n = 0
        for v in vl:  # v.state's bits, written raw (V_FED and V_UNFED are state bits)
            vs = v._vs
            if not vs & V_FED:
                v._vs = vs | V_UNFED
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

    def _next_unfed(self, th: Thread, peek: bool = False) -> Vertex | None:
        vl = th.vlist
        i = th.feedptr
        n = len(vl)
        while i < n:
            v = vl[i]
            i += 1
            if v.thread is th and v._vs & V_UNFED:  # v.state & V_UNFED
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
        jobs = p.jobs
        # v.state: -UNFED +FED, v.waiting_for = 0, v.lastfeed = now, in one write
        keep = (1 << FEED_SHIFT) - 1 & ~(V_UNFED | WAIT_BITS)
        fed_bits = V_FED | (now << FEED_SHIFT)
        while fed < count and th.unfed > 0:
            v = self._next_unfed(th)
            if v is None:
                break
            v._vs = (v._vs & keep) | fed_bits
            th.unfed -= 1
            msg = v.msg
            msg._s += 1 << HELD_SHIFT  # held += 1
            jobs.append(v)
            parts.append(f"{msg.relpath}\n" if withhost else f"{msg.relpath}\t{host}\n")
            fed += 1
        if fed:
            th.touch()  # lastfeed and waiting_for of SHOW THREAD rows, written raw
            p.feedtime = now
            self._out.append(
                WriteAgent(p.proc, "".join(parts).encode("utf-8", "surrogateescape"))
            )
        return fed

    def _job_done(self, v: Vertex) -> None:
        """A job was acknowledged (``#hungry``) or its TA died: the vertex is free again."""
        msg = v.msg
        vs = v._vs
        if vs & V_FED:
            vs &= ~V_FED
            v._vs = vs
            s = msg._s
            if s >> HELD_SHIFT:  # held -= 1, read once
                msg._s = s - (1 << HELD_SHIFT)
            else:
                msg.held -= 1  # below zero: the setter says so
        if v.thread is not None:
            if vs & V_KILLED:
                v.state &= ~V_KILLED
                self._drop_vertex(v)
            elif vs & V_EXPIRING:
                v.state &= ~V_EXPIRING
                self._expire_vertex(v)
        if v._vs & V_KILLED:
            v.state &= ~V_KILLED
        s = msg._s
        if not (s >> LIVE_SHIFT) & LIVE_MASK and not s & M_DONE:
            self._maybe_complete(msg)  # (once completed, a second call does nothing)

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

    def _pick_next_thread(self, p: Proc, skip: Sequence[Thread] = ()) -> Thread | None:
        """The next thread of ``p``'s group it may switch to (none of ``skip``)."""
        g = p.group
        cur = p.thread
        c = g.clause
        if c.queueonly:
            return None
        now = self._now
        for th in g.threads():
            if th is cur or th.channel != p.channel or (skip and th in skip):
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
