"""From a parsed control file to vertex specifications (SCHED-REF 2.1, 2.2, 3.4 step 8).

* Only recipients with status ``' '`` are kept.
* Channel and host are lower-cased (and interned: a million recipients share a few
  thousand names).
* Recipients are sorted by their lower-cased quad; consecutive ones with equal channel and
  host form one vertex. Vertices come out in ascending (channel, host) order; inside a
  vertex the members are stored in **descending** quad order (S49 keep).
* Every pending recipient is queued, whatever its host field looks like (ZMailer does the
  same; a host of ``-`` is the normal thread ``local/-``).

:class:`Loading` is the part of the scheduler core that turns ``MessageLoaded``,
``MessageReloaded`` and ``MessageGone`` into model changes.
"""

from __future__ import annotations

import logging
import sys
from typing import TYPE_CHECKING

from scheduler.core.events import MessageGone, MessageLoaded, MessageReloaded
from scheduler.core.model import M_DIAG, Message, PlainVertex, SoloMessage, Vertex
from scheduler.core.operations import Operations
from scheduler.core.state import (
    M_DROP,
    RECV_MSGS,
    RECV_RCPTS,
    STORED_MSGS,
    STORED_RCPTS,
    STORED_VERTICES,
)
from scheduler.core.vertexspecs import Row, VertexSpec, intern_name, split_recipients
from spool.ids import message_number

if TYPE_CHECKING:
    from spool.controlfile import ControlFile

__all__ = [
    "Loading",
    "Row",
    "VertexSpec",
    "intern_name",
    "split_recipients",
]

log = logging.getLogger(__name__)


class Loading(Operations):
    """Loading, reloading and dropping messages (SCHED-REF 3.4, 4.11)."""

    def _on_loaded(self, ev: MessageLoaded) -> None:
        control = ev.control
        d = self._deltas
        d[RECV_MSGS] = d.get(RECV_MSGS, 0) + 1  # flushed at the next Tick (or read)
        for value in control.etrn:
            words = value.split()
            if words:
                log.info("ETRN: %s", value)
                self._etrn(words[0].lower())
        if control.mid is None:
            return  # an ETRN request file (or a file without an i line): nothing to queue
        for ident in control.obsoletes:
            self._obsolete(ident, control.report_sender, ev.relpath)
        self._load(ev.relpath, control, ev.mtime, ev.mtime_ns, int(ev.ctime))

    def _obsolete(self, ident: str, sender: str, by: str) -> None:
        """An ``x <spool-id>`` line: the message with exactly that spool-id and the same
        sender is dropped silently, as ZMailer's scheduler drops it (its router writes
        the line when it replaces a file). Nothing else matches (not a file name)."""
        ident = ident.strip()
        if not ident.startswith("S"):
            log.info("deletemsg: %s ID not found", ident)
            return
        msg = self._find_message(ident)
        if msg is None or msg.sender != sender:
            log.info("deletemsg: %s ID not found", ident)
            return
        log.info("%s: obsoleted by %s", msg.mid, by)
        for v in msg.vertices:
            if v.thread is not None:
                self._kill_vertex(v)
        self._maybe_complete(msg)

    def _load(
        self, relpath: str, control: ControlFile, mtime: int, mtime_ns: int, ctime: int
    ) -> None:
        name = relpath.rpartition("/")[2]
        number = int(name) if name.isdigit() else message_number(name)
        if number in self._messages:
            log.warning("message %s is already loaded; ignored", relpath)
            return
        specs, _, hdr = split_recipients(control)
        ints = self._ints
        if len(ints) > 65536:
            ints.clear()
        cdelta = ctime - mtime
        hdr = ints.setdefault(hdr, hdr)
        sender = sys.intern(control.report_sender)
        msg: Message
        if len(specs) == 1:  # most messages: the message is its own vertex
            spec = specs[0]
            offs = spec.offsets
            if type(offs) is int:
                offs = ints.setdefault(offs, offs)
            msg = SoloMessage(
                number, relpath, sender, mtime, mtime_ns, cdelta, hdr, offs, spec.extra
            )
        else:
            # cdelta is packed into the message's mtime int: nothing to share
            msg = Message(number, relpath, sender, mtime, mtime_ns, cdelta, hdr)
        if control.diagnostics and any(d.status == " " for d in control.diagnostics):
            msg.flags |= M_DIAG
            self._marked[msg] = self._now + self.config.params.global_report_interval
        self._messages[number] = msg
        if not specs:
            self._count(STORED_MSGS)
            self._maybe_complete(msg)
            return
        d = self._deltas
        d[STORED_MSGS] = d.get(STORED_MSGS, 0) + 1
        if type(msg) is SoloMessage:
            total = specs[0].count
            d[RECV_RCPTS] = d.get(RECV_RCPTS, 0) + total
            d[STORED_RCPTS] = d.get(STORED_RCPTS, 0) + total
            d[STORED_VERTICES] = d.get(STORED_VERTICES, 0) + 1
            self._place(msg, specs[0].channel, specs[0].host, total)
            return
        vertices = []
        total = 0
        for spec in specs:
            offs = spec.offsets
            if type(offs) is int:
                offs = ints.setdefault(offs, offs)
            vertices.append(PlainVertex(msg, offs, spec.extra))
            total += spec.count
        msg.vertices = tuple(vertices)
        msg.live = len(vertices)
        d[RECV_RCPTS] = d.get(RECV_RCPTS, 0) + total
        d[STORED_RCPTS] = d.get(STORED_RCPTS, 0) + total
        d[STORED_VERTICES] = d.get(STORED_VERTICES, 0) + len(vertices)
        for v, spec in zip(vertices, specs, strict=True):
            self._place(v, spec.channel, spec.host, spec.count)

    def _place(self, v: Vertex, channel: str, host: str, count: int) -> None:
        """Link a new vertex into its thread and start the thread if it may start."""
        th = self._link(v, channel, host, count)
        clause = th.group.clause
        if clause.queueonly or (clause.wakeuprestartonly and th.thrkids):
            return
        if self.frozen and not self._shutdown:
            return  # as ZMailer -F: never started, no pend= (only ETRN shows Frozen)
        self._start_thread(th)

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
