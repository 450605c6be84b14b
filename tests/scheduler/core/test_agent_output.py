"""One ``AgentOutput`` event (every line of one read of a TA) decides exactly what the
same lines sent one by one as ``AgentLine`` events decide: the same commands in the same
order, the same counters and the same model (issue 15: the runner posts one event per
read, not one per line)."""

from __future__ import annotations

from scheduler.core.commands import Command
from scheduler.core.events import AgentLine, AgentOutput
from tests.scheduler.core.playbook import Playbook

CONF = """\
*/*\tinterval=1m
\texpiry=5d
\tretries="1 1 2 3"
\tmaxring=20
\toverfeed=150
smtp/*\tcommand="testta"
"""


def _setup() -> tuple[Playbook, int, list[str]]:
    """Five messages on one thread (two with three recipients there), a TA fed them."""
    pb = Playbook(CONF)
    for n in range(1, 6):
        rcpts = [
            ("smtp", "h.example", f"u{n}.{i}@h.example") for i in range(1 + 2 * (n % 2))
        ]
        pb.load(f"A/{n}", rcpts)
    (start,) = pb.starts(pb.commands)
    pb.started(start.proc)
    jobs = pb.jobs(pb.hungry(start.proc))  # LARVA: the first job alone
    jobs += pb.jobs(pb.hungry(start.proc))  # then a batch of the rest
    assert len(jobs) == 5
    return pb, start.proc, jobs


def _lines(pb: Playbook) -> list[str]:
    """What a TA may write in one read: finals of every kind, deferrals with and
    without a message, a notary, garbage, an unknown id, a resync, the #hungrys."""
    out: list[str] = []
    statuses = ["ok", "error", "deferred", "ok2", "error2"]
    k = 0
    for n in range(1, 6):
        msg = pb.sched.message(n)
        assert msg is not None
        (v,) = msg.vertices
        for off in list(v.offsets):
            status = statuses[k % len(statuses)]
            notary = (
                "u@h\x01failed\x015.0.0\x01smtp; 550 no" if status == "error" else ""
            )
            text = " try later" if status == "deferred" and k % 2 else ""
            out.append(f"{n}/{off}\t{notary}\t{status}{text}")
            k += 1
        out.append("#hungry")
    out[3:3] = ["garbage without tabs", "99/12\t\tok", "# a debug line", ""]
    return out


def _state(pb: Playbook) -> tuple[object, ...]:
    s = pb.sched
    threads: list[tuple[object, ...]] = []
    for th in s.threads():
        threads.append(
            (th.channel, th.host, th.jobs, th.rcpts, th.attempts, th.unfed, th.thrkids)
        )
        threads += [
            (v.path, tuple(v.offsets), v.attempts, v.state, v.message)
            for v in th.vertices()
        ]
    counters = {
        name: pb.counters.get(name)
        for name in (
            "SC.TransmittedRecipients",
            "SC.TransmittedMessages",
            "SC.StoredRecipients-G",
            "SC.StoredVertices-G",
            "SC.StoredMessages-G",
        )
    }
    return s.msgs, s.total_recipients, tuple(threads), tuple(sorted(counters.items()))


def test_one_read_as_one_event_decides_what_its_lines_decide() -> None:
    one, proc1, jobs1 = _setup()
    each, proc2, jobs2 = _setup()
    assert jobs1 == jobs2
    assert proc1 == proc2
    lines = _lines(one)
    assert lines == _lines(each)
    batched = one.send(AgentOutput(proc1, lines))
    single: list[Command] = []
    for line in lines:
        single += each.send(AgentLine(proc2, line))
    assert batched == single
    assert _state(one) == _state(each)
    one.check_counts()
    each.check_counts()
    assert one.completes(batched)  # the ok/error finals completed messages
    assert one.jobs(batched) == []  # every job was answered: nothing left to feed


def test_output_of_an_unknown_or_reaped_proc_is_ignored() -> None:
    pb, proc, _ = _setup()
    assert pb.send(AgentOutput(proc + 100, ["1/1\t\tok", "#hungry"])) == []
    pb.exited(proc)
    before = _state(pb)
    assert pb.send(AgentOutput(proc, ["#hungry"])) == []
    assert _state(pb) == before
