"""Fake implementations of the ``mailq.server.views`` Protocols, and the recorded queues.

``main_run()`` rebuilds the scheduler state of the transcripts' main run (README §3:
five messages, five threads, the offsets, expiries, wakeups, last feeds, attempts and
diagnostics of raw/15-17), in the recorded thread order. ``etrn_running()`` and
``after_etrn()`` are the states case raw/80 shows right after its ETRNs and 3 s later;
``FakeOps.kill_msg`` turns the latter into the after-KILL state of raw/81-82.
``unix_run()`` is the regenerated queue of A2, ``empty()`` that of raw/95.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from tests.recordings import RECORDINGS

REFERENCE = RECORDINGS
START = 1795312202  # scheduler start of the main run (Uptime: 14s at 1795312216)
EXPIRY = 5 * 86400


@dataclass
class FakeProc:
    pid: int
    hungertime: int
    feedtime: int = 0
    overfed: int = 0
    state_name: str = "IDLE"


@dataclass
class FakeVertex:
    path: str
    sender: str
    offsets: list[int]
    expiry: int
    lastfeed: int = 0
    attempts: int = 0
    waiting_for: int = 0
    message: str | None = None
    mtime: int = 0
    spoolid: str = ""

    @property
    def ident(self) -> str:
        return self.path.rsplit("/", 1)[-1]


@dataclass
class FakeThread:
    channel: str
    host: str
    wakeup: int
    attempts: int = 0
    withhost: int = 0
    pending: str = ""
    thrkids: int = 0
    unfed: int = 0
    proc_list: list[FakeProc] = field(default_factory=list)
    vertex_list: list[FakeVertex] = field(default_factory=list)
    frozen: tuple[int, int, int | None] | None = None  # benchmarks: O(1) counts

    @property
    def jobs(self) -> int:
        return self.frozen[0] if self.frozen else len(self.vertex_list)

    @property
    def rcpts(self) -> int:
        if self.frozen:
            return self.frozen[1]
        return sum(len(v.offsets) for v in self.vertex_list)

    @property
    def oldest_mtime(self) -> int | None:
        if self.frozen:
            return self.frozen[2]
        return min((v.mtime for v in self.vertex_list), default=None)

    def freeze(self) -> None:
        """Keep the counts as they are now, as the scheduler's incremental state does."""
        self.frozen = (self.jobs, self.rcpts, self.oldest_mtime)

    def procs(self) -> Sequence[FakeProc]:
        return self.proc_list

    def vertices(self) -> Iterable[FakeVertex]:
        return self.vertex_list


@dataclass
class FakeGroup:
    clause_channel: str
    clause_host: str = "*"
    withhost: int = 0
    thread_list: list[FakeThread] = field(default_factory=list)
    proc_count: int = 0
    idle_count: int = 0
    idle_list_length: int = 0
    maxring: int = 20
    overfeed: int = 150
    maxthr: int = 1

    @property
    def thread_count(self) -> int:
        return len(self.thread_list)

    def threads(self) -> Sequence[FakeThread]:
        return self.thread_list


_VALUE = re.compile(r"^(\S+)(\s+)(\d+(?:\.\d+)?)$")


class FakeCounters:
    """A counter block whose dump follows the recorded SHOW COUNTERS layout."""

    def __init__(self, values: dict[str, int] | None = None) -> None:
        self.template = _counter_template()
        self.values: dict[str, int] = {}
        for line in self.template:
            m = _VALUE.match(line)
            if m and "." in m.group(1) and "Load-Avg" not in m.group(1):
                self.values[m.group(1)] = int(m.group(3))  # as recorded
        self.values.update(values or {})

    def get(self, name: str) -> int:
        return self.values.get(name, 0)

    def incr(self, name: str, by: int = 1) -> None:
        self.values[name] = self.values.get(name, 0) + by

    def set(self, name: str, value: int) -> None:
        self.values[name] = value

    def dump(self, now: int) -> list[str]:
        out: list[str] = []
        for line in self.template:
            m = _VALUE.match(line)
            if m is None:
                out.append(line)
                continue
            name = m.group(1)
            width = len(line) - len(name)
            if name == "Time_now":
                out.append(f"{name}{now:>{width}}")
            elif name in self.values:
                out.append(f"{name}{self.values[name]:>{width}}")
            else:
                out.append(line)
        return out


def _counter_template() -> list[str]:
    data = (REFERENCE / "raw/14-show-counters.s2c").read_bytes().decode()
    body = data.split("+OK until LF.LF\n", 1)[1].split("\n.\n", 1)[0]
    return body.split("\n")


class FakeQueue:
    """A ``QueueView`` over fake groups; totals are computed from the threads."""

    def __init__(
        self,
        groups: list[FakeGroup],
        counters: FakeCounters,
        start_time: int = START,
        kids: int = 0,
        idle: int = 0,
    ) -> None:
        self.group_list = groups
        self.counters = counters
        self.start_time = start_time
        self.kids = kids
        self.idle = idle
        self.frozen: tuple[int, int, int, int] | None = None
        self.index: dict[tuple[str, str], FakeThread] | None = None

    def freeze(self) -> None:
        """Cache every count (benchmarks): the scheduler keeps them incrementally."""
        for thread in self.all_threads():
            thread.freeze()
        self.frozen = (
            self.msgs,
            self.total_threads,
            self.total_vertices,
            self.total_recipients,
        )
        self.index = {(t.channel, t.host): t for t in reversed(self.all_threads())}

    def all_threads(self) -> list[FakeThread]:
        return [t for g in self.group_list for t in g.thread_list]

    @property
    def msgs(self) -> int:
        if self.frozen:
            return self.frozen[0]
        return len({v.ident for t in self.all_threads() for v in t.vertex_list})

    @property
    def total_threads(self) -> int:
        return sum(g.thread_count for g in self.group_list)

    @property
    def total_vertices(self) -> int:
        if self.frozen:
            return self.frozen[2]
        return sum(t.jobs for t in self.all_threads())

    @property
    def total_recipients(self) -> int:
        if self.frozen:
            return self.frozen[3]
        return sum(t.rcpts for t in self.all_threads())

    def groups(self) -> Iterable[FakeGroup]:
        return self.group_list

    def held_threads(self) -> list[FakeThread]:
        return []

    def find_held(self, channel: str, host: str) -> FakeThread | None:
        return None

    def find_thread(self, channel: str, host: str) -> FakeThread | None:
        if self.index is not None:
            return self.index.get((channel, host))
        for t in self.all_threads():
            if t.channel == channel and t.host == host:
                return t
        return None


@dataclass
class FakeOps:
    """``QueueOperations`` acting on a :class:`FakeQueue`; every call is recorded."""

    queue: FakeQueue
    calls: list[tuple[str, ...]] = field(default_factory=list)
    requeueable: set[str] = field(default_factory=set)

    def etrn(self, domain: str) -> int:
        self.calls.append(("etrn", domain))
        return sum(
            1 for t in self.queue.all_threads() if t.host == domain and not t.proc_list
        )

    def kill_msg(self, ident: str) -> bool:
        self.calls.append(("kill_msg", ident))
        removed = 0
        found = False
        for group in self.queue.group_list:
            for thread in list(group.thread_list):
                keep = [
                    v for v in thread.vertex_list if ident not in (v.ident, v.spoolid)
                ]
                removed += sum(len(v.offsets) for v in thread.vertex_list) - sum(
                    len(v.offsets) for v in keep
                )
                if len(keep) != len(thread.vertex_list):
                    found = True
                thread.vertex_list = keep
                if not keep:
                    group.thread_list.remove(thread)
        if found:
            c = self.queue.counters
            c.incr("SC.TransmittedMessages")
            c.incr("SC.StoredMessages-G", -1)
            c.incr("SC.StoredRecipients-G", -removed)
        return found

    def kill_thread(self, channel: str, host: str) -> int:
        self.calls.append(("kill_thread", channel, host))
        for group in self.queue.group_list:
            for thread in list(group.thread_list):
                if thread.channel == channel and thread.host == host:
                    group.thread_list.remove(thread)
                    return thread.rcpts
        return 0

    def requeue_msg(self, ident: str) -> bool:
        self.calls.append(("requeue_msg", ident))
        return ident in self.requeueable


# ---- the recorded queues --------------------------------------------------------------


def _diag(port: int) -> str:
    return (
        "smtp; 500 (connect to 127.0.0.1 "
        f"[127.0.0.1|9|127.0.0.1|{port}]: Connection refused)"
    )


@dataclass(frozen=True)
class _Times:
    """The per-run times: message mtimes and the thread wakeups."""

    m1: int = 1795301402  # 100001: 3 h before load
    m2: int = 1795304877  # 100002
    m3: int = 1795311602  # 100003
    m4: int = 1795312112  # 100004
    m5: int = 1795312157  # 100005
    smtp_wakeup: int = 1795312260
    local_wakeup: int = 1795312205
    etrn_wakeup: int = 1795312216
    first_feed: int = 1795312204
    net_port: int = 48553
    org_port: int = 35609


def _vertices(t: _Times) -> dict[str, FakeVertex]:
    net = _diag(t.net_port)
    org = _diag(t.org_port)
    return {
        "net1": FakeVertex("Y/F/100001", "alice@example.com", [111], t.m1 + EXPIRY,
                           t.first_feed, 1, 0, net, t.m1, "S100001AbmKVBkA00000"),
        "net2": FakeVertex("Y/G/100002", "alice@example.com", [160, 111], t.m2 + EXPIRY,
                           0, 1, 0, net, t.m2, "S100002AbmKVBkB00000"),
        "org3": FakeVertex("Y/H/100003", "frank@example.com", [111], t.m3 + EXPIRY,
                           t.first_feed, 1, 0, org, t.m3, "S100003AbmKVBkC35DCm"),
        "org2": FakeVertex("Y/G/100002", "alice@example.com", [208], t.m2 + EXPIRY,
                           0, 1, 0, org, t.m2, "S100002AbmKVBkB00000"),
        "loc1": FakeVertex("Y/I/100004", "frank@example.com", [111], t.m4 + EXPIRY,
                           0, 0, 0, None, t.m4, "S100004AbmKVBkD00000"),
        "loc2": FakeVertex("Y/I/100004", "frank@example.com", [153], t.m4 + EXPIRY,
                           0, 0, 0, None, t.m4, "S100004AbmKVBkD00000"),
        "etrn": FakeVertex("Y/J/100005", "heidi@example.com", [111], t.m5 + EXPIRY,
                           0, 0, 0, None, t.m5, "S100005AbmKVBkE00000"),
    }  # fmt: skip


def _counters(msgs: int = 5, rcpts: int = 8) -> FakeCounters:
    return FakeCounters(
        {
            "SC.ReceivedMessages": msgs,
            "SC.ReceivedRecipients": rcpts,
            "SC.StoredMessages-G": msgs,
            "SC.StoredRecipients-G": rcpts,
            "SC.StoredThreads-G": 5 if msgs else 0,
            "SC.StoredVertices-G": 7 if msgs else 0,
        }
    )


def _queue(t: _Times, net_first: bool = False) -> FakeQueue:
    v = _vertices(t)
    org = FakeThread(
        "smtp", "example.org", t.smtp_wakeup, 1, vertex_list=[v["org3"], v["org2"]]
    )
    net = FakeThread(
        "smtp", "example.net", t.smtp_wakeup, 1, vertex_list=[v["net1"], v["net2"]]
    )
    smtp = FakeGroup(
        "smtp",
        thread_list=[net, org] if net_first else [org, net],
        proc_count=2,
        idle_count=2,
        idle_list_length=2,
        maxring=50,
    )
    local = FakeGroup(
        "local",
        maxring=5,
        thread_list=[
            FakeThread("local", "nosuchuser", t.local_wakeup, vertex_list=[v["loc1"]]),
            FakeThread("local", "postmaster", t.local_wakeup, vertex_list=[v["loc2"]]),
        ],
    )
    etrn = FakeGroup("smtp-etrn", maxring=20, thread_list=[
        FakeThread("smtp-etrn", "etrn.example.com", t.etrn_wakeup, vertex_list=[v["etrn"]]),
    ])  # fmt: skip
    return FakeQueue([smtp, local, etrn], _counters(), START, kids=2, idle=2)


def main_run() -> FakeQueue:
    """The queue of raw/01-40 (recorded thread order: example.org first)."""
    return _queue(_Times())


def etrn_running(queue: FakeQueue, now: int = 1795312225) -> None:
    """Right after raw/80's ETRNs: TAs attached to example.net and the etrn thread."""
    smtp, _, etrn = queue.group_list
    net = smtp.thread_list[1]
    net.proc_list = [FakeProc(16678, now, now, 1, "STUFF")]
    net.thrkids, net.unfed = 1, 1
    smtp.idle_count = smtp.idle_list_length = 1
    ethr = etrn.thread_list[0]
    ethr.proc_list = [FakeProc(18327, now, 0, 1, "LARVA")]
    ethr.thrkids, ethr.unfed = 1, 1
    etrn.proc_count = 1
    queue.kids, queue.idle = 3, 1


def after_etrn(queue: FakeQueue, now: int = 1795312225) -> None:
    """3 s after raw/80's ETRNs: both attempts failed, the TAs are idle again."""
    smtp, _, etrn = queue.group_list
    net = smtp.thread_list[1]
    net.proc_list, net.thrkids, net.unfed, net.attempts = [], 0, 0, 2
    for vertex in net.vertex_list:
        vertex.attempts += 1
        vertex.lastfeed = now
    smtp.idle_count = smtp.idle_list_length = 2
    ethr = etrn.thread_list[0]
    ethr.proc_list, ethr.thrkids, ethr.unfed, ethr.attempts = [], 0, 0, 1
    ethr.wakeup = 1795313349
    vertex = ethr.vertex_list[0]
    vertex.lastfeed, vertex.attempts, vertex.message = now, 1, _diag(41413)
    etrn.proc_count = etrn.idle_count = etrn.idle_list_length = 1
    queue.kids, queue.idle = 3, 3


def after_kill() -> tuple[FakeQueue, FakeOps]:
    """The state of raw/82 and raw/93: after raw/80, 100003 and 100004 killed."""
    queue = main_run()
    etrn_running(queue)
    after_etrn(queue)
    ops = FakeOps(queue)
    ops.kill_msg("S100003AbmKVBkC35DCm")
    ops.kill_msg("100004")
    ops.calls.clear()
    return queue, ops


def unix_run() -> FakeQueue:
    """The regenerated queue of the unix-socket run (A2): example.net listed first."""
    shift = 149
    base = _Times()
    t = _Times(
        m1=base.m1 + shift, m2=base.m2 + shift, m3=base.m3 + shift,
        m4=base.m4 + shift, m5=base.m5 + shift,
        smtp_wakeup=1795312380, local_wakeup=1795312353, etrn_wakeup=1795312364,
        first_feed=1795312352, net_port=46973, org_port=46973,
    )  # fmt: skip
    queue = _queue(t, net_first=True)
    queue.start_time = 1795312348
    return queue


def empty() -> FakeQueue:
    """The empty queue of raw/95 (scheduler started 5 s before)."""
    return FakeQueue([], _counters(0, 0), start_time=1795312338)


def big_queue(
    threads: int, vertices: int, rcpts: int = 1, now: int = START
) -> FakeQueue:
    """A synthetic queue: ``threads`` threads of ``vertices`` vertices of ``rcpts``."""
    group = FakeGroup("smtp", maxring=50, proc_count=0)
    offsets = [111 + 49 * i for i in range(rcpts)]
    n = 0
    for t in range(threads):
        thread = FakeThread("smtp", f"host{t}.example", now + 60, attempts=1)
        for _ in range(vertices):
            n += 1
            thread.vertex_list.append(
                FakeVertex(
                    f"A/B/{n}",
                    "sender@example.com",
                    offsets,
                    now + EXPIRY,
                    now - 10,
                    1,
                    0,
                    _diag(25),
                    now - 100,
                )
            )
        group.thread_list.append(thread)
    total = threads * vertices
    return FakeQueue([group], _counters(total, total * rcpts), now - 14)


def frozen_big_queue(
    threads: int, vertices: int, rcpts: int = 1, now: int = START
) -> FakeQueue:
    """:func:`big_queue` with every count cached (for benchmarks)."""
    queue = big_queue(threads, vertices, rcpts, now)
    queue.freeze()
    return queue
