"""The tick: due threads from the agenda, and the periodic sweeps (idle and stuck TAs
S13, expiry S15/S16, DSN report passes)."""

from __future__ import annotations

import logging

from scheduler.core.agentlines import AgentLines
from scheduler.core.commands import RunDsnPass
from scheduler.core.events import Tick
from scheduler.core.limits import Limits
from scheduler.core.model import IDLE, Thread
from scheduler.core.state import (
    EXPIRY_SLICE,
    EXPIRY_SWEEP,
    IDLE_SWEEP,
    REPORT_SWEEP,
    STUCK_SECONDS,
)

__all__ = ["Sweeps"]

log = logging.getLogger(__name__)


class Sweeps(Limits, AgentLines):
    """Ticks: due threads and periodic sweeps."""

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
        if now >= self._next_expiry_sweep and self._expiry_walk is None:
            self._next_expiry_sweep = now + EXPIRY_SWEEP
            self._expiry_walk = list(self._threads.values())
            self._expiry_pos = 0
        if self._expiry_walk is not None:
            self._expiry_slice()
        if now >= self._next_report_sweep:
            self._next_report_sweep = now + REPORT_SWEEP
            self._report_sweep()

    def _expiry_slice(self) -> None:
        """Walk on with the expiry sweep, ``EXPIRY_SLICE`` vertices at most: on a big
        queue the whole walk takes a second of CPU (1M vertices), so it is spread
        over ticks (``next_wakeup`` is now until it is done), and MAILQ v2 answers
        between them. A thread deleted meanwhile is passed over."""
        walk = self._expiry_walk
        assert walk is not None
        pos, budget = self._expiry_pos, EXPIRY_SLICE
        while pos < len(walk) and budget > 0:
            th = walk[pos]
            pos += 1
            if th.alive and th.thrkids == 0:
                budget -= self._expire_due(th)
        if pos < len(walk):
            self._expiry_pos = pos
        else:
            self._expiry_walk = None

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
        marked = self._marked
        for msg, at in list(marked.items()):
            if at <= now:
                marked[msg] = now + interval
                self._out.append(RunDsnPass(msg.relpath))
