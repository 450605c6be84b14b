"""Retries and expiry (SCHED-REF 4.6, 4.7): a deferral moves the thread's wakeup and may
expire the vertex (S20, S21, S23); a TA leaving a thread reschedules it."""

from __future__ import annotations

from scheduler.core import retry
from scheduler.core.commands import AppendDiagnostic, MarkRecipient
from scheduler.core.model import V_EXPIRING, V_FED, Thread, Vertex
from scheduler.core.state import SENT_RCPTS, ModelState
from spool.dsn import expiry_diagnostic

__all__ = ["Expiry"]


class Expiry(ModelState):
    """Deferrals, expiry and thread rescheduling."""

    def _deferred(self, v: Vertex, idx: int) -> None:
        th = v.thread
        assert th is not None
        if self.retry_mode == "zmailer":
            self._zm_reschedule(th, -1, v.attempts)
        else:
            th.wakeup, th.retryindex = self._fixed_deferred(th)
        e = v.expiry
        if e and v.attempts > 0 and e <= th.wakeup:  # S21 keep: against the next wakeup
            self._expire_rcpt(v, idx)
            if v.thread is not None:
                if v.state & V_FED:
                    v.state |= V_EXPIRING  # S20 fix: the rest when the job ends
                else:
                    self._expire_vertex(v)

    def _fixed_deferred(self, th: Thread) -> tuple[int, int]:
        """Retry mode ``fixed``, a per-recipient deferral: the next ``(wakeup,
        retryindex)`` of ``th``. A zero wakeup (a fresh thread, or one an ETRN zeroed)
        lands where ZMailer's does (:func:`retry.zero_deferred`, issue 12)."""
        c = th.group.clause
        if th.wakeup == 0:
            return retry.zero_deferred(
                th.retryindex, self._now, c.interval, c.retries, self._rng
            )
        return retry.fixed_reschedule(
            th.wakeup,
            th.retryindex,
            self._now,
            c.interval,
            c.skew,
            c.retries,
            self._rng,
        )

    def _zm_reschedule(self, th: Thread, factor: int, attempts: int) -> None:
        """ZMailer's ``reschedule()`` of ``th`` (retry mode ``zmailer``): ``factor`` -1
        for a deferral, 0 for a resource-limit hit (:func:`retry.zm_reschedule`)."""
        c = th.group.clause
        th.wakeup, th.retryindex, _ = retry.zm_reschedule(
            th.wakeup,
            th.retryindex,
            self._now,
            c.interval,
            c.skew,
            c.retries,
            factor,
            attempts,
            self._rng,
        )

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

    def _expire_due(self, th: Thread) -> int:
        """Expire the thread's due vertices; returns how many vertices were looked at."""
        now = self._now
        vertices = list(th.vertices())
        # Vertex.expiry and .expiry2 of the thread's vertices, from its clause once:
        # the sweep walks every waiting vertex of the queue (1M: a second of CPU)
        c = th.group.clause
        e = c.expiry
        if e <= 0:
            return len(vertices)  # no expiry: Vertex.expiry is 0
        e2 = e + (c.expiry2 if c.expiry2 > 0 else 86400)
        for v in vertices:
            if v._vs & V_FED or v.thread is None:  # V_FED: Vertex.state's bit
                continue  # fed, or freed meanwhile (its expiry is 0)
            mtime = v.msg.mtime
            if (mtime + e <= now and v.attempts > 0) or mtime + e2 <= now:
                self._expire_vertex(v)
        return len(vertices)

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
            # the last TA left: ZMailer's thread_reschedule(); the expiry check runs
            # whether or not the wakeup moved
            w, ri = retry.thread_advance(
                th.wakeup, th.retryindex, now, c.interval, c.retries, self._rng
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
