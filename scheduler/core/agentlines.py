"""What transport agents say and do (SCHED-REF 4.5, 4.6): their output lines and
diagnostics (``ok``, ``error``, ``deferred``, ``retryat``, ``deferall``, ``#resync``), and
their lifecycle (started, failed to start, exited, retired)."""

from __future__ import annotations

import logging
from collections import deque

from scheduler.core.commands import AppendDiagnostic, ReloadMessage, RetireAgent
from scheduler.core.events import (
    AgentExited,
    AgentLine,
    AgentOutput,
    AgentStarted,
    AgentStartFailed,
)
from scheduler.core.feeding import Feeding
from scheduler.core.model import (
    ATT_MASK,
    ATT_SHIFT,
    DEFAULT_NOTIFY,
    ERROR,
    FINISH,
    M_REQUEUE,
    STUFF,
    Proc,
    Vertex,
)
from scheduler.core.state import (
    M_DROP,
    SENT_RCPTS,
    TA_ACTIVE,
    TA_IDLE,
    TA_PROCS,
    V_KILLED,
)
from scheduler.core.taproto import (
    FINAL_STATUSES,
    Garbage,
    Hungry,
    Report,
    Resync,
    parse_line,
    parse_retryat,
)
from spool.controlfile import format_diagnostic
from spool.ids import message_number

__all__ = ["AgentLines"]

log = logging.getLogger(__name__)


class AgentLines(Feeding):
    """TA output lines, diagnostics and process lifecycle."""

    stats_enabled: bool = True
    """Emit a :class:`~scheduler.core.commands.StatLog` per final report; a runner whose
    ``scheduler.stats`` logger is off sets it False (the line is not built at all)."""

    def _on_line(self, ev: AgentLine) -> None:
        p = self._procs.get(ev.proc)
        if p is not None:
            self._line(p, ev.line)

    def _on_output(self, ev: AgentOutput) -> None:
        """Every line of one read, in order: one event (and one list of commands) per
        read, so a TA answering a batch of jobs costs one pass, not one per line."""
        proc = ev.proc
        procs = self._procs
        for line in ev.lines:
            p = procs.get(proc)
            if p is None:
                return
            if line == "#hungry":
                self._on_hungry(p)
            else:
                self._line(p, line)

    def _line(self, p: Proc, line: str) -> None:
        if line == "#hungry":
            self._on_hungry(p)
            return
        parsed = parse_line(line)
        if type(parsed) is Report:
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

    def _on_report(self, p: Proc, rep: Report) -> None:
        number, off, notary, status, message = rep
        msg = self._messages.get(number)
        if msg is None:
            log.warning("cannot find control file for %d!", number)
            return
        for v in msg.vertices:
            if v.thread is not None and off in v.offsets:
                break
        else:
            log.warning("unknown address offset %d in control file %d!", off, number)
            return
        raw = v._offs  # the offsets alone (an int: one recipient), or with extras
        idx = 0 if type(raw) is int else v.offsets.index(off)
        th = v.thread
        assert th is not None
        vs = v._vs
        if vs & V_KILLED or msg._s & (M_REQUEUE | M_DROP):
            if status in FINAL_STATUSES:
                self._count(SENT_RCPTS)
            self._remove_rcpt(v, idx)
            return
        if (vs >> ATT_SHIFT) & ATT_MASK < ATT_MASK:  # attempts += 1, read once
            v._vs = vs + (1 << ATT_SHIFT)
            th.touch()  # a SHOW THREAD row changed (the setter would say so)
        else:
            v.attempts += 1  # out of range: the setter says so
        th.attempts += 1
        if notary or type(raw) is tuple:  # nothing to store when both are empty
            v.notary = notary or None
        if status in FINAL_STATUSES:
            self._final(v, idx, status, rep)
        elif status in ("deferred", "deferback"):
            if message:
                v.message = message
            self._deferred(v, idx)
        elif status == "retryat":
            when, text = parse_retryat(message, self._now)
            if text:
                v.message = text
            if when is None:  # T2 fix: no argument = deferred
                self._deferred(v, idx)
                return
            th.retry_floor = max(th.retry_floor, when)
            self._to_finish(p)
        elif status == "deferall":
            self._deferall(p, v, message)
        else:
            log.warning("Unknown diagnostic type ignored: %s", status)

    def _final(self, v: Vertex, idx: int, status: str, rep: Report) -> None:
        msg = v.msg
        th = v.thread
        assert th is not None
        if type(v._offs) is tuple:  # per-recipient DSN data may differ
            notify, hdr, dsn = v.rcpt_extra(idx)
        else:
            notify, hdr, dsn = DEFAULT_NOTIFY, msg.hdr, -1
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
        if self.stats_enabled:
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
