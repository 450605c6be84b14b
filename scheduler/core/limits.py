"""Starting a thread (SCHED-REF 4.3): the resource limits (``maxta``, ``maxchannel``,
``maxring``, ``maxthr``), reusing an idle TA, and forking a new one."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from scheduler.config.clauses import expand_command
from scheduler.core.commands import StartAgent
from scheduler.core.feeding import Feeding
from scheduler.core.model import LARVA, STUFF, Proc, Thread
from scheduler.core.state import TA_ACTIVE, TA_FORKS, TA_IDLE, TA_PROCS, TICK

if TYPE_CHECKING:
    from scheduler.config.clauses import Clause


__all__ = ["Limits"]

log = logging.getLogger(__name__)


class Limits(Feeding):
    """Starting threads within the resource limits."""

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
        if self.frozen:  # ZMailer -F: thread_start() returns before it sets pend=
            return False
        if self.hold_starts:  # the startup load is running: started by a later Tick
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
        first = th.first_vertex()
        if self.retry_mode == "zmailer":
            self._zm_reschedule(th, 0, first.attempts if first is not None else 0)
        elif (
            th.wakeup <= now
            and first is not None
            and not first.attempts
            and th.group.clause.retries
        ):
            # as ZMailer's reschedule(vp, 0): a thread never tried is due "now", so its
            # first deferral counts from here, not from a zero wakeup (issue 12)
            th.wakeup = now
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
