"""Delivery events, counted and published: what the runner's events and commands mean.

The runner hands every core event it dispatches (before the core sees it) and every
command it executes to a :class:`DeliveryTap` when one is installed (``Runner.tap``). The
tap turns them into :class:`Delivery` records (a TA's report: delivered, deferred with
its diagnostic, bounced; an expiry; an agent started or exited), counts them by channel
for ``/metrics`` and publishes them to the subscribers of its :class:`EventHub` (the
MAILQ v2 ``WATCH`` command). Publishing never blocks: each subscriber has a bounded
buffer; what does not fit is counted as lost and reported to it later.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Final, Protocol

from scheduler.core.commands import Command, StatLog
from scheduler.core.events import (
    AgentExited,
    AgentLine,
    AgentOutput,
    AgentStarted,
    AgentStartFailed,
    Event,
)
from scheduler.core.model import Message, Proc
from scheduler.core.taproto import Report, parse_line
from spool.ids import spool_id

__all__ = ["Delivery", "DeliveryTap", "EventHub", "Subscriber"]

KINDS: Final = (
    "delivered",
    "deferred",
    "bounced",
    "expired",
    "agent-started",
    "agent-exited",
    "agent-failed",
    "held",
    "released",
)
_OUTCOME: Final = {
    "ok": "delivered",
    "ok2": "delivered",
    "ok3": "delivered",
    "error": "bounced",
    "error2": "bounced",
    "deferred": "deferred",
    "deferback": "deferred",
    "retryat": "deferred",
    "deferall": "deferred",
}
BUFFER: Final = 1000


@dataclass(frozen=True, slots=True)
class Delivery:
    """One event: ``kind`` is one of :data:`KINDS`."""

    time: float
    kind: str
    channel: str
    host: str
    spoolid: str = ""
    offset: int = -1
    detail: str = ""

    def line(self) -> str:
        """``time TAB kind TAB channel TAB host TAB spoolid TAB offset TAB detail``."""
        detail = self.detail.replace("\t", " ").replace("\r", " ").replace("\n", " ")
        offset = "" if self.offset < 0 else str(self.offset)
        return (
            f"{int(self.time)}\t{self.kind}\t{self.channel}\t{self.host}\t"
            f"{self.spoolid}\t{offset}\t{detail}"
        )


class Subscriber:
    """A bounded queue of events for one watcher; ``lost`` counts what did not fit."""

    def __init__(self, accept: Callable[[Delivery], bool], limit: int = BUFFER) -> None:
        self.accept = accept
        self.limit = limit
        self.queue: collections.deque[Delivery] = collections.deque()
        self.lost = 0
        self.wake = asyncio.Event()

    def offer(self, event: Delivery) -> None:
        if not self.accept(event):
            return
        if len(self.queue) >= self.limit:
            self.lost += 1
        else:
            self.queue.append(event)
        self.wake.set()

    def take(self) -> tuple[list[Delivery], int]:
        """Everything buffered and the number lost since the last take."""
        events, lost = list(self.queue), self.lost
        self.queue.clear()
        self.lost = 0
        self.wake.clear()
        return events, lost


class EventHub:
    """Publish to every subscriber (never blocks, never raises to the publisher)."""

    def __init__(self) -> None:
        self._subs: set[Subscriber] = set()

    def subscribe(
        self, accept: Callable[[Delivery], bool], limit: int = BUFFER
    ) -> Subscriber:
        sub = Subscriber(accept, limit)
        self._subs.add(sub)
        return sub

    def unsubscribe(self, sub: object) -> None:
        if isinstance(sub, Subscriber):
            self._subs.discard(sub)

    @property
    def subscribers(self) -> int:
        return len(self._subs)

    def publish(self, event: Delivery) -> None:
        for sub in self._subs:
            sub.offer(event)


class CoreLookup(Protocol):
    def proc(self, proc: int) -> Proc | None: ...
    def message(self, number: int) -> Message | None: ...


def _where(p: Proc) -> tuple[str, str]:
    th = p.thread
    return (th.channel, th.host) if th is not None else (p.channel, p.host)


class DeliveryTap:
    """Counts by channel (``counts[(kind, channel)]``) and publishes to ``hub``."""

    def __init__(
        self, core: CoreLookup, clock: Callable[[], float], hub: EventHub | None = None
    ) -> None:
        self.core = core
        self.clock = clock
        self.hub = hub if hub is not None else EventHub()
        self.counts: dict[tuple[str, str], int] = {}

    def _count(self, kind: str, channel: str) -> None:
        key = (kind, channel)
        self.counts[key] = self.counts.get(key, 0) + 1

    def _emit(self, event: Delivery) -> None:
        self._count(event.kind, event.channel)
        self.hub.publish(event)

    def event(self, ev: Event) -> None:
        """Called with each event before the core handles it."""
        if type(ev) is AgentOutput:
            self._lines(ev.proc, ev.lines)
        elif isinstance(ev, AgentLine):
            self._line(ev.proc, ev.line)
        elif isinstance(ev, AgentStarted | AgentExited | AgentStartFailed):
            p = self.core.proc(ev.proc)
            if p is None:
                return
            channel, host = _where(p)
            if isinstance(ev, AgentStarted):
                kind, detail = "agent-started", f"pid {ev.pid}"
            elif isinstance(ev, AgentStartFailed):
                kind, detail = "agent-failed", f"cannot start: {ev.reason}"
            else:
                kind, detail = "agent-exited", f"pid {p.pid} status {ev.returncode}"
                if ev.returncode and not p.retiring:  # not asked to stop, yet failed
                    self._count("agent-failed", channel)
            self._emit(Delivery(self.clock(), kind, channel, host, detail=detail))

    def _lines(self, proc: int, lines: Sequence[str]) -> None:
        """One read of a TA: with no subscriber, only counted (the proc looked up once)."""
        if self.hub.subscribers:
            for line in lines:
                self._line(proc, line)
            return
        channel = None
        counts = self.counts
        for line in lines:
            if not line or line[0] == "#":
                continue
            _, tab, rest = line.partition("\t")
            _, tab2, tail = rest.partition("\t")
            kind = _OUTCOME.get(tail.partition(" ")[0]) if tab and tab2 else None
            if kind is None:
                continue
            if channel is None:
                p = self.core.proc(proc)
                if p is None:
                    return
                channel = _where(p)[0]
            key = (kind, channel)
            counts[key] = counts.get(key, 0) + 1

    def _line(self, proc: int, line: str) -> None:
        if not line or line[0] == "#":
            return
        # ``<id>/<offset> TAB <notary> TAB <status>[ <message>]``: the status alone first
        _, tab, rest = line.partition("\t")
        _, tab2, tail = rest.partition("\t")
        kind = _OUTCOME.get(tail.partition(" ")[0]) if tab and tab2 else None
        p = self.core.proc(proc) if kind is not None else None
        if kind is None or p is None:
            return
        channel, host = _where(p)
        if not self.hub.subscribers:  # nobody watches: count, build nothing more
            self._count(kind, channel)
            return
        rep = parse_line(line)
        msg = self.core.message(rep.number) if isinstance(rep, Report) else None
        if not isinstance(rep, Report) or msg is None:
            return
        sid = spool_id(msg.number, msg.mtime, msg.mtime_ns)
        detail = rep.message if kind != "delivered" else ""
        if rep.notary and kind != "delivered":
            detail = f"{rep.notary.replace(chr(1), ' ')} {detail}".strip()
        self._emit(Delivery(self.clock(), kind, channel, host, sid, rep.offset, detail))

    @property
    def watched(self) -> bool:
        """Whether anybody subscribes (events nobody reads are not built)."""
        return self.hub.subscribers > 0

    def hold_changed(
        self, kind: str, sid: str, where: Iterable[tuple[object, str, str]], detail: str
    ) -> None:
        """``held`` or ``released`` (operator control): one event per destination of
        the message, from ``(vertex, channel, host)`` triples."""
        seen: set[tuple[str, str]] = set()
        for _v, channel, host in where:
            if (channel, host) not in seen:
                seen.add((channel, host))
                self._emit(
                    Delivery(self.clock(), kind, channel, host, sid, detail=detail)
                )

    def command(self, c: Command) -> None:
        """Called with each command the runner executes (expiries come as StatLog)."""
        if not isinstance(c, StatLog):
            return
        parts = c.line.split(" ", 4)
        if len(parts) == 5 and parts[3] == "expire":
            channel, _, host = parts[4].partition("/")
            self._emit(Delivery(self.clock(), "expired", channel, host, parts[0]))
