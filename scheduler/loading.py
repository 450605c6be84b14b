"""From a parsed control file to vertex specifications (SCHED-REF 2.1, 2.2, 3.4 step 8).

* Only recipients with status ``' '`` are kept.
* Channel and host are lower-cased (and interned: a million recipients share a few
  thousand names).
* Recipients are sorted by their lower-cased quad; consecutive ones with equal channel and
  host form one vertex. Vertices come out in ascending (channel, host) order; inside a
  vertex the members are stored in **descending** quad order (S49 keep).
* A recipient whose host cannot be parsed (``host_ok`` False) is returned separately so that
  the core can bounce it (S33 fix) instead of dropping it silently.

:class:`Loading` is the part of the scheduler core that turns ``MessageLoaded``,
``MessageReloaded`` and ``MessageGone`` into model changes.
"""

from __future__ import annotations

import logging
import sys
from array import array
from dataclasses import dataclass
from typing import TYPE_CHECKING

from spool.controlfile import DEFAULT_NOTIFY as _PARSER_DEFAULT, format_diagnostic
from spool.ids import message_number

from .commands import AppendDiagnostic, MarkRecipient
from .events import MessageGone, MessageLoaded, MessageReloaded
from .model import DEFAULT_NOTIFY, M_DIAG, Message, RcptExtra, Vertex
from .operations import Operations
from .state import (
    M_DROP,
    RECV_MSGS,
    RECV_RCPTS,
    STORED_MSGS,
    STORED_RCPTS,
    STORED_VERTICES,
)

if TYPE_CHECKING:
    from spool.controlfile import ControlFile, Recipient

__all__ = ["Loading", "VertexSpec", "intern_name", "split_recipients"]

log = logging.getLogger(__name__)

BAD_HOST_NOTARY = (
    "\x03\x01failed\x015.1.2\x01x-local; 500 (unparsable destination host)\x01"
)
BAD_HOST_TEXT = "unparsable destination host in the control file"


_names: dict[str, str] = {}


def intern_name(raw: str) -> str:
    """Lower-case and intern a channel or host name (cached)."""
    name = _names.get(raw)
    if name is None:
        name = sys.intern(raw.lower())
        if len(_names) < 1_000_000:
            _names[raw] = name
    return name


@dataclass(slots=True)
class VertexSpec:
    channel: str
    host: str
    offsets: array[int]
    extra: tuple[RcptExtra, ...] | None
    count: int


def _extra_for(rcpts: list[Recipient], hdr: int) -> tuple[RcptExtra, ...] | None:
    for r in rcpts:
        if (
            r.header_offset != hdr
            or r.dsn_offset != -1
            or (r.notify is not _PARSER_DEFAULT and r.notify != DEFAULT_NOTIFY)
        ):
            return tuple((r.notify, r.header_offset, r.dsn_offset) for r in rcpts)
    return None


def _quad_key(r: Recipient) -> str:
    return r.quad.lower()


def split_recipients(
    control: ControlFile,
) -> tuple[list[VertexSpec], list[Recipient], int]:
    """Return ``(vertex specs, recipients with a bad host, default header offset)``."""
    recs = control.recipients
    pending = [r for r in recs if r.status == " " and r.host_ok and r.host]
    bad: list[Recipient] = []
    if len(pending) != len(recs):
        bad = [r for r in recs if r.status == " " and not (r.host_ok and r.host)]
    if not pending:
        return [], bad, -1
    hdr = pending[0].header_offset
    if len(pending) == 1:
        r = pending[0]
        spec = VertexSpec(
            intern_name(r.channel),
            intern_name(r.host),
            array("i", (r.offset,)),
            _extra_for(pending, hdr),
            1,
        )
        return [spec], bad, hdr
    pending.sort(key=_quad_key, reverse=True)
    hi, lo = pending[0], pending[-1]
    prefix = f"{lo.channel} {lo.host} ".lower()
    if (
        hi.channel == lo.channel
        and hi.host == lo.host
        and hi.quad.lower().startswith(prefix)
        and lo.quad.lower().startswith(prefix)
    ):
        # the common case: one destination; everything sorted between hi and lo shares it
        spec = VertexSpec(
            intern_name(lo.channel),
            intern_name(lo.host),
            array("i", [r.offset for r in pending]),
            _extra_for(pending, hdr),
            len(pending),
        )
        return [spec], bad, hdr
    groups: dict[tuple[str, str], list[Recipient]] = {}
    for r in pending:
        key = (intern_name(r.channel), intern_name(r.host))
        lst = groups.get(key)
        if lst is None:
            groups[key] = [r]
        else:
            lst.append(r)
    specs: list[VertexSpec] = []
    for key in sorted(groups):
        members = groups[key]  # already in descending quad order
        specs.append(
            VertexSpec(
                key[0],
                key[1],
                array("i", [r.offset for r in members]),
                _extra_for(members, hdr),
                len(members),
            )
        )
    return specs, bad, hdr


class Loading(Operations):
    """Loading, reloading and dropping messages (SCHED-REF 3.4, 4.11)."""

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
