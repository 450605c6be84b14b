"""The scheduler's in-memory model (SCHED-REF §2): messages, vertices, threads, groups, TAs.

The objects satisfy :mod:`mailq.view`'s Protocols directly, so the MAILQ v2 reports walk live
state. Memory matters (one vertex per message x destination, a million recipients): every
class is slotted, a vertex keeps its recipient offsets in an ``array('i')`` and per-recipient
DSN data only when it differs from the message default, and no ControlFile is kept.

Counts that reports need are maintained by :mod:`scheduler.core` as events happen.
"""

from __future__ import annotations

from array import array
from collections import deque
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .config import Clause

__all__ = [
    "DEFAULT_NOTIFY",
    "FINISH",
    "IDLE",
    "LARVA",
    "M_PATHNUM",
    "STATE_NAMES",
    "STUFF",
    "V_EXPIRING",
    "V_FED",
    "V_UNFED",
    "Group",
    "Message",
    "Proc",
    "RcptExtra",
    "Thread",
    "Vertex",
]

LARVA, STUFF, FINISH, IDLE, ERROR = range(5)
STATE_NAMES = ("LARVA", "STUFF", "FINISH", "IDLE", "ERROR")

# Vertex.state bits
V_UNFED = 1  # waiting to be fed in the current run
V_FED = 2  # fed to a TA, job not acknowledged yet (counts in Message.held)
V_EXPIRING = 4  # expired while a TA held it: expire the rest when the job ends

# Message.flags bits
M_DIAG = 1  # has unreported diagnostics ("d " lines): DSN pass on completion
M_KILLED = 2  # KILL MSG: drop recipients as TAs give them back
M_REQUEUE = 4  # REQUEUE: reload once no TA holds it
M_DONE = 8  # completed or dropped from memory
M_PATHNUM = 32  # relpath = the stored prefix + str(number) (16 is the core's M_DROP)

DEFAULT_NOTIFY: frozenset[str] = frozenset({"FAILURE"})

RcptExtra = tuple[frozenset[str], int, int]
"""Per-recipient (notify, header offset, DSN-line offset), kept only when non-default."""


_NS = 1_000_000_000
_prefixes: dict[str, str] = {}


def _intern_prefix(prefix: str) -> str:
    """One shared string per hash directory (``Y/F/``): a million messages, a few dirs."""
    got = _prefixes.get(prefix)
    if got is None:
        got = (
            prefix if len(_prefixes) >= 65536 else _prefixes.setdefault(prefix, prefix)
        )
    return got


class Message:
    """One loaded control file.

    Kept small (hundreds of thousands of them): the relative path is stored as a shared
    hash-directory prefix when the file name is the decimal ``number`` (``M_PATHNUM``),
    ``mtime`` and ``mtime_ns`` (the sub-second part) share one int, and a message with one
    vertex holds it directly instead of in a tuple.
    """

    __slots__ = (
        "_path",
        "_t",
        "_v",
        "cdelta",
        "flags",
        "hdr",
        "held",
        "live",
        "number",
        "sender",
    )

    def __init__(
        self,
        number: int,
        relpath: str,
        sender: str,
        mtime: int,
        mtime_ns: int,
        cdelta: int,
        hdr: int,
    ) -> None:
        if not 0 <= mtime_ns < _NS:
            raise ValueError(f"mtime_ns is the sub-second part, not {mtime_ns}")
        self.number = number
        self.flags = 0
        head, sep, name = relpath.rpartition("/")
        if name == str(number):
            self._path = _intern_prefix(head + sep)
            self.flags = M_PATHNUM
        else:
            self._path = relpath
        self.sender = sender
        self._t = mtime * _NS + mtime_ns
        self.cdelta = cdelta  # control-file ctime - message mtime (statistics log dt1)
        self.hdr = hdr  # header offset shared by default by every recipient
        self._v: Vertex | tuple[Vertex, ...] = ()
        self.live = 0  # vertices still holding recipients
        self.held = 0  # vertices fed to a TA and not yet acknowledged

    @property
    def relpath(self) -> str:
        """Relative to ``transport/`` with the hash prefix (``Y/F/100001``)."""
        if self.flags & M_PATHNUM:
            return self._path + str(self.number)
        return self._path

    @property
    def mid(self) -> str:
        if self.flags & M_PATHNUM:
            return str(self.number)
        return self._path.rpartition("/")[2]

    @property
    def mtime(self) -> int:
        """The message file's mtime (seconds)."""
        return self._t // _NS

    @property
    def mtime_ns(self) -> int:
        """The sub-second part of the message file's mtime, in nanoseconds."""
        return self._t % _NS

    @property
    def vertices(self) -> tuple[Vertex, ...]:
        v = self._v
        return (v,) if type(v) is Vertex else v  # type: ignore[return-value]

    @vertices.setter
    def vertices(self, vertices: tuple[Vertex, ...]) -> None:
        self._v = vertices[0] if len(vertices) == 1 else vertices


_Extras = tuple[tuple[RcptExtra, ...] | None, str | None, str | None]


class Vertex:
    """One message x (channel, host): a ``SHOW THREAD`` row group (``VertexView``).

    ``offsets`` of a single-recipient vertex are kept as one int (shown as a 1-tuple);
    the rarely set per-recipient ``extra`` and last TA diagnostic (``message``,
    ``notary``) share one slot, None in the common case.
    """

    __slots__ = (
        "_offs",
        "_x",
        "attempts",
        "lastfeed",
        "msg",
        "state",
        "thread",
        "waiting_for",
    )

    def __init__(
        self,
        msg: Message,
        offsets: array[int] | int,
        extra: tuple[RcptExtra, ...] | None,
    ) -> None:
        self.msg = msg
        self.thread: Thread | None = None
        # index order: descending quad (S49 keep)
        self._offs = offsets
        # (extra, message, notary) once any is set; None in the common case
        self._x: _Extras | None = None if extra is None else (extra, None, None)
        self.attempts = 0
        self.lastfeed = 0
        self.waiting_for = 0
        self.state = 0

    @property
    def offsets(self) -> Sequence[int]:
        o = self._offs
        return (o,) if type(o) is int else o  # type: ignore[return-value]

    def clear_offsets(self) -> None:
        self._offs = array("i")
        self.extra = None

    def _set(self, i: int, value: object) -> None:
        x: list[object] = [None, None, None] if self._x is None else list(self._x)
        x[i] = value
        self._x = None if x == [None, None, None] else tuple(x)  # type: ignore[assignment]

    @property
    def extra(self) -> tuple[RcptExtra, ...] | None:
        """Per-recipient data aligned with offsets, or None when all default."""
        x = self._x
        return None if x is None else x[0]

    @extra.setter
    def extra(self, extra: tuple[RcptExtra, ...] | None) -> None:
        if extra is not None or self._x is not None:
            self._set(0, extra)

    @property
    def message(self) -> str | None:
        """Last TA diagnostic text (SHOW THREAD field 10)."""
        x = self._x
        return None if x is None else x[1]

    @message.setter
    def message(self, text: str | None) -> None:
        if text is not None or self._x is not None:
            self._set(1, text)

    @property
    def notary(self) -> str | None:
        x = self._x
        return None if x is None else x[2]

    @notary.setter
    def notary(self, text: str | None) -> None:
        if text is not None or self._x is not None:
            self._set(2, text)

    @property
    def path(self) -> str:
        return self.msg.relpath

    @property
    def sender(self) -> str:
        return self.msg.sender

    @property
    def expiry(self) -> int:
        th = self.thread
        if th is None:
            return 0
        e = th.group.clause.expiry
        return self.msg.mtime + e if e > 0 else 0

    @property
    def expiry2(self) -> int:
        th = self.thread
        if th is None:
            return 0
        c = th.group.clause
        if c.expiry <= 0:
            return 0
        return self.msg.mtime + c.expiry + (c.expiry2 if c.expiry2 > 0 else 86400)

    def rcpt_extra(self, index: int) -> RcptExtra:
        if self.extra is None:
            return DEFAULT_NOTIFY, self.msg.hdr, -1
        return self.extra[index]

    def drop_index(self, index: int) -> None:
        o = self._offs
        if type(o) is int:
            if index not in (0, -1):
                raise IndexError(index)
            self._offs = array("i")
        else:
            del o[index]  # type: ignore[union-attr]
        if self.extra is not None:
            self.extra = self.extra[:index] + self.extra[index + 1 :]


class Proc:
    """One TA process (``ProcView``)."""

    __slots__ = (
        "channel",
        "feedtime",
        "group",
        "host",
        "hungertime",
        "jobs",
        "pid",
        "proc",
        "retiring",
        "state",
        "thread",
        "virtual",
    )

    def __init__(
        self, proc: int, group: Group, channel: str, host: str, now: int
    ) -> None:
        self.proc = proc
        self.pid = 0
        self.group = group
        self.thread: Thread | None = None
        self.state = LARVA
        self.jobs: deque[Vertex] = deque()
        # LARVA's "virtual" outstanding job (answered by the first #hungry)
        self.virtual = 1
        self.hungertime = now
        self.feedtime = 0
        self.channel = channel
        self.host = host
        self.retiring = False

    @property
    def overfed(self) -> int:
        return len(self.jobs) + self.virtual

    @property
    def state_name(self) -> str:
        return STATE_NAMES[self.state]


class Thread:
    """One (clause, channel, host) (``ThreadView``)."""

    __slots__ = (
        "_oldest",
        "_oldest_dirty",
        "agenda_seq",
        "alive",
        "attempts",
        "chain_seq",
        "channel",
        "dead",
        "feedptr",
        "group",
        "host",
        "jobs",
        "pending",
        "proclist",
        "rcpts",
        "retry_floor",
        "retryindex",
        "thrkids",
        "unfed",
        "vlist",
        "wakeup",
    )

    def __init__(self, group: Group, channel: str, host: str) -> None:
        self.group = group
        self.channel = channel
        self.host = host
        self.jobs = 0
        self.rcpts = 0
        self.attempts = 0
        self.wakeup = 0
        self.retryindex = 0
        self.retry_floor = 0
        self.pending = ""
        self.thrkids = 0
        self.unfed = 0
        # feed order; removed vertices linger until compacted
        self.vlist: list[Vertex] = []
        self.dead = 0
        self.feedptr = 0
        self.proclist: list[Proc] = []
        self._oldest: int | None = None
        self._oldest_dirty = False
        self.agenda_seq = 0
        self.chain_seq = 0
        self.alive = True

    @property
    def withhost(self) -> int:
        return 2 if self.group.clause.withhost else 0

    @property
    def oldest_mtime(self) -> int | None:
        if self._oldest_dirty:
            self._oldest_dirty = False
            self._oldest = min(
                (v.msg.mtime for v in self.vlist if v.thread is self), default=None
            )
        return self._oldest

    def note_added(self, mtime: int) -> None:
        if not self._oldest_dirty and (self._oldest is None or mtime < self._oldest):
            self._oldest = mtime

    def note_removed(self, mtime: int) -> None:
        if self.jobs == 0:
            self._oldest = None
            self._oldest_dirty = False
        elif mtime == self._oldest:
            self._oldest_dirty = True

    def procs(self) -> Sequence[Proc]:
        return self.proclist

    def vertices(self) -> Iterator[Vertex]:
        for v in self.vlist:
            if v.thread is self:
                yield v

    def first_vertex(self) -> Vertex | None:
        for v in self.vlist:
            if v.thread is self:
                return v
        return None

    def compact(self) -> None:
        """Drop removed vertices from ``vlist``, keeping the feed pointer's place."""
        before = 0
        kept: list[Vertex] = []
        for i, v in enumerate(self.vlist):
            if v.thread is self:
                kept.append(v)
            elif i < self.feedptr:
                before += 1
        self.feedptr -= before
        self.vlist = kept
        self.dead = 0


class Group:
    """A thread group ("ring"): what one TA may serve in turn (``GroupView``)."""

    __slots__ = (
        "channel",
        "clause",
        "host",
        "idle",
        "key",
        "pickup",
        "proc_count",
        "ring",
    )

    def __init__(
        self, clause: Clause, channel: str, host: str, key: tuple[str, ...]
    ) -> None:
        self.clause = clause
        self.channel = channel
        self.host = host  # only for withhost groups
        self.key = key
        self.ring: list[Thread] = []
        self.pickup = 0
        self.proc_count = 0
        self.idle: list[Proc] = []  # most recently idled first

    @property
    def clause_channel(self) -> str:
        return self.clause.channel_pattern

    @property
    def clause_host(self) -> str:
        return self.clause.host_pattern

    @property
    def withhost(self) -> int:
        return 2 if self.clause.withhost else 0

    @property
    def thread_count(self) -> int:
        return len(self.ring)

    @property
    def idle_count(self) -> int:
        return len(self.idle)

    @property
    def idle_list_length(self) -> int:
        return len(self.idle)

    @property
    def maxring(self) -> int:
        return self.clause.maxring

    @property
    def overfeed(self) -> int:
        return self.clause.overfeed

    @property
    def maxthr(self) -> int:
        return self.clause.maxthr

    def threads(self) -> Sequence[Thread]:
        ring = self.ring
        p = self.pickup
        if not ring:
            return ring
        p %= len(ring)
        return ring[p:] + ring[:p] if p else ring

    def remove_thread(self, thread: Thread) -> None:
        i = self.ring.index(thread)
        del self.ring[i]
        if i < self.pickup:
            self.pickup -= 1
        if self.ring:
            self.pickup %= len(self.ring)
        else:
            self.pickup = 0

    def advance_pickup(self, thread: Thread) -> None:
        """Point the pickup pointer just past ``thread`` (a TA left it)."""
        try:
            i = self.ring.index(thread)
        except ValueError:
            return
        self.pickup = (i + 1) % len(self.ring)
