"""The operations of MAILQ v2 and the daemon (SCHED-REF 4.8, 4.14; docs/scheduler.md): ETRN,
KILL MSG, KILL THREAD, REQUEUE MSG, a changed scheduler.conf, shutdown."""

from __future__ import annotations

import logging

from scheduler.config.clauses import fallback_clause
from scheduler.core.agenda import Agenda
from scheduler.core.agentlines import AgentLines
from scheduler.core.commands import Command
from scheduler.core.events import ConfigChanged, ShutdownRequested
from scheduler.core.limits import Limits
from scheduler.core.model import M_REQUEUE, V_FED, V_UNFED, Vertex
from scheduler.core.state import SHUTDOWN_KILL_AFTER

__all__ = ["Operations"]

log = logging.getLogger(__name__)


class Operations(Limits, AgentLines):
    """ETRN, KILL, REQUEUE, config reload and shutdown."""

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

    def _etrn(self, domain: str) -> int:
        if not domain:
            return 0
        found = [t for t in self._threads.values() if t.host == domain]
        found.sort(key=lambda t: t.chain_seq)
        started = 0
        for th in found:
            if th.alive and th.thrkids == 0:
                th.wakeup = 0  # the next reschedule counts from 0 (issue 12 #9)
                if self._start_thread(th, etrn=True):
                    started += 1
        return started

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
                if n:
                    self._age_sub(th, v.msg._t, n)
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
            else:
                g.clause = clause  # a group with only idle TAs gets the new values too
            self._maybe_delete_group(g)
        for th in self._threads.values():
            if th.thrkids == 0 and th.agenda_seq == 0:
                self._schedule(th)

    def _on_shutdown(self, ev: ShutdownRequested) -> None:
        self._shutdown = True
        for p in list(self._procs.values()):
            self._retire(p, SHUTDOWN_KILL_AFTER)
        self._agenda = Agenda()
