"""``WATCH [WHERE <filter>]``: stream delivery events until the client sends a line.

An extension command (right ``WATCH`` in scheduler.auth). The reply is a multi-line body
in the usual form, ``+OK until LF.LF``, one TAB-separated line per event, ``.``; the body
stays open, lines are written as events happen, and it ends (``.``) when the client sends
any line, after which the session goes on. An event line is::

    <time>\t<kind>\t<channel>\t<host>\t<spool-id>\t<offset>\t<detail>

``kind`` is ``delivered``, ``deferred``, ``bounced``, ``expired``, ``agent-started``,
``agent-exited`` or ``agent-failed``; ``detail`` is the agent's diagnostic (TABs and line
ends made spaces). When the watcher's buffer (1,000 events) overflowed since the last
write, ``<time>\tlost\t\t\t\t\t<N> events lost`` says so: a slow watcher loses events,
never slows the scheduler.

The filter is the operator-control filter language (:mod:`spool.filters`, as
``SHOW MSGS WHERE``: the same syntax and the same error texts) over the keys an event
has: ``channel``, ``host``, ``kind``, ``id`` (the spool-id) and ``diag`` (the detail),
with ``=``/``!=`` (case-insensitive globs) and ``~``/``!~`` (substrings); all terms must
match. ``WHERE channel=smtp host=*.example kind=delivered`` reads as it always did.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final, Protocol

from mailq.protocol.lines import BODY_END, BODY_START, stuff_lines
from spool.filters import FilterError, parse_filter

__all__ = [
    "EventSource",
    "WatchEvent",
    "WatchRequest",
    "parse_where",
    "stream",
]

FIELDS: Final = frozenset({"channel", "host", "kind", "id", "diag"})
MAX_STOP_LINE: Final = 16384


class WatchEvent(Protocol):
    @property
    def kind(self) -> str: ...
    @property
    def channel(self) -> str: ...
    @property
    def host(self) -> str: ...
    @property
    def spoolid(self) -> str: ...
    @property
    def detail(self) -> str: ...
    def line(self) -> str: ...


class Subscription(Protocol):
    @property
    def wake(self) -> asyncio.Event: ...
    def take(self) -> tuple[Sequence[WatchEvent], int]: ...


class EventSource(Protocol):
    """The daemon's event hub (``scheduler.daemon.deliveries.EventHub``)."""

    def subscribe(self, accept: Callable[[WatchEvent], bool]) -> Subscription: ...
    def unsubscribe(self, sub: Subscription) -> None: ...


Filter = Callable[[WatchEvent], bool]


def parse_where(text: str) -> Filter:
    """``""`` or ``WHERE <filter>`` (``WHERE channel=smtp host=*.example``); raises
    ValueError (:class:`spool.filters.FilterError` for a bad term)."""
    words = text.strip().split(None, 1)
    if not words:
        return lambda event: True
    if words[0].upper() != "WHERE" or len(words) == 1:
        raise ValueError("expected WHERE <filter> (like channel=smtp host=*.example)")
    flt = parse_filter(words[1], extra=frozenset({"kind"}))
    for i, t in enumerate(flt.terms, 1):
        if t.key not in FIELDS:
            raise FilterError(
                i,
                f"{t.key}{t.op}{t.value}",
                f"WATCH filters take {', '.join(sorted(FIELDS))}",
            )
    terms = flt.terms

    def accept(event: WatchEvent) -> bool:
        return all(t.text_matches(_field(event, t.key)) for t in terms)

    return accept


def _field(event: WatchEvent, key: str) -> str:
    if key == "id":
        return event.spoolid
    if key == "diag":
        return event.detail
    return str(getattr(event, key))


@dataclass(frozen=True, slots=True)
class WatchRequest:
    """What the service answers to a valid ``WATCH``: the shell then :func:`stream`\\s."""

    source: EventSource
    accept: Filter


def _lost_line(n: int) -> str:
    return f"{int(time.time())}\tlost\t\t\t\t\t{n} events lost"


async def stream(
    request: WatchRequest,
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    closing: asyncio.Event | None = None,
) -> bool:
    """Write the body until the client sends a line or ``closing`` is set (the server
    shuts down); False if the client went away."""
    sub = request.source.subscribe(request.accept)
    stop = asyncio.ensure_future(reader.readuntil(b"\n"))
    closed = asyncio.ensure_future((closing or asyncio.Event()).wait())
    alive = True
    try:
        writer.write(BODY_START)
        await writer.drain()
        while True:
            woken = asyncio.ensure_future(sub.wake.wait())
            await asyncio.wait(
                {stop, woken, closed}, return_when=asyncio.FIRST_COMPLETED
            )
            woken.cancel()
            events, lost = sub.take()
            lines = [e.line() for e in events]
            if lost:
                lines.append(_lost_line(lost))
            if lines:
                writer.write("".join(stuff_lines(lines)).encode("utf-8", "replace"))
                await (
                    writer.drain()
                )  # a slow reader waits here; its buffer fills, not ours
            if stop.done():
                alive = stop.exception() is None
                break
            if closed.done():
                break
    finally:
        request.source.unsubscribe(sub)
        closed.cancel()
        if not stop.done():
            stop.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await stop
    if alive:
        writer.write(BODY_END)
        await writer.drain()
    return alive
