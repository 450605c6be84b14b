"""The seam between the scheduler and the MAILQ v2 server.

The server's reports are pure functions over these read-only views; the scheduler's
model objects satisfy them directly (plain attributes, no copies), so a report of a
million recipients walks live state without building anything first. The server's
state-changing commands go through :class:`QueueOperations`.

Every time is an integer ``time_t`` (seconds since the epoch); ``0`` means "never" or
"none" exactly as in ZMailer's reports.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Protocol

from spool.counters import CounterBlock

__all__ = [
    "CounterBlock",
    "GroupView",
    "ProcView",
    "QueueOperations",
    "QueueView",
    "ThreadView",
    "VertexView",
]


class ProcView(Protocol):
    """One transport-agent process attached to a thread (MQ2-REF 9.1 detail a)."""

    @property
    def pid(self) -> int: ...
    @property
    def hungertime(self) -> int:
        """When it last said ``#hungry`` (or was started): ``HA=`` is now minus this."""

    @property
    def feedtime(self) -> int:
        """When it was last fed a job; 0 = never (``FA={never}s``)."""

    @property
    def overfed(self) -> int:
        """Jobs fed but not yet acknowledged (``OF=``)."""

    @property
    def state_name(self) -> str:
        """``LARVA``, ``STUFF``, ``FINISH``, ``IDLE`` or ``ERROR``."""


class VertexView(Protocol):
    """One message x (channel, host): the rows of ``SHOW THREAD``."""

    @property
    def path(self) -> str:
        """Spool path relative to ``transport/`` with hash prefix: ``Y/F/100001``."""

    @property
    def sender(self) -> str:
        """Error-return address (final ``s``/``e`` value), bare; empty for bounces."""

    @property
    def offsets(self) -> Sequence[int]:
        """Recipient ``r``-line offsets in index order (index 0 first)."""

    @property
    def expiry(self) -> int: ...
    @property
    def lastfeed(self) -> int: ...
    @property
    def attempts(self) -> int: ...
    @property
    def waiting_for(self) -> int:
        """0 none, 1 ring limit, 2 channel limit, 3 global or thread limit."""

    @property
    def message(self) -> str | None:
        """Last TA diagnostic text (CR-separated lines); None if there is none."""


class ThreadView(Protocol):
    """One thread: (clause, channel, host)."""

    @property
    def channel(self) -> str: ...
    @property
    def host(self) -> str: ...
    @property
    def withhost(self) -> int:
        """0, or 2 when the clause command has a ``$host`` word (printed raw)."""

    @property
    def jobs(self) -> int:
        """``N=``: vertices."""

    @property
    def rcpts(self) -> int:
        """``R=``: recipients."""

    @property
    def attempts(self) -> int:
        """``A=``: diagnostics received for the thread's vertices."""

    @property
    def wakeup(self) -> int: ...
    @property
    def pending(self) -> str:
        """Last reason it could not start (``>MaxChannel`` ...), or ``""``."""

    @property
    def thrkids(self) -> int:
        """TAs attached (``Kids=a/b`` when it differs from ``len(procs)``)."""

    @property
    def unfed(self) -> int:
        """``UF=``: vertices not yet fed in the current run."""

    @property
    def oldest_mtime(self) -> int | None:
        """Message-file mtime of the oldest vertex (``QA=``); None without vertices."""

    def procs(self) -> Sequence[ProcView]:
        """TA processes working on this thread, in attach order."""

    def vertices(self) -> Iterable[VertexView]:
        """The thread's vertices in their current feed order."""


class GroupView(Protocol):
    """A thread group (ring): what one TA process may serve in turn."""

    @property
    def clause_channel(self) -> str:
        """The clause's channel pattern as written (``smtp``)."""

    @property
    def clause_host(self) -> str:
        """The clause's host pattern (``*`` when the selector had no ``/``)."""

    @property
    def withhost(self) -> int: ...
    @property
    def thread_count(self) -> int: ...
    @property
    def proc_count(self) -> int:
        """TA processes of the group, running or idle."""

    @property
    def idle_count(self) -> int: ...
    @property
    def idle_list_length(self) -> int: ...
    @property
    def maxring(self) -> int:
        """Resolved ``maxring`` (``Plim:``)."""

    @property
    def overfeed(self) -> int:
        """``Flim:``."""

    @property
    def maxthr(self) -> int:
        """``Tlim:``."""

    def threads(self) -> Sequence[ThreadView]:
        """The group's threads in ring order (from the pickup pointer)."""


class QueueView(Protocol):
    """Everything the MAILQ v2 reports read."""

    @property
    def start_time(self) -> int:
        """Scheduler start (``Uptime:`` is now minus this)."""

    @property
    def kids(self) -> int:
        """TA processes not yet reaped, running or idle."""

    @property
    def idle(self) -> int:
        """TAs in idle pools."""

    @property
    def msgs(self) -> int:
        """Control files loaded in memory."""

    @property
    def total_threads(self) -> int:
        """Sum of the groups' thread counts (``Thrds:``)."""

    @property
    def total_vertices(self) -> int:
        """Sum of N over all threads (printed as ``Rcpnts:`` in the Kids line)."""

    @property
    def total_recipients(self) -> int:
        """Live recipient total, printed in brackets when it differs from the gauge."""

    @property
    def counters(self) -> CounterBlock: ...

    def groups(self) -> Iterable[GroupView]:
        """Thread groups in ring order (root, newest, ..., second oldest)."""

    def held_threads(self) -> Sequence[ThreadView]:
        """Held mail by (channel, host), as threads (``pending`` ``Held``; their
        vertices' ``message`` says who held it and why): ``SHOW QUEUE THREADS2`` and
        ``SHOW THREAD`` show them, so ``mailq`` lists held mail (issue 16)."""

    def find_held(self, channel: str, host: str) -> ThreadView | None: ...

    def find_thread(self, channel: str, host: str) -> ThreadView | None:
        """First thread on the time chain with exactly this channel and host."""


class QueueOperations(Protocol):
    """The state-changing MAILQ v2 commands, executed on the scheduler's state."""

    def etrn(self, domain: str) -> int:
        """Start every idle thread whose host is ``domain``; return how many started."""

    def kill_msg(self, ident: str) -> bool:
        """Remove a message by spool-id or file id; False if nothing matched."""

    def kill_thread(self, channel: str, host: str) -> int:
        """Remove every message vertex of a thread; return recipients removed."""

    def requeue_msg(self, ident: str) -> bool:
        """Re-read a message's control file from disk; False if nothing matched."""
