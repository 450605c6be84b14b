"""Inputs of the scheduler's decision core (``Scheduler.handle(event, now)``).

The shell (runner) turns what happens in the world into these: a control file was read and
parsed, a transport agent (TA) printed a line or exited, the clock moved on. The core never
reads a clock, a file or a pipe itself. ``proc`` numbers are assigned by the core in
:class:`scheduler.core.commands.StartAgent` and name one TA process for its whole life.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

from scheduler.config.clauses import SchedulerConfig
from spool.controlfile import ControlFile

__all__ = [
    "AgentExited",
    "AgentLine",
    "AgentOutput",
    "AgentStartFailed",
    "AgentStarted",
    "ConfigChanged",
    "Event",
    "MessageGone",
    "MessageLoaded",
    "MessageReloaded",
    "ShutdownRequested",
    "Tick",
]


class MessageLoaded(NamedTuple):
    """A control file was read and parsed (stale locks already reset on disk).

    ``relpath`` is relative to ``transport/`` with its hash prefix (``Y/F/100001``);
    ``mtime``/``mtime_ns`` are the **message file's** (arrival time, spool-id, ``QA=``,
    expiry); ``ctime`` is the control file's. The core keeps only what it needs of
    ``control`` and drops the rest.

    A named tuple: one is made per loaded file, and a frozen dataclass costs five
    ``object.__setattr__`` calls (1.9 against 0.8 us).
    """

    relpath: str
    control: ControlFile
    mtime: int
    mtime_ns: int
    ctime: float


@dataclass(frozen=True, slots=True)
class MessageReloaded:
    """Answer to :class:`~scheduler.core.commands.ReloadMessage` (``#resync``, REQUEUE)."""

    relpath: str
    control: ControlFile
    mtime: int
    mtime_ns: int


@dataclass(frozen=True, slots=True)
class MessageGone:
    """A reload failed: the file vanished, is locked by a live process, or was quarantined."""

    relpath: str
    reason: str


@dataclass(frozen=True, slots=True)
class AgentStarted:
    proc: int
    pid: int


@dataclass(frozen=True, slots=True)
class AgentStartFailed:
    """The process could not be created (exec failure, fork failure, bad uid ...)."""

    proc: int
    reason: str


@dataclass(frozen=True, slots=True)
class AgentLine:
    """One line the TA wrote on its stdout, without the LF (decoded surrogateescape)."""

    proc: int
    line: str


class AgentOutput(NamedTuple):
    """Every complete line of one read from the TA's stdout, in order (the runner's
    usual event: one per read, not one per line; each line as in :class:`AgentLine`).
    A named tuple, as :class:`MessageLoaded`."""

    proc: int
    lines: Sequence[str]


@dataclass(frozen=True, slots=True)
class AgentExited:
    """EOF on the TA's stdout and the process reaped (negative = killed by signal)."""

    proc: int
    returncode: int


@dataclass(frozen=True, slots=True)
class Tick:
    """Time has passed: run due threads and the periodic sweeps."""


@dataclass(frozen=True, slots=True)
class ConfigChanged:
    """A new scheduler.conf parsed without error (SIGHUP); rebuild groups (SCHED-REF 4.14)."""

    config: SchedulerConfig


@dataclass(frozen=True, slots=True)
class ShutdownRequested:
    """Slow shutdown: start nothing new, retire every TA."""


Event = (
    MessageLoaded
    | MessageReloaded
    | MessageGone
    | AgentStarted
    | AgentStartFailed
    | AgentLine
    | AgentOutput
    | AgentExited
    | Tick
    | ConfigChanged
    | ShutdownRequested
)
