"""The scheduler's in-memory model (SCHED-REF §2): messages, vertices, threads, groups, TAs.

The objects satisfy :mod:`mailq.server.views`'s Protocols directly, so the MAILQ v2 reports walk live
state. Memory matters (one vertex per message x destination, a million recipients): every
class is slotted, a vertex keeps its recipient offsets in an ``array('i')`` and per-recipient
DSN data only when it differs from the message default, and no ControlFile is kept.

Counts that reports need are maintained by :mod:`scheduler.core.scheduler` as events happen.
"""

from __future__ import annotations

from array import array
from collections import deque
from collections.abc import Iterator, Sequence
from itertools import count
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from scheduler.config.clauses import Clause

__all__ = [
    "ATT_MASK",
    "ATT_SHIFT",
    "DEFAULT_NOTIFY",
    "FEED_SHIFT",
    "FINISH",
    "HELD_SHIFT",
    "IDLE",
    "LARVA",
    "LIVE_MASK",
    "LIVE_SHIFT",
    "M_PATHNUM",
    "STATE_NAMES",
    "STUFF",
    "T_MASK",
    "V_EXPIRING",
    "V_FED",
    "V_UNFED",
    "WAIT_BITS",
    "Group",
    "Message",
    "PlainVertex",
    "Proc",
    "RcptExtra",
    "SoloMessage",
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
# Message._t: cdelta << _T_SHIFT | mtime * _NS + mtime_ns (mtime < 2**62 ns: year 2116)
_T_SHIFT = 62
_T_MASK = (1 << _T_SHIFT) - 1
T_MASK = _T_MASK  # Message._t & T_MASK: the mtime in ns (the core's hot paths)
# Message._s: flags (6 bits) | live (24 bits) | held (the rest)
_FLAGS_MASK = 63
_LIVE_SHIFT = 6
_LIVE_MASK = (1 << 24) - 1
_HELD_SHIFT = 30
_BELOW_HELD = (1 << _HELD_SHIFT) - 1
# Vertex._vs: state (4 bits) | waiting_for (2 bits) | attempts (24 bits) | lastfeed (rest)
_STATE_MASK = 15
_WAIT_SHIFT = 4
_WAIT_MASK = 3
_ATT_SHIFT = 6
_ATT_MASK = (1 << 24) - 1
_FEED_SHIFT = 30
_BELOW_FEED = (1 << _FEED_SHIFT) - 1
_prefixes: dict[str, str] = {}
# The packed layouts for the core's hot paths (read ``_s``/``_vs`` once, not per field)
LIVE_SHIFT = _LIVE_SHIFT
LIVE_MASK = _LIVE_MASK
HELD_SHIFT = _HELD_SHIFT
ATT_SHIFT = _ATT_SHIFT
ATT_MASK = _ATT_MASK
FEED_SHIFT = _FEED_SHIFT
WAIT_BITS = _WAIT_MASK << _WAIT_SHIFT
_serials = count(1)  # Thread._rev starts at its serial << 40


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
        "_s",
        "_t",
        "_v",
        "hdr",
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
        if mtime < 0:
            raise ValueError(f"mtime must not be negative, not {mtime}")
        self.number = number
        head, sep, name = relpath.rpartition("/")
        if name == str(number):
            self._path = _intern_prefix(head + sep)
            # flags | live << _LIVE_SHIFT | held << _HELD_SHIFT, small (cached) while unfed
            self._s = M_PATHNUM
        else:
            self._path = relpath
            self._s = 0
        self.sender = sender
        # cdelta (control-file ctime - message mtime, statistics log dt1) rides in the
        # spare high bits of the mtime int: cdelta << 62 | mtime * 1e9 + mtime_ns
        self._t = (cdelta << _T_SHIFT) + mtime * _NS + mtime_ns
        self.hdr = hdr  # header offset shared by default by every recipient
        self._v: PlainVertex | tuple[Vertex, ...] = ()

    @property
    def flags(self) -> int:
        """``M_*`` bits."""
        return self._s & _FLAGS_MASK

    @flags.setter
    def flags(self, flags: int) -> None:
        if not 0 <= flags <= _FLAGS_MASK:
            raise ValueError(f"message flags out of range: {flags}")
        self._s = (self._s & ~_FLAGS_MASK) | flags

    @property
    def live(self) -> int:
        """Vertices still holding recipients."""
        return (self._s >> _LIVE_SHIFT) & _LIVE_MASK

    @live.setter
    def live(self, live: int) -> None:
        if not 0 <= live <= _LIVE_MASK:
            raise ValueError(f"live vertex count out of range: {live}")
        s = self._s
        self._s = (
            s
            - (((s >> _LIVE_SHIFT) & _LIVE_MASK) << _LIVE_SHIFT)
            + (live << _LIVE_SHIFT)
        )

    @property
    def held(self) -> int:
        """Vertices fed to a TA and not yet acknowledged."""
        return self._s >> _HELD_SHIFT

    @held.setter
    def held(self, held: int) -> None:
        if held < 0:
            raise ValueError(f"held vertex count out of range: {held}")
        self._s = (self._s & _BELOW_HELD) | (held << _HELD_SHIFT)

    @property
    def cdelta(self) -> int:
        """Control-file ctime - message mtime (statistics log dt1)."""
        return self._t >> _T_SHIFT

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
        return (self._t & _T_MASK) // _NS

    @property
    def mtime_ns(self) -> int:
        """The sub-second part of the message file's mtime, in nanoseconds."""
        return (self._t & _T_MASK) % _NS

    @property
    def vertices(self) -> tuple[Vertex, ...]:
        v = self._v
        return (v,) if type(v) is PlainVertex else v  # type: ignore[return-value]

    @vertices.setter
    def vertices(self, vertices: tuple[Vertex, ...]) -> None:
        first = vertices[0] if len(vertices) == 1 else None
        self._v = first if isinstance(first, PlainVertex) else vertices


if TYPE_CHECKING:
    _Offs = array[int] | int
    _Extras = tuple[_Offs, tuple[RcptExtra, ...] | None, str | None, str | None]


class Vertex:
    """One message x (channel, host): a ``SHOW THREAD`` row group (``VertexView``).

    The behaviour lives here; the storage in the two concrete kinds: a
    :class:`PlainVertex` is one of the vertices of a message with several, and a
    :class:`SoloMessage` is a message with one vertex, both in one object (most
    messages of a big queue: it saves an object per message).

    ``offsets`` of a single-recipient vertex are kept as one int (shown as a 1-tuple);
    the rarely set per-recipient ``extra`` and last TA diagnostic (``message``,
    ``notary``) join the offsets in one tuple ``(offsets, extra, message, notary)`` only
    once one of them is set.
    """

    if TYPE_CHECKING:
        msg: Message
        thread: Thread | None
        _offs: _Offs | _Extras
        # state | waiting_for << 4 | attempts << 6 | lastfeed << 30: small until fed
        _vs: int
    else:
        __slots__ = ()

    def _init_vertex(
        self, offsets: array[int] | int, extra: tuple[RcptExtra, ...] | None
    ) -> None:
        self.thread = None
        # index order: descending quad (S49 keep)
        self._offs = offsets if extra is None else (offsets, extra, None, None)
        self._vs = 0

    @property
    def state(self) -> int:
        """``V_*`` bits."""
        return self._vs & _STATE_MASK

    @state.setter
    def state(self, state: int) -> None:
        if not 0 <= state <= _STATE_MASK:
            raise ValueError(f"vertex state out of range: {state}")
        self._vs = (self._vs & ~_STATE_MASK) | state

    @property
    def waiting_for(self) -> int:
        """The limit a held-back thread waits for (0: none; see ``_limit_hit``)."""
        return (self._vs >> _WAIT_SHIFT) & _WAIT_MASK

    @waiting_for.setter
    def waiting_for(self, wait: int) -> None:
        if not 0 <= wait <= _WAIT_MASK:
            raise ValueError(f"waiting_for out of range: {wait}")
        self._vs = (self._vs & ~(_WAIT_MASK << _WAIT_SHIFT)) | (wait << _WAIT_SHIFT)
        th = self.thread
        if th is not None:
            th._rev += 1

    @property
    def attempts(self) -> int:
        return (self._vs >> _ATT_SHIFT) & _ATT_MASK

    @attempts.setter
    def attempts(self, attempts: int) -> None:
        if not 0 <= attempts <= _ATT_MASK:
            raise ValueError(f"vertex attempts out of range: {attempts}")
        s = self._vs
        self._vs = (
            s
            - (((s >> _ATT_SHIFT) & _ATT_MASK) << _ATT_SHIFT)
            + (attempts << _ATT_SHIFT)
        )
        th = self.thread
        if th is not None:
            th._rev += 1

    @property
    def lastfeed(self) -> int:
        """When the vertex was last fed to a TA (0: never)."""
        return self._vs >> _FEED_SHIFT

    @lastfeed.setter
    def lastfeed(self, when: int) -> None:
        if when < 0:
            raise ValueError(f"lastfeed must not be negative: {when}")
        self._vs = (self._vs & _BELOW_FEED) | (when << _FEED_SHIFT)
        th = self.thread
        if th is not None:
            th._rev += 1

    @property
    def _raw(self) -> _Offs:
        o = self._offs
        return o[0] if type(o) is tuple else o  # type: ignore[return-value]

    @_raw.setter
    def _raw(self, offs: _Offs) -> None:
        o = self._offs
        self._offs = (offs, *o[1:]) if type(o) is tuple else offs
        th = self.thread
        if th is not None:
            th._rev += 1

    @property
    def offsets(self) -> Sequence[int]:
        o = self._offs
        if type(o) is tuple:
            o = o[0]
        return (o,) if type(o) is int else o  # type: ignore[return-value]

    def clear_offsets(self) -> None:
        self._raw = array("i")
        self.extra = None

    def _set(self, i: int, value: object) -> None:
        o = self._offs
        x: list[object] = list(o) if type(o) is tuple else [o, None, None, None]
        x[i] = value
        self._offs = x[0] if x[1:] == [None, None, None] else tuple(x)  # type: ignore[assignment]

    def _get(self, i: int) -> object:
        o = self._offs
        return o[i] if type(o) is tuple else None

    @property
    def extra(self) -> tuple[RcptExtra, ...] | None:
        """Per-recipient data aligned with offsets, or None when all default."""
        return self._get(1)  # type: ignore[return-value]

    @extra.setter
    def extra(self, extra: tuple[RcptExtra, ...] | None) -> None:
        self._set(1, extra)

    @property
    def message(self) -> str | None:
        """Last TA diagnostic text (SHOW THREAD field 10)."""
        return self._get(2)  # type: ignore[return-value]

    @message.setter
    def message(self, text: str | None) -> None:
        self._set(2, text)
        th = self.thread
        if th is not None:
            th._rev += 1

    @property
    def notary(self) -> str | None:
        return self._get(3)  # type: ignore[return-value]

    @notary.setter
    def notary(self, text: str | None) -> None:
        self._set(3, text)

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
        o = self._raw
        if type(o) is int:
            if index not in (0, -1):
                raise IndexError(index)
            self._raw = array("i")
        else:
            del o[index]  # type: ignore[union-attr]
            th = self.thread
            if th is not None:
                th._rev += 1  # in place: the _raw setter did not see it
        extra = self.extra
        if extra is not None:
            self.extra = extra[:index] + extra[index + 1 :]


class PlainVertex(Vertex):
    """One of the vertices of a message that has several."""

    __slots__ = (
        "_offs",
        "_vs",
        "msg",
        "thread",
    )

    def __init__(
        self,
        msg: Message,
        offsets: array[int] | int,
        extra: tuple[RcptExtra, ...] | None,
    ) -> None:
        self.msg = msg
        self._init_vertex(offsets, extra)


class SoloMessage(Message, Vertex):
    """A message with a single vertex: the message is its own vertex (``msg`` is
    itself, ``vertices`` is ``(self,)``)."""

    __slots__ = (
        "_offs",
        "_vs",
        "thread",
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
        offsets: array[int] | int,
        extra: tuple[RcptExtra, ...] | None,
    ) -> None:
        Message.__init__(self, number, relpath, sender, mtime, mtime_ns, cdelta, hdr)
        self._s += 1 << _LIVE_SHIFT  # live = 1
        self._init_vertex(offsets, extra)

    @property
    def msg(self) -> Message:
        return self

    @msg.setter
    def msg(self, msg: Message) -> None:
        if msg is not self:
            raise ValueError("a SoloMessage is its own message")

    @property
    def vertices(self) -> tuple[Vertex, ...]:
        return (self,)

    @vertices.setter
    def vertices(self, vertices: tuple[Vertex, ...]) -> None:
        if vertices != (self,):
            raise ValueError("a SoloMessage is its only vertex")


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


class _ThreadRun:
    """A thread's run-time fields, allocated the first time one leaves its default.

    Most threads of a large queue sit idle between retries: for them these stay unset
    and the thread carries one None slot instead of ten.
    """

    __slots__ = (
        "alive",
        "attempts",
        "dead",
        "feedptr",
        "oldest_dirty",
        "proclist",
        "retry_floor",
        "retryindex",
        "thrkids",
        "unfed",
    )

    def __init__(self) -> None:
        self.alive = True
        self.oldest_dirty = False
        self.proclist: list[Proc] = []
        self.attempts = 0
        self.dead = 0
        self.feedptr = 0
        self.retry_floor = 0
        self.retryindex = 0
        self.thrkids = 0
        self.unfed = 0


def _run(th: Thread) -> _ThreadRun:
    r = th._r
    if r is None:
        r = th._r = _ThreadRun()
    return r


class Thread:
    """One (clause, channel, host) (``ThreadView``).

    The fields a thread needs only while TAs work on it or a limit holds it back live in
    an optional :class:`_ThreadRun` (``_r``), reached through properties. They are
    written out one by one on purpose: a shared descriptor class costs about 50 ns more
    per access (4 % of the core's dispatch rate); the packed ``Message``/``Vertex``
    fields are hand-written for the same reason.
    """

    __slots__ = (
        "_oldest",
        "_r",
        "_rev",
        "agenda_seq",
        "chain_seq",
        "channel",
        "group",
        "host",
        "jobs",
        "pending",
        "rcpts",
        "vlist",
        "wakeup",
    )

    def __init__(self, group: Group, channel: str, host: str) -> None:
        self.group = group
        self.channel = channel
        self.host = host
        self.jobs = 0
        self.rcpts = 0
        self.wakeup = 0
        self.pending = ""  # why the thread is held back (SHOW THREAD), empty if not
        self._r: _ThreadRun | None = None
        # feed order; removed vertices linger until compacted
        self.vlist: list[Vertex] = []
        self._oldest: int | None = None
        self.agenda_seq = 0
        self.chain_seq = 0
        # bumped when a SHOW THREAD row may change (report_revision); it starts at a
        # serial of its own, so no two threads (one dead, one new) share a revision
        self._rev = next(_serials) << 40

    @property
    def attempts(self) -> int:
        r = self._r
        return 0 if r is None else r.attempts

    @attempts.setter
    def attempts(self, value: int) -> None:
        r = self._r
        if r is None:
            if value == 0:
                return
            r = _run(self)
        r.attempts = value

    @property
    def dead(self) -> int:
        """Removed vertices still in ``vlist`` (compacted past 32)."""
        r = self._r
        return 0 if r is None else r.dead

    @dead.setter
    def dead(self, value: int) -> None:
        r = self._r
        if r is None:
            if value == 0:
                return
            r = _run(self)
        r.dead = value

    @property
    def feedptr(self) -> int:
        """Next ``vlist`` index to feed."""
        r = self._r
        return 0 if r is None else r.feedptr

    @feedptr.setter
    def feedptr(self, value: int) -> None:
        r = self._r
        if r is None:
            if value == 0:
                return
            r = _run(self)
        r.feedptr = value

    @property
    def retry_floor(self) -> int:
        """Earliest next retry a TA asked for (0: none)."""
        r = self._r
        return 0 if r is None else r.retry_floor

    @retry_floor.setter
    def retry_floor(self, value: int) -> None:
        r = self._r
        if r is None:
            if value == 0:
                return
            r = _run(self)
        r.retry_floor = value

    @property
    def retryindex(self) -> int:
        r = self._r
        return 0 if r is None else r.retryindex

    @retryindex.setter
    def retryindex(self, value: int) -> None:
        r = self._r
        if r is None:
            if value == 0:
                return
            r = _run(self)
        r.retryindex = value

    @property
    def thrkids(self) -> int:
        """TAs working on the thread."""
        r = self._r
        return 0 if r is None else r.thrkids

    @thrkids.setter
    def thrkids(self, value: int) -> None:
        r = self._r
        if r is None:
            if value == 0:
                return
            r = _run(self)
        r.thrkids = value

    @property
    def unfed(self) -> int:
        """Vertices still to feed in the current run."""
        r = self._r
        return 0 if r is None else r.unfed

    @unfed.setter
    def unfed(self, value: int) -> None:
        r = self._r
        if r is None:
            if value == 0:
                return
            r = _run(self)
        r.unfed = value

    @property
    def alive(self) -> bool:
        """False once removed from its group (a pending event may still name it)."""
        r = self._r
        return True if r is None else r.alive

    @alive.setter
    def alive(self, alive: bool) -> None:
        r = self._r
        if r is None:
            if alive:
                return
            r = _run(self)
        r.alive = alive

    @property
    def proclist(self) -> list[Proc]:
        """The TAs attached to the thread (allocates the run-time fields)."""
        return _run(self).proclist

    @proclist.setter
    def proclist(self, procs: list[Proc]) -> None:
        _run(self).proclist = procs

    @property
    def _oldest_dirty(self) -> bool:
        r = self._r
        return False if r is None else r.oldest_dirty

    @_oldest_dirty.setter
    def _oldest_dirty(self, dirty: bool) -> None:
        r = self._r
        if r is None:
            if not dirty:
                return
            r = _run(self)
        r.oldest_dirty = dirty

    @property
    def withhost(self) -> int:
        return 2 if self.group.clause.withhost else 0

    @property
    def report_revision(self) -> tuple[int, int, int, int, int]:
        """Equal while no ``SHOW THREAD`` row can have changed, ``wakeup`` and the
        clock aside (mailq.server.reports caches the rows by it).

        ``_rev`` counts changes to the shown vertex fields (their setters and
        ``drop_index`` bump it; code that writes ``_vs``/``_offs`` raw calls
        ``touch``), ``compact`` and reorders (``touch``), from a serial
        unique to the thread (a new thread never repeats a dead one's values). Between
        two equal values ``vlist`` only grew by appends (its length) and vertices only
        left by ``jobs`` decrements, so the length and ``jobs`` catch membership;
        ``rcpts`` is a second guard; the clause's expiry is in every row.
        """
        return (
            self._rev,
            self.jobs,
            self.rcpts,
            len(self.vlist),
            self.group.clause.expiry,
        )

    def touch(self) -> None:
        """The vertices' order changed (or anything else a row shows)."""
        self._rev += 1

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
        r = self._r
        return () if r is None else r.proclist

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
        self._rev += 1


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
