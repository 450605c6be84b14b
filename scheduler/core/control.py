"""Operator control in the core (docs/protocol.md "Operator control"): holds,
suspensions and runtime policies, message selection by filter, retry now or at a time.

A held message stays loaded but its vertices are *parked*: taken out of their threads
(so they are never fed, count in no thread and never expire) and put back by a release.
A vertex that a TA holds when the message is held is parked when the TA gives it back.
Holds arrive from the postoffice at startup through :meth:`Control.restore_holds`; a
message loaded later whose number is held is parked as it loads.

Rules (suspensions and policies) are handed in whole by :meth:`Control.set_rules`; a
thread that a rule matches does not start (suspension) or starts within the rule's
limits (policy). The core never reads a clock: expiry of rules is the caller's business,
which calls ``set_rules`` again.
"""

from __future__ import annotations

import fnmatch
import logging
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from scheduler.core.commands import AppendDiagnostic, Command, MarkRecipient
from scheduler.core.events import MessageGone
from scheduler.core.loading import Loading
from scheduler.core.model import (
    M_DONE,
    T_MASK,
    V_FED,
    V_UNFED,
    Message,
    Proc,
    Thread,
    Vertex,
)
from scheduler.core.rcptindex import RcptIndex
from scheduler.core.state import SECOND_NS, SENT_RCPTS, TICK
from spool.controlfile import format_diagnostic
from spool.filters import (
    Filter,
    Term,
    control_keys,
    index_keys,
    text_search,
    text_searchable,
)
from spool.ids import message_number, parse_spool_id, spool_id

if TYPE_CHECKING:
    from spool.controlfile import ControlFile

__all__ = ["Control", "HeldThread", "HeldVertex", "HoldInfo", "Rule", "message_state"]

log = logging.getLogger(__name__)

KEY_CANDIDATES = 2000
"""Above this many recipients with the key of a ``rcpt=`` glob's literal part, the
recipient index's addresses are searched instead when the glob's literal text is
longer than that part (reading 2,000 control files costs about one search)."""

Addresses = Callable[[Message], Sequence[tuple[str, str, str]]]
"""(channel, host, address) of a message's pending recipients (read from disk)."""


@dataclass(slots=True)
class HoldInfo:
    """One held message: why, since when, by which operation, and its parked vertices."""

    reason: str
    since: int
    op: str
    sid: str = ""
    # flat vertex, channel, host, vertex, ...: no tuple per vertex for the collector
    # to walk (a bulk HOLD of a million recipients would add a million of them)
    parked: list[object] = field(default_factory=list)

    def park(self, v: Vertex, channel: str, host: str) -> None:
        self.parked += (v, channel, host)

    def destinations(self) -> Iterator[tuple[Vertex, str, str]]:
        p = self.parked
        for i in range(0, len(p), 3):
            yield p[i], p[i + 1], p[i + 2]  # type: ignore[misc]


class HeldVertex:
    """A parked vertex as ``SHOW THREAD`` shows it: state ``held``, and the hold in
    place of the diagnostic (``held by <op>: <reason>``), before the last one."""

    __slots__ = (
        "attempts",
        "expiry",
        "lastfeed",
        "message",
        "offsets",
        "path",
        "sender",
    )
    waiting_for = 0

    def __init__(self, v: Vertex, info: HoldInfo, expiry: int) -> None:
        text = f"held by {info.op}: {info.reason}"
        self.message = f"{text}\r{v.message}" if v.message else text
        self.path = v.path
        self.sender = v.sender
        self.offsets = v.offsets
        self.expiry = expiry
        self.lastfeed = v.lastfeed
        self.attempts = v.attempts


class HeldThread:
    """The held recipients of one (channel, host), shown as a thread in ``SHOW QUEUE
    THREADS2`` (``pend=Held``) and ``SHOW THREAD`` (rows in state ``held``), so that
    held mail is seen by ``mailq``. Counts are kept as vertices are parked and
    released; the list of parked vertices drops released ones when it has grown to
    twice the held ones (a bulk RELEASE costs nothing more per vertex)."""

    __slots__ = (
        "_core",
        "_parked",
        "channel",
        "host",
        "jobs",
        "rcpts",
        "withhost",
    )
    attempts = 0
    wakeup = 0
    pending = "Held"
    thrkids = 0
    unfed = 0

    def __init__(self, core: Control, channel: str, host: str, withhost: int) -> None:
        self._core = core
        self.channel = channel
        self.host = host
        self.withhost = withhost
        self.jobs = 0
        self.rcpts = 0
        self._parked: list[Vertex] = []

    def procs(self) -> tuple[()]:
        return ()

    def vertices(self) -> list[HeldVertex]:
        return self._core.held_vertices(self)

    def _live(self, holds: dict[int, HoldInfo]) -> Iterator[tuple[Vertex, HoldInfo]]:
        seen: set[int] = set()
        for v in self._parked:
            info = holds.get(v.msg.number)
            if v.thread is None and info is not None and id(v) not in seen:
                seen.add(id(v))
                yield v, info

    @property
    def oldest_mtime(self) -> int | None:
        return min(
            (v.msg.mtime for v in self._parked if v.thread is None), default=None
        )


@dataclass(frozen=True, slots=True)
class Rule:
    """A suspension (``kind`` ``suspend``) or a policy (``policy``) over threads."""

    id: str
    kind: str
    channel: str
    host: str
    until: int = 0  # 0: until lifted
    reason: str = ""
    maxthr: int = 0
    maxring: int = 0
    rate: int = 0  # deliveries (TA starts and feeds) per ``period`` seconds
    period: int = 0
    created: int = 0
    user: str = ""

    @property
    def selector(self) -> str:
        return f"{self.channel}/{self.host}"

    def matches(self, channel: str, host: str) -> bool:
        return _glob(self.channel).fullmatch(channel.lower()) is not None and (
            _glob(self.host).fullmatch(host.lower()) is not None
        )


_globs: dict[str, re.Pattern[str]] = {}


def _glob(pattern: str) -> re.Pattern[str]:
    got = _globs.get(pattern)
    if got is None:
        if len(_globs) > 4096:
            _globs.clear()
        got = _globs[pattern] = re.compile(fnmatch.translate(pattern.lower()))
    return got


def vertex_state(v: Vertex, held: bool) -> str:
    if held:
        return "held"
    if v.state & V_FED:
        return "active"
    return "deferred" if v.attempts > 0 else "queued"


def message_state(msg: Message, held: bool) -> str:
    """``held``, ``active`` (a TA has a part), ``deferred`` (tried) or ``queued``."""
    if held:
        return "held"
    states = {vertex_state(v, False) for v in msg.vertices}
    for s in ("active", "deferred"):
        if s in states:
            return s
    return "queued"


class Control(Loading):
    """Holds, rules, selection and retry on top of the loading core."""

    _holds: dict[int, HoldInfo]
    _rules: tuple[Rule, ...]
    _buckets: dict[tuple[str, str], tuple[float, int]]
    _held: dict[str, HeldThread]  # by channel + NUL + host: a str key is not GC-tracked

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._holds = {}
        self._rules = ()
        self._buckets = {}
        self.rcpt_index = RcptIndex()
        self._held = {}

    # -- identifying messages ------------------------------------------------------------

    def resolve(self, ident: str) -> Message | None:
        """A message by spool-id, file path (``Q/I/123456``, ``transport/...``), number."""
        msg = self._find_message(ident)
        if msg is not None:
            return msg
        text = ident.strip()
        for prefix in ("transport/", "queue/"):
            text = text.removeprefix(prefix)
        name = text.rpartition("/")[2]
        if name.isdigit():
            msg = self._messages.get(int(name))
            if msg is not None and (text == name or msg.relpath == text):
                return msg
        for msg in self._messages.values():
            if msg.relpath == text:
                return msg
        return None

    def spool_id_of(self, msg: Message) -> str:
        return spool_id(msg.number, msg.mtime, msg.mtime_ns)

    def messages(self) -> Iterable[Message]:
        return self._messages.values()

    # -- holds ---------------------------------------------------------------------------

    def hold_info(self, number: int) -> HoldInfo | None:
        return self._holds.get(number)

    def held_numbers(self) -> dict[int, HoldInfo]:
        return self._holds

    def restore_holds(self, entries: Iterable[tuple[str, int, str, str]]) -> None:
        """Holds read from the postoffice: (spool-id, since, op, reason)."""
        for sid, since, op, reason in entries:
            number = parse_spool_id(sid)[0]
            info = self._holds.setdefault(number, HoldInfo(reason, since, op, sid))
            msg = self._messages.get(number)
            if msg is not None and self.spool_id_of(msg) == sid:
                self._park_message(msg, info)

    def hold(
        self, msgs: Iterable[Message], reason: str, op: str, now: float
    ) -> tuple[list[Message], list[Command]]:
        """Hold each message not already held; returns those newly held."""
        self._begin(now)
        done: list[Message] = []
        for msg in msgs:
            if msg.number in self._holds or self._messages.get(msg.number) is not msg:
                continue
            info = HoldInfo(reason, self._now, op, self.spool_id_of(msg))
            self._holds[msg.number] = info
            self._park_message(msg, info)
            done.append(msg)
        return done, self._end()

    def release(
        self, msgs: Iterable[Message], now: float
    ) -> tuple[list[Message], list[Command]]:
        """Release each held message; returns those released."""
        self._begin(now)
        compacted: set[int] = set()
        done = [msg for msg in msgs if self._unpark(msg, compacted)]
        return done, self._end()

    def _unpark(self, msg: Message, compacted: set[int]) -> bool:
        """Link a held message's parked vertices back; False if it was not held."""
        info = self._holds.pop(msg.number, None)
        if info is None:
            return False
        for _v, channel, host in info.destinations():
            # a parked vertex may still sit in its old thread's vlist: compact
            # that thread once per batch before linking anything back into it
            th = self._threads.get((channel, host))
            if th is not None and th.dead and id(th) not in compacted:
                compacted.add(id(th))
                th.compact()
        link = self._link
        for v, channel, host in info.destinations():
            n = len(v.offsets)
            self._held_sub(channel, host, n)
            if n and v.thread is None:
                link(v, channel, host, n)
        info.parked.clear()
        return True

    def _on_gone(self, ev: MessageGone) -> None:
        """A held message whose file went away is unparked first, so that it leaves
        like any other (no held recipients are left behind in the reports)."""
        name = ev.relpath.rpartition("/")[2]
        number = int(name) if name.isdigit() else message_number(name)
        msg = self._messages.get(number)
        if msg is not None and number in self._holds:
            self._unpark(msg, set())
        super()._on_gone(ev)

    def _schedule_now(self, th: Thread) -> None:
        if th.group.clause.queueonly:
            return
        self._agenda.schedule(th, self._now)

    def _park_message(self, msg: Message, info: HoldInfo) -> None:
        ages = self._ages.get((msg._t & T_MASK) // SECOND_NS // 60)  # its minute's
        for v in msg.vertices:
            if v.thread is not None and not v.state & V_FED:
                self._park(v, info, ages)

    def _park(
        self, v: Vertex, info: HoldInfo, ages: dict[Thread, int] | None = None
    ) -> None:
        """Take ``v`` out of its thread (``ages``: its minute's histogram, if known)."""
        th = v.thread
        assert th is not None
        n = len(v.offsets)
        v.thread = None
        if v.state & V_UNFED:
            v.state &= ~V_UNFED
            th.unfed -= 1
        th.jobs -= 1
        th.rcpts -= n
        if n:  # _age_sub, inline: a bulk HOLD parks a million vertices
            left = (ages[th] if ages is not None else 0) - n
            if left > 0:
                assert ages is not None
                ages[th] = left
            else:
                self._age_sub(th, v.msg._t, n)
        th.dead += 1
        th.note_removed(v.msg.mtime)
        self.total_vertices -= 1
        self.total_recipients -= n
        info.park(v, th.channel, th.host)
        self._held_add(v, th.channel, th.host, n, th.withhost)
        if th.dead > 32 and th.dead > th.jobs:
            th.compact()
        if th.jobs == 0 and th.thrkids == 0:
            self._delete_thread(th)

    def _job_done(self, v: Vertex) -> None:
        super()._job_done(v)
        holds = self._holds
        if holds and v.thread is not None and not v.state & V_FED:
            info = holds.get(v.msg.number)
            if info is not None and v.offsets:
                self._park(v, info)

    def _load(
        self, relpath: str, control: ControlFile, mtime: int, mtime_ns: int, ctime: int
    ) -> None:
        msgs = self._messages
        size = len(msgs)
        super()._load(relpath, control, mtime, mtime_ns, ctime)
        if len(msgs) > size:  # loaded: it is the newest entry
            keys: tuple[bytes, bytes, bytes] | None = getattr(
                control, "rcpt_keys", None
            )
            if keys is None:  # a ControlFile; load workers send the keys ready
                keys = control_keys(control)
            self.rcpt_index.add(next(reversed(msgs)), *keys)
        holds = self._holds
        if holds:
            name = relpath.rpartition("/")[2]
            info = holds.get(int(name)) if name.isdigit() else None
            msg = self._messages.get(int(name)) if name.isdigit() else None
            if info is not None and msg is not None:
                if info.sid == self.spool_id_of(msg):
                    self._park_message(msg, info)
                else:
                    del holds[msg.number]  # a new message in a reused file name

    def compact_index(self, budget: int = 4) -> bool:
        """A step of the recipient index's compaction (True: call again)."""
        msgs = self._messages
        return self.rcpt_index.compact(msgs.__contains__, budget)

    def _maybe_complete(self, msg: Message) -> None:
        super()._maybe_complete(msg)
        if msg.flags & M_DONE and self._holds:
            info = self._holds.get(msg.number)
            if info is not None and info.sid == self.spool_id_of(msg):
                del self._holds[msg.number]

    def kill_msg(self, ident: str, now: float) -> tuple[bool, list[Command]]:
        """KILL MSG also takes the path ``mailq`` prints, and kills held messages."""
        msg = self.resolve(ident)
        if msg is None:
            return super().kill_msg(ident, now)
        cmds = self.release([msg], now)[1] if msg.number in self._holds else []
        found, more = super().kill_msg(self.spool_id_of(msg), now)
        return found, cmds + more

    # -- held mail in the reports -----------------------------------------------------------

    def held_threads(self) -> list[HeldThread]:
        """A :class:`HeldThread` per (channel, host) with held recipients."""
        return [h for h in self._held.values() if h.jobs > 0]

    def find_held(self, channel: str, host: str) -> HeldThread | None:
        h = self._held.get(channel + "\0" + host)
        return h if h is not None and h.jobs > 0 else None

    def held_vertices(self, held: HeldThread) -> list[HeldVertex]:
        e = self._clause_for(held.channel, held.host).expiry
        return [
            HeldVertex(v, info, v.msg.mtime + e if e > 0 else 0)
            for v, info in held._live(self._holds)
        ]

    def _held_add(self, v: Vertex, channel: str, host: str, n: int, wh: int) -> None:
        key = channel + "\0" + host
        h = self._held.get(key)
        if h is None:
            h = self._held[key] = HeldThread(self, channel, host, wh)
        h.jobs += 1
        h.rcpts += n
        if len(h._parked) > 2 * h.jobs + 64:  # released ones linger until here
            h._parked = [v for v, _info in h._live(self._holds)]
        h._parked.append(v)

    def _held_sub(self, channel: str, host: str, n: int) -> None:
        key = channel + "\0" + host
        h = self._held.get(key)
        if h is None:
            return
        h.jobs -= 1
        h.rcpts -= n
        if h.jobs <= 0:
            del self._held[key]

    # -- age histograms (SHOW QUEUE SHAPE) -------------------------------------------------

    def age_histograms(self) -> dict[int, dict[Thread, int]]:
        """SHOW QUEUE SHAPE's histograms: per arrival minute (``mtime // 60``), the
        recipients of each thread that has some (held ones not counted), kept up to
        date from the first load on. Read only; a caller that yields to the event loop
        between reads must copy what it still needs (``dict(...)``)."""
        return self._ages

    # -- rules ---------------------------------------------------------------------------

    def set_rules(self, rules: Iterable[Rule], now: float) -> list[Command]:
        """Replace every suspension and policy; threads no longer held back are woken."""
        self._begin(now)
        self._rules = tuple(rules)
        for th in self._threads.values():
            if th.thrkids == 0 and th.pending.startswith(("Suspended", "Policy")):
                th.pending = ""
                self._schedule_now(th)
        return self._end()

    def rules(self) -> tuple[Rule, ...]:
        return self._rules

    def rule_for(self, th: Thread, kind: str) -> Rule | None:
        for r in self._rules:
            if r.kind == kind and r.matches(th.channel, th.host):
                return r
        return None

    def _start_thread(self, th: Thread, etrn: bool = False) -> bool:
        if self._rules and th.jobs:
            held = self._rule_hold(th)
            if held:
                th.pending = held
                if not th.agenda_seq and not th.thrkids:
                    self._agenda.schedule(th, self._now + TICK)
                return False
        return super()._start_thread(th, etrn)

    def _pick_next_thread(self, p: Proc, skip: Sequence[Thread] = ()) -> Thread | None:
        """A TA switching threads in its group skips threads a rule holds back."""
        nxt = super()._pick_next_thread(p, skip)
        if nxt is None or not self._rules:
            return nxt
        blocked: list[Thread] = []
        while nxt is not None:
            held = self._rule_hold(nxt)
            if not held:
                break
            nxt.pending = held
            blocked.append(nxt)
            nxt = super()._pick_next_thread(p, [*skip, *blocked])
        for th in blocked:
            if not th.agenda_seq and not th.thrkids:
                self._agenda.schedule(th, self._now + TICK)
        return nxt

    def _rule_hold(self, th: Thread) -> str:
        """The pending text when a rule keeps ``th`` from starting another TA, else ""."""
        s = self.rule_for(th, "suspend")
        if s is not None:
            return "Suspended:" + (s.reason or s.id).replace(" ", "_")[:40]
        p = self.rule_for(th, "policy")
        if p is None:
            return ""
        if p.maxthr and th.thrkids >= p.maxthr:
            return f"Policy:{p.id}:maxthr"
        if p.maxring and th.group.proc_count >= p.maxring:
            return f"Policy:{p.id}:maxring"
        if p.rate and p.period and not self._take_token(th, p):
            return f"Policy:{p.id}:rate"
        return ""

    def _take_token(self, th: Thread, p: Rule) -> bool:
        """Token bucket per (rule, thread): ``rate`` TA starts per ``period`` seconds."""
        key = (p.id, f"{th.channel}/{th.host}")
        tokens, last = self._buckets.get(key, (float(p.rate), self._now))
        tokens = min(float(p.rate), tokens + (self._now - last) * p.rate / p.period)
        if tokens < 1.0:
            self._buckets[key] = (tokens, self._now)
            return False
        self._buckets[key] = (tokens - 1.0, self._now)
        return True

    # -- bounce ---------------------------------------------------------------------------

    def bounce(
        self, msgs: Iterable[Message], reason: str, now: float
    ) -> tuple[int, list[Command]]:
        """Fail every pending recipient not held by a TA now: a ``d`` line, the ``-``
        mark, and the DSN pass (RFC 3464, spool.dsn) once the message completes."""
        msgs = list(msgs)
        self.release([m for m in msgs if m.number in self._holds], now)
        self._begin(now)
        text = reason.replace("\x01", " ").replace("\n", " ")[:200]
        notary = f"\x03\x01failed\x015.0.0\x01x-local; 500 ({text})\x01"
        n = 0
        for msg in msgs:
            for v in list(msg.vertices):
                while v.thread is not None and v.offsets and not v.state & V_FED:
                    _notify, hdr, dsn = v.rcpt_extra(0)
                    off = v.offsets[0]
                    line = format_diagnostic(off, hdr, dsn, self._now, notary, text)
                    self._out.append(AppendDiagnostic(msg.relpath, line))
                    self._out.append(MarkRecipient(msg.relpath, off, "-"))
                    self._mark_diag(msg)
                    self._stat(msg, "bounce", v.thread)
                    self._count(SENT_RCPTS)
                    self._remove_rcpt(v, 0)
                    n += 1
        return n, self._end()

    # -- retry ---------------------------------------------------------------------------

    def retry(
        self, msgs: Iterable[Message], at: float, now: float
    ) -> tuple[int, list[Command]]:
        """Move the threads of these messages' vertices to ``at`` (now when ``at`` <= now)."""
        self._begin(now)
        when = max(int(at), self._now)
        seen: set[int] = set()
        for msg in msgs:
            for v in msg.vertices:
                th = v.thread
                if th is None or id(th) in seen or th.thrkids:
                    continue
                seen.add(id(th))
                th.wakeup = when
                th.retry_floor = 0
                th.pending = ""
                if not th.group.clause.queueonly:
                    self._agenda.schedule(th, when)
        return len(seen), self._end()

    # -- selection -----------------------------------------------------------------------

    def select(
        self,
        flt: Filter,
        now: float,
        addresses: Addresses | None = None,
        sizes: Callable[[Message], int] | None = None,
        tick: int = 0,
    ) -> Iterator[Message | None]:
        """Loaded messages that ``flt`` matches (a generator). With ``tick`` > 0 it
        also yields None after every ``tick`` messages tested, so that a caller
        slicing its work by time is never kept long by a sparse match."""
        mterms = flt.message_terms
        rterms = flt.recipient_terms
        # candidates come from the matching threads: nothing more to test per vertex
        if rterms and all(t.key in ("channel", "host") for t in rterms):
            rterms = ()
        holds = self._holds
        aterms = tuple(t for t in rterms if t.key == "rcpt")
        vterms = tuple(t for t in rterms if t.key != "rcpt")
        n = 0
        seen: set[int] = set()
        for msg in self._candidates(flt):
            if msg is None:  # the recipient index searched a segment
                if tick:
                    yield None
                continue
            n += 1
            if tick and n % tick == 0:
                yield None
            if msg.flags & M_DONE or msg.number in seen:
                continue
            seen.add(msg.number)
            if mterms and not all(self._msg_term(msg, t, now, sizes) for t in mterms):
                continue
            if not rterms:
                yield msg
                continue
            info = holds.get(msg.number)
            if self._rcpt_match(msg, info, vterms, aterms, addresses):
                yield msg

    def _candidates(self, flt: Filter) -> Iterator[Message | None]:
        """The messages worth testing, lazily: the recipient index's candidates for
        a ``rcpt=`` glob with a literal local part or domain (by key), or for any
        other ``rcpt=`` glob or ``rcpt~`` text (by address; None after each segment
        searched); through the matching threads when the filter names a channel or
        host (a few thousand threads instead of every message), only held ones for
        ``state=held``, else all. A message may come twice (the caller's tests are
        idempotent; :meth:`select` drops repeats)."""
        msgs = self._messages
        index = self.rcpt_index
        for t in flt.terms:
            keys = index_keys(t)
            if not keys:
                continue
            # the rarer literal part's key; the addresses when both are common and
            # the pattern's literal text says more than the part (info@example.com)
            n, part, key, size = min((index.count(p, k), p, k, s) for p, k, s in keys)
            if n <= KEY_CANDIDATES or len(text_search(t)[0]) <= size + 1:
                for number in index.lookup(part, key):
                    m = msgs.get(number)
                    if m is not None:
                        yield m
                return
            break
        narrow = any(t.key in ("channel", "host", "state") for t in flt.terms)
        for t in flt.terms:
            # the addresses, a segment at a time (unless the glob is all wildcards
            # and a destination or state term narrows the candidates better)
            if text_searchable(t) and (not narrow or text_search(t)[0]):
                for got in self.rcpt_index.search(t):
                    if got is None:
                        yield None
                    elif (m := msgs.get(got)) is not None:
                        yield m
                return
        if any(
            t.key == "state" and t.op == "=" and t.value == "held" for t in flt.terms
        ):
            for n in list(self._holds):
                m = msgs.get(n)
                if m is not None:
                    yield m
            return
        dest = [t for t in flt.terms if t.key in ("channel", "host")]
        if not dest:
            yield from list(msgs.values())
            return
        for th in list(self._threads.values()):
            if all(
                t.text_matches(th.channel if t.key == "channel" else th.host)
                for t in dest
            ):
                for v in list(th.vertices()):
                    yield v.msg
        for info in list(self._holds.values()):
            for v, channel, host in info.destinations():
                if all(
                    t.text_matches(channel if t.key == "channel" else host)
                    for t in dest
                ):
                    yield v.msg
                    break

    def _msg_term(
        self,
        msg: Message,
        t: Term,
        now: float,
        sizes: Callable[[Message], int] | None,
    ) -> bool:
        k = t.key
        if k == "age":
            return t.number_matches(now - msg.mtime)
        if k == "size":
            return sizes is not None and t.number_matches(sizes(msg))
        if k == "sender":
            return t.text_matches(msg.sender)
        # id: any of the forms an operator may have in hand
        forms = (self.spool_id_of(msg), msg.relpath, msg.mid)
        hits = [Term(t.key, "=" if t.op in ("=", "!=") else "~", t.value, 0, t.pattern)]
        hit = any(hits[0].text_matches(f) for f in forms)
        return hit if t.op in ("=", "~") else not hit

    def _rcpt_match(
        self,
        msg: Message,
        info: HoldInfo | None,
        vterms: tuple[Term, ...],
        aterms: tuple[Term, ...],
        addresses: Addresses | None,
    ) -> bool:
        """One destination satisfies every destination term (``vterms``) and has a
        recipient whose address satisfies every ``rcpt`` term (``aterms``). Plain
        loops: no generator per vertex for the collector to count."""
        addr_rows: Sequence[tuple[str, str, str]] = ()
        if aterms:
            if addresses is None:
                return False
            addr_rows = addresses(msg)  # the file: read first, it decides most
            if not addr_rows:
                return False
        held = info is not None
        vtest = self._vtest
        for v, channel, host in self.destinations(msg, info):
            if vterms:
                state = vertex_state(v, held)
                ok = True
                for t in vterms:
                    if not vtest(t, v, channel, host, state):
                        ok = False
                        break
                if not ok:
                    continue
            if not aterms:
                return True
            for ch, h, addr in addr_rows:
                if ch == channel and h == host:
                    for t in aterms:
                        if not t.text_matches(addr):
                            break
                    else:
                        return True
        return False

    @staticmethod
    def _vtest(t: Term, v: Vertex, channel: str, host: str, state: str) -> bool:
        k = t.key
        if k == "channel":
            return t.text_matches(channel)
        if k == "host":
            return t.text_matches(host)
        if k == "attempts":
            return t.number_matches(v.attempts)
        if k == "state":
            return (state == t.value) == (t.op == "=")
        if k == "diag":
            return t.text_matches(v.message or "")
        return True

    def destinations(
        self, msg: Message, info: HoldInfo | None = None
    ) -> Iterator[tuple[Vertex, str, str]]:
        """(vertex, channel, host) of every live vertex, parked ones included."""
        if info is None:
            info = self._holds.get(msg.number)
        for v in msg.vertices:
            th = v.thread
            if th is not None:
                yield v, th.channel, th.host
        if info is not None:
            yield from info.destinations()
