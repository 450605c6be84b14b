"""Outputs of the scheduler's decision core: what the shell (runner) must do.

Commands are executed in the order returned. Spool commands name files by ``relpath``
(relative to ``transport/``, with hash prefix); the runner owns every file operation.

The two the dispatch makes for every recipient (:class:`WriteAgent`,
:class:`CompleteMessage`) are named tuples: immutable, with the same fields, ``repr``
and ``isinstance`` as the frozen dataclasses of the others, but built in a third of the
time (a frozen dataclass's ``__init__`` calls ``object.__setattr__`` once per field)
and their classes in a tenth (less to do at every start).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import NamedTuple

__all__ = [
    "AppendDiagnostic",
    "Command",
    "CompleteMessage",
    "MarkRecipient",
    "ReloadMessage",
    "RetireAgent",
    "RunDsnPass",
    "StartAgent",
    "StatLog",
    "WriteAgent",
]


@dataclass(frozen=True, slots=True)
class StartAgent:
    """Start a TA process: stdin/stdout pipes to us, stderr to our log, cwd ``transport/``.

    The runner answers with ``AgentStarted`` or ``AgentStartFailed``, then ``AgentLine``s
    and finally ``AgentExited``.
    """

    proc: int
    argv: tuple[str, ...]
    env: Mapping[str, str] = field(default_factory=dict)
    uid: int | None = None
    gid: int | None = None
    nice: int = 0
    channel: str = ""
    host: str = ""


class WriteAgent(NamedTuple):
    """Write bytes to the TA's stdin: job lines, ``#idle\\n``."""

    proc: int
    data: bytes


@dataclass(frozen=True, slots=True)
class RetireAgent:
    """Tell the TA to exit: write ``\\n`` and close its stdin (it then exits by itself).

    ``kill_after`` > 0: send SIGTERM after that many seconds, then SIGKILL, if it is
    still running (shutdown).
    """

    proc: int
    kill_after: float = 0.0


@dataclass(frozen=True, slots=True)
class AppendDiagnostic:
    """Append a ``d`` line (already formatted, ending in LF) with fsync."""

    relpath: str
    line: bytes


@dataclass(frozen=True, slots=True)
class MarkRecipient:
    """Set the status byte of the ``r`` line at ``offset`` (``-`` for expired, S20 fix)."""

    relpath: str
    offset: int
    status: str


class CompleteMessage(NamedTuple):
    """No recipient remains: run the DSN pass first when ``dsn``, then unlink both files."""

    relpath: str
    mid: str
    dsn: bool


@dataclass(frozen=True, slots=True)
class RunDsnPass:
    """Interim report sweep: report the file's new ``d`` lines now (SCHED-REF 6.2)."""

    relpath: str


@dataclass(frozen=True, slots=True)
class ReloadMessage:
    """Re-read a control file (``#resync``, REQUEUE); answered by ``MessageReloaded``/``MessageGone``."""

    relpath: str


@dataclass(frozen=True, slots=True)
class StatLog:
    """One statistics-log line (SCHED-REF 3.8): ``<spoolid> <dt1> <dt2> <reason> <ch>/<host>``."""

    line: str


Command = (
    StartAgent
    | WriteAgent
    | RetireAgent
    | AppendDiagnostic
    | MarkRecipient
    | CompleteMessage
    | RunDsnPass
    | ReloadMessage
    | StatLog
)
