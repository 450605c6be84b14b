"""A small Playbook (after mitmproxy's) for the scheduler core: events in, commands out.

    pb = Playbook(CONF)
    pb.load("A/1", [("smtp", "a.example", "u@a.example")])
    cmds = pb.line(1, "#hungry")
    assert pb.writes(cmds) == ["A/1\\ta.example\\n"]

The clock is a plain integer the test moves with :meth:`Playbook.at` / :meth:`advance`.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field

from mailq.server.views import CounterBlock
from scheduler.config.clauses import parse_config
from scheduler.core.commands import (
    AppendDiagnostic,
    Command,
    CompleteMessage,
    MarkRecipient,
    RetireAgent,
    StartAgent,
    StatLog,
    WriteAgent,
)
from scheduler.core.events import (
    AgentExited,
    AgentLine,
    AgentStarted,
    Event,
    MessageLoaded,
    Tick,
)
from scheduler.core.model import Thread
from scheduler.core.scheduler import Scheduler
from scheduler.core.shape import SHAPE_BY, ShapeTable
from spool.controlfile import parse
from spool.counters import Counters

__all__ = ["START", "Playbook", "Rcpt", "control_bytes"]

START = 1_800_000_000

Rcpt = tuple[str, str, str] | tuple[str, str, str, str]
"""(channel, host, user) or (channel, host, user, N-line text)."""


def control_bytes(
    mid: str, sender: str, rcpts: Sequence[Rcpt], *, status: str = " "
) -> bytes:
    """A control file like the router writes (MQ2-REF 12.3)."""
    lines = ["@ 0x00000007", f"i {mid}", "o 100", f"l <{mid}@test>", f"e {sender}"]
    lines.append(f"s local - {sender} 0")
    for r in rcpts:
        lines.append(f"r{status}          {r[0]} {r[1]} {r[2]} 0")
        if len(r) == 4:
            lines.append(f"N {r[3]}")
    lines += ["m", f"Subject: {mid}", "", ""]
    return "\n".join(lines).encode()


@dataclass
class Playbook:
    conf: str
    now: int = START
    retry_mode: str = "fixed"
    frozen: bool = False
    seed: int = 1
    sched: Scheduler = field(init=False)
    commands: list[Command] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.sched = Scheduler(
            parse_config(self.conf, "test.conf"),
            Counters.open(None),
            start_time=self.now,
            frozen=self.frozen,
            rng=random.Random(self.seed),
            retry_mode=self.retry_mode,
        )

    @property
    def counters(self) -> CounterBlock:
        """The scheduler's counter block (pending increments flushed)."""
        return self.sched.counters

    # clock
    def at(self, t: int) -> Playbook:
        self.now = t
        return self

    def advance(self, seconds: int) -> Playbook:
        self.now += seconds
        return self

    # events
    def send(self, event: Event) -> list[Command]:
        out = self.sched.handle(event, self.now)
        self.commands += out
        return out

    def load(
        self,
        relpath: str,
        rcpts: Sequence[Rcpt],
        *,
        sender: str = "sender@example.org",
        mtime: int | None = None,
        data: bytes | None = None,
    ) -> list[Command]:
        mid = relpath.rpartition("/")[2]
        raw = data if data is not None else control_bytes(mid, sender, rcpts)
        mt = self.now if mtime is None else mtime
        return self.send(MessageLoaded(relpath, parse(raw, relpath), mt, 0, float(mt)))

    def line(self, proc: int, text: str) -> list[Command]:
        return self.send(AgentLine(proc, text))

    def hungry(self, proc: int, times: int = 1) -> list[Command]:
        out: list[Command] = []
        for _ in range(times):
            out += self.line(proc, "#hungry")
        return out

    def started(self, proc: int, pid: int | None = None) -> list[Command]:
        return self.send(AgentStarted(proc, pid if pid is not None else 10000 + proc))

    def exited(self, proc: int, rc: int = 0) -> list[Command]:
        return self.send(AgentExited(proc, rc))

    def tick(self) -> list[Command]:
        return self.send(Tick())

    # command helpers
    @staticmethod
    def starts(cmds: Sequence[Command]) -> list[StartAgent]:
        return [c for c in cmds if isinstance(c, StartAgent)]

    @staticmethod
    def writes(cmds: Sequence[Command], proc: int | None = None) -> list[str]:
        return [
            c.data.decode()
            for c in cmds
            if isinstance(c, WriteAgent) and (proc is None or c.proc == proc)
        ]

    @staticmethod
    def jobs(cmds: Sequence[Command], proc: int | None = None) -> list[str]:
        """Job lines written (``#idle`` excluded), one entry per line."""
        out: list[str] = []
        for text in Playbook.writes(cmds, proc):
            out += [x for x in text.splitlines() if x != "#idle"]
        return out

    @staticmethod
    def of_type(cmds: Sequence[Command], kind: type) -> list[Command]:
        return [c for c in cmds if isinstance(c, kind)]

    @staticmethod
    def diags(cmds: Sequence[Command]) -> list[str]:
        return [c.line.decode() for c in cmds if isinstance(c, AppendDiagnostic)]

    @staticmethod
    def marks(cmds: Sequence[Command]) -> list[tuple[str, int, str]]:
        return [
            (c.relpath, c.offset, c.status)
            for c in cmds
            if isinstance(c, MarkRecipient)
        ]

    @staticmethod
    def completes(cmds: Sequence[Command]) -> list[CompleteMessage]:
        return [c for c in cmds if isinstance(c, CompleteMessage)]

    @staticmethod
    def retires(cmds: Sequence[Command]) -> list[int]:
        return [c.proc for c in cmds if isinstance(c, RetireAgent)]

    @staticmethod
    def stats(cmds: Sequence[Command]) -> list[str]:
        return [c.line for c in cmds if isinstance(c, StatLog)]

    def thread(self, channel: str, host: str) -> object:
        th = self.sched.find_thread(channel, host)
        assert th is not None, f"no thread {channel}/{host}"
        return th

    def check_counts(self) -> None:
        """The incremental counts equal a recount of the model."""
        s = self.sched
        nv = nr = 0
        kids = 0
        for g in s.groups():
            gp = 0
            for th in g.threads():
                vs = list(th.vertices())
                assert th.jobs == len(vs), (th.channel, th.host)
                assert th.rcpts == sum(len(v.offsets) for v in vs)
                assert th.thrkids == len(th.procs())
                oldest = min((v.msg.mtime for v in vs), default=None)
                assert th.oldest_mtime == oldest
                if th.thrkids:
                    assert th.unfed == sum(1 for v in vs if v.state & 1)
                nv += len(vs)
                nr += th.rcpts
                gp += th.thrkids
            assert gp + g.idle_count <= g.proc_count
            kids += g.proc_count
        assert s.total_vertices == nv
        assert s.total_recipients == nr
        assert s.kids >= kids
        self.check_shape()
        # the stored counters count held (parked) recipients too
        held = s.held_threads()
        assert self.counters.get("SC.StoredRecipients-G") == nr + sum(
            h.rcpts for h in held
        )
        assert self.counters.get("SC.StoredVertices-G") == nv + sum(
            h.jobs for h in held
        )
        assert self.counters.get("SC.StoredMessages-G") == s.msgs
        assert self.counters.get("SC.StoredThreads-G") == s.total_threads

    def check_shape(self) -> None:
        """SHOW QUEUE SHAPE from the core's kept histograms equals the table computed by
        walking every linked vertex (and the histograms themselves equal a recount)."""
        s = self.sched
        walked: dict[int, dict[Thread, int]] = {}
        for th in s.threads():
            for v in th.vertices():
                per = walked.setdefault(v.msg.mtime // 60, {})
                per[th] = per.get(th, 0) + len(v.offsets)
        kept = s.age_histograms()
        assert kept == walked  # no zero entries, no dead threads, no empty minutes
        for by in SHAPE_BY:
            if by == "sender-domain":
                continue  # walks the messages in both cases
            for when in (self.now, self.now + 3 * 3600):
                tables = []
                for source in (kept, walked):
                    table = ShapeTable(by, when)
                    for minute, counts in source.items():
                        table.add_minute(minute, counts.items())
                    tables.append(table.lines(1000))
                assert tables[0] == tables[1]
