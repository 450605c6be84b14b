"""The scheduler's pure decision core (SCHED-REF §2, §4, §5): events in, commands out.

:class:`Scheduler` never reads a clock, a file or a pipe. The runner calls
``handle(event, now)`` and executes the returned commands in order; it asks
``next_wakeup()`` when to send the next :class:`~scheduler.core.events.Tick`. The object is also
the :class:`mailq.server.views.QueueView` the MAILQ v2 reports read, and offers the operations
(ETRN, KILL MSG, KILL THREAD, REQUEUE), each returning its result and the commands to run.

The decisions live in mixins named by their job (:mod:`.state`, :mod:`.expiry`,
:mod:`.feeding`, :mod:`.limits`, :mod:`.agentlines`, :mod:`.sweeps`, :mod:`.operations`,
:mod:`.loading`); this module assembles them and dispatches events.

Behaviour and every deliberate difference from ZMailer are documented in docs/scheduler.md.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cached_property
from typing import TYPE_CHECKING, Any

from scheduler.core.control import Control
from scheduler.core.events import (
    AgentExited,
    AgentLine,
    AgentOutput,
    AgentStarted,
    AgentStartFailed,
    ConfigChanged,
    MessageGone,
    MessageLoaded,
    MessageReloaded,
    ShutdownRequested,
    Tick,
)
from scheduler.core.sweeps import Sweeps

if TYPE_CHECKING:
    from scheduler.core.commands import Command
    from scheduler.core.events import Event

__all__ = ["Scheduler"]


class Scheduler(Control, Sweeps):
    """ZMailer's scheduling decisions over an in-memory model (also a ``QueueView``)."""

    @cached_property
    def _handlers(self) -> dict[type, Callable[[Any], None]]:
        """The handler of each event type (built on first use, then an instance attribute)."""
        return {
            MessageLoaded: self._on_loaded,
            MessageReloaded: self._on_reloaded,
            MessageGone: self._on_gone,
            AgentStarted: self._on_started,
            AgentStartFailed: self._on_start_failed,
            AgentLine: self._on_line,
            AgentOutput: self._on_output,
            AgentExited: self._on_exited,
            Tick: self._on_tick,
            ConfigChanged: self._on_config,
            ShutdownRequested: self._on_shutdown,
        }

    def handle(self, event: Event, now: float) -> list[Command]:
        self._now = int(now)
        out: list[Command] = []
        self._out = out
        self._handlers[type(event)](event)
        self._out = []
        return out

    def next_wakeup(self) -> float | None:
        times: list[float] = []
        t = self._agenda.next_time()
        if t is not None:
            times.append(t)
        if self._procs:
            times.append(self._next_idle_sweep)
        if self._expiry_walk is not None:
            times.append(self._now)  # the expiry sweep goes on at the next tick
        elif self.total_vertices:
            times.append(self._next_expiry_sweep)
        if self._marked:
            times.append(self._next_report_sweep)
        return min(times) if times else None
