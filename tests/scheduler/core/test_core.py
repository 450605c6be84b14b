"""The decision core driven with a model clock: feeding, reports, limits, TA life, operations."""

from __future__ import annotations

from typing import Any

import pytest

from scheduler.config.clauses import parse_config
from scheduler.core.commands import ReloadMessage, RetireAgent, RunDsnPass
from scheduler.core.events import (
    AgentStartFailed,
    ConfigChanged,
    MessageLoaded,
    MessageReloaded,
    ShutdownRequested,
)
from scheduler.core.state import EXPIRY_SLICE
from spool.controlfile import parse
from spool.ids import spool_id
from tests.scheduler.core.playbook import START, Playbook, control_bytes

CONF = """\
*/*\tinterval=1m
\tidlemax=4m
\texpiry=5d
\texpiry2=2d
\tretries="1 1 2 3 5 8 13 21 34"
\tmaxring=20
\toverfeed=150

smtp/*\tmaxchannel=199 maxring=50 command="testta"
lim/*\tmaxchannel=1 command="testta"
ring/*\tmaxring=1 command="testta"
ta/*\tmaxta=1 command="testta"
of2/*\toverfeed=2 command="testta"
q/*\tqueueonly retries="1" command="testta"
wh/*\tcommand="testta $host"
par/*\tmaxthr=3 overfeed=0 command="testta"
age/*\tageorder command="testta"
nocmd/*\tinterval=5m
"""


def pb_(**kw: Any) -> Playbook:
    return Playbook(CONF, **kw)


def run_one(
    pb: Playbook, relpath: str, host: str = "h.example", channel: str = "smtp"
) -> int:
    """Load one message and bring its new TA to the first job; return the proc id."""
    cmds = pb.load(relpath, [(channel, host, f"u@{host}")])
    (start,) = pb.starts(cmds)
    pb.started(start.proc)
    assert pb.jobs(pb.hungry(start.proc)) == [f"{relpath}\t{host}"]
    return start.proc


# ---------------------------------------------------------------- loading


def test_vertices_threads_groups_built_from_a_control_file() -> None:
    pb = pb_()
    cmds = pb.load(
        "A/1",
        [
            ("SMTP", "B.example", "carol@b.example"),
            ("smtp", "a.example", "x@a.example"),
            ("smtp", "b.example", "dave@b.example"),
        ],
    )
    assert [s.host for s in pb.starts(cmds)] == ["a.example", "b.example"]
    s = pb.sched
    b = s.find_thread("smtp", "b.example")
    assert b is not None
    (v,) = list(b.vertices())
    # descending quad order: dave (line 3) before carol (line 1) (S49 keep)
    data = control_bytes("1", "sender@example.org", [("SMTP", "B.example", "c")])
    first_r = data.index(b"\nr") + 1
    assert list(v.offsets)[1] == first_r
    assert (b.jobs, b.rcpts, s.total_vertices, s.total_recipients, s.msgs) == (
        1,
        2,
        2,
        3,
        1,
    )
    assert v.path == "A/1"
    assert v.sender == "sender@example.org"
    assert v.expiry == START + 5 * 86400
    assert pb.counters.get("SC.ReceivedMessages") == 1
    assert pb.counters.get("SC.ReceivedRecipients") == 3
    pb.check_counts()


def test_done_recipients_are_ignored_and_all_done_completes_at_once() -> None:
    pb = pb_()
    data = control_bytes("7", "s@x", [("smtp", "h", "u@h")], status="+")
    cmds = pb.load("A/7", [], data=data)
    (done,) = pb.completes(cmds)
    assert (done.relpath, done.mid, done.dsn) == ("A/7", "7", False)
    assert pb.sched.msgs == 0
    assert pb.counters.get("SC.TransmittedMessages") == 1
    pb.check_counts()


def test_host_dash_is_the_normal_thread_local_dash() -> None:
    """Issue 12 item 1: ``local - user`` is the thread ``local/-`` (never bounced)."""
    pb = pb_()
    data = (
        b"@ 0x00000007\ni 5\nl <x>\ne a@b\ns local - a@b 0\n"
        b"r           local - root 65534\nm\nSubject: x\n\n"
    )
    cmds = pb.load("A/5", [], data=data)
    assert pb.marks(cmds) == []
    assert pb.diags(cmds) == []
    assert pb.completes(cmds) == []
    assert pb.sched.find_thread("local", "-") is not None
    pb.check_counts()


def test_uncuttable_host_is_queued_as_zmailer_queues_it() -> None:
    """An unclosed host list is queued, not bounced: alone in its file it names its
    vertex by the rest of the line, as ZMailer does (recorded: ``smtp/mx1 u@x 0``)."""
    pb = pb_()
    data = (
        b"@ 0x00000007\ni 5\nl <x>\ne a@b\ns local - a@b 0\n"
        b"r           smtp ((mx1 u@x 0\nm\nSubject: x\n\n"
    )
    cmds = pb.load("A/5", [], data=data)
    assert pb.marks(cmds) == []
    assert pb.diags(cmds) == []
    assert pb.completes(cmds) == []
    assert pb.sched.find_thread("smtp", "mx1 u@x 0") is not None


def test_unmatched_recipient_goes_to_the_fallback_clause() -> None:
    """S6 fix."""
    pb = pb_()
    pb.load("A/1", [("zzz", "h", "u@h")])
    th = pb.sched.find_thread("zzz", "h")
    assert th is not None
    assert th.pending == "ConfBUG:NoCmdDefined!"
    pb.load("A/2", [("nocmd", "h", "u@h")])
    th = pb.sched.find_thread("nocmd", "h")
    assert th is not None
    assert th.pending == "ConfBUG:NoCmdDefined!"
    assert pb.sched.kids == 0


def test_frozen_starts_nothing() -> None:
    pb = pb_(frozen=True)
    assert pb.starts(pb.load("A/1", [("smtp", "h", "u@h")])) == []
    th = pb.sched.find_thread("smtp", "h")
    assert th is not None
    assert th.pending == ""  # as ZMailer -F: no pend= until something tries to start it
    pb.advance(3600)
    assert pb.starts(pb.tick()) == []
    _, cmds = pb.sched.etrn("h", pb.now)
    assert pb.starts(cmds) == []
    assert th.pending == ""  # ZMailer's thread_start() returns before pend= under -F


def test_queueonly_waits_for_etrn_with_initial_wakeup_quirk() -> None:
    pb = pb_()
    assert pb.starts(pb.load("A/1", [("q", "Host.Example", "u@h")])) == []
    th = pb.sched.find_thread("q", "host.example")
    assert th is not None
    assert th.wakeup == START + 1  # S36: now + r[0] seconds
    pb.advance(3600)
    assert pb.starts(pb.tick()) == []
    n, cmds = pb.sched.etrn("HOST.example 1.2.3.4@x", pb.now)
    assert n == 1
    assert len(pb.starts(cmds)) == 1
    n, cmds = pb.sched.etrn("host.example", pb.now)
    assert (n, cmds) == (0, [])  # B17: a TA is attached
    assert pb.sched.etrn("unknown.example", pb.now) == (0, [])
    assert pb.sched.etrn("", pb.now) == (0, [])


def test_t_lines_run_etrn_lower_cased() -> None:
    pb = pb_()
    pb.load("A/1", [("q", "host.example", "u@h")])
    cmds = pb.send(
        MessageLoaded("9-etrn", parse(b"T HOST.example 1.2.3.4\n"), START, 0, START)
    )
    assert len(pb.starts(cmds)) == 1
    assert pb.sched.msgs == 1
    assert pb.counters.get("SC.ReceivedMessages") == 2


# ---------------------------------------------------------------- feeding


def test_overfeed_batches_of_overfeed_plus_one() -> None:
    """MQ2-REF 13.4 / correction 11: first job alone, then batches; ``OF={1} UF=3``."""
    pb = pb_()
    for i in range(7):
        cmds = pb.load(f"A/{i + 1}", [("of2", "h", f"u{i}@h")])
    (proc,) = {s.proc for s in pb.starts(pb.commands)}
    pb.started(proc)
    th = pb.sched.find_thread("of2", "h")
    assert th is not None
    (p,) = th.procs()
    assert (p.state_name, p.overfed, th.unfed) == ("LARVA", 1, 7)
    assert len(pb.jobs(pb.hungry(proc))) == 1
    assert (p.state_name, p.overfed, th.unfed) == ("STUFF", 1, 6)
    assert len(pb.jobs(pb.hungry(proc))) == 3
    assert p.overfed == 3
    assert pb.jobs(pb.hungry(proc, 2)) == []
    assert (p.overfed, th.unfed) == (1, 3)  # the recorded OF={1} UF=3
    assert len(pb.jobs(pb.hungry(proc))) == 3
    cmds = pb.hungry(proc, 3)
    assert pb.writes(cmds) == ["#idle\n"]
    assert (p.state_name, p.overfed) == ("IDLE", 1)
    pb.hungry(proc)
    assert th.procs() == []
    assert pb.sched.idle == 1
    assert pb.counters.get("SC.TransportAgentsIdle-G") == 1
    assert pb.counters.get("SC.TransportAgentsActive-G") == 0
    assert p.feedtime == START
    del cmds
    pb.check_counts()


def test_withhost_job_lines_and_group_per_host() -> None:
    pb = pb_()
    pb.load("A/1", [("wh", "a", "u@a"), ("wh", "b", "u@b")])
    groups = [g for g in pb.sched.groups() if g.clause_channel == "wh"]
    assert [(g.withhost, g.thread_count) for g in groups] == [(2, 1), (2, 1)]
    starts = pb.starts(pb.commands)
    assert starts[0].argv[-1] == "a"
    pb.started(starts[0].proc)
    assert pb.writes(pb.hungry(starts[0].proc)) == ["A/1\n"]


def test_ageorder_feeds_oldest_first() -> None:
    pb = pb_()
    for i, age in enumerate([50, 300, 10, 200]):
        pb.load(f"A/{i + 1}", [("age", "h", f"u{i}@h")], mtime=START - age)
    (start,) = pb.starts(pb.commands)
    pb.exited(start.proc, 1)  # the run ends at once; the next one sorts every vertex
    th = pb.sched.find_thread("age", "h")
    assert th is not None
    pb.at(th.wakeup)
    assert len(pb.starts(pb.tick())) == 1
    assert [v.path for v in th.vertices()] == ["A/2", "A/4", "A/1", "A/3"]


def test_thread_switching_inside_a_group_under_maxchannel() -> None:
    """One TA with maxchannel=1 serves h1 then h2 in the same run (SCHED-REF 4.4)."""
    pb = pb_()
    pb.load("A/1", [("lim", "h1", "u@h1")])
    pb.load("A/2", [("lim", "h2", "u@h2")])
    (start,) = pb.starts(pb.commands)
    h2 = pb.sched.find_thread("lim", "h2")
    assert h2 is not None
    assert h2.pending == ">MaxChannel"
    (v2,) = list(h2.vertices())
    assert v2.waiting_for == 2
    pb.started(start.proc)
    pb.hungry(start.proc)
    pb.line(start.proc, f"1/{pb.sched.message(1).vertices[0].offsets[0]}\t\tok")  # type: ignore[union-attr]
    cmds = pb.hungry(start.proc)
    assert pb.jobs(cmds) == ["A/2\th2"]
    assert v2.waiting_for == 0
    assert pb.sched.find_thread("lim", "h1") is None  # done and deleted
    pb.check_counts()


@pytest.mark.parametrize(
    ("channel", "reason", "waiting"),
    [("ring", ">MaxRing", 1), ("ta", ">MaxTA", 3), ("lim", ">MaxChannel", 2)],
)
def test_limits_give_pending_reasons(channel: str, reason: str, waiting: int) -> None:
    pb = pb_()
    pb.load("A/1", [(channel, "h1", "u@h1")])
    pb.load("A/2", [(channel, "h2", "u@h2")])
    assert len(pb.starts(pb.commands)) == 1
    th = pb.sched.find_thread(channel, "h2")
    assert th is not None
    assert th.pending == reason
    assert th.first_vertex().waiting_for == waiting  # type: ignore[union-attr]
    assert pb.sched.kids == 1
    # retried at the next tick, still refused, no busy loop
    pb.tick()
    nw = pb.sched.next_wakeup()
    assert nw is not None
    assert nw > pb.now


def test_maxthr_starts_several_tas_on_one_thread() -> None:
    pb = pb_()
    for i in range(5):
        pb.load(f"A/{i + 1}", [("par", "h", f"u{i}@h")])
    assert len(pb.starts(pb.commands)) == 3
    th = pb.sched.find_thread("par", "h")
    assert th is not None
    assert th.thrkids == 3


# ---------------------------------------------------------------- reports


def rcpt_offset(pb: Playbook, number: int, index: int = 0, vertex: int = 0) -> int:
    msg = pb.sched.message(number)
    assert msg is not None
    return msg.vertices[vertex].offsets[index]


def test_ok_removes_recipient_and_completes_the_message() -> None:
    pb = pb_()
    proc = run_one(pb, "A/1")
    off = rcpt_offset(pb, 1)
    cmds = pb.line(
        proc, f"1/{off}\tu@h\x01delivered\x012.0.0\x01smtp; 250 ok\x01h\tok fine"
    )
    assert pb.diags(cmds) == []  # NOTIFY=FAILURE only
    (done,) = pb.completes(cmds)
    assert done.dsn is False
    (stat,) = pb.stats(cmds)
    assert stat == f"{spool_id(1, START)} 0 0 ok smtp/h.example"
    assert pb.counters.get("SC.TransmittedRecipients") == 1
    assert pb.counters.get("SC.TransmittedMessages") == 1
    assert pb.sched.msgs == 0
    assert pb.writes(pb.hungry(proc)) == ["#idle\n"]
    pb.check_counts()


def test_each_recipients_own_notify_decides_its_d_line() -> None:
    """S54 fix: a NOTIFY=NEVER recipient sorting first does not hide the other's bounce."""
    pb = pb_()
    cmds = pb.load(
        "A/1",
        [("smtp", "h", "a@h", "NOTIFY=FAILURE"), ("smtp", "h", "b@h", "NOTIFY=NEVER")],
    )
    (start,) = pb.starts(cmds)
    pb.started(start.proc)
    pb.hungry(start.proc)
    b_off, a_off = rcpt_offset(pb, 1, 0), rcpt_offset(pb, 1, 1)
    assert b_off > a_off
    cmds = pb.line(start.proc, f"1/{b_off}\tb@h\x01failed\x015.1.1\x01x\x01h\terror no")
    assert pb.diags(cmds) == []
    cmds = pb.line(start.proc, f"1/{a_off}\ta@h\x01failed\x015.1.1\x01x\x01h\terror")
    (d,) = pb.diags(cmds)
    assert d.startswith(f"d {a_off}:")
    assert d.endswith(f"::{START}\ta@h\x01failed\x015.1.1\x01x\x01h\t(unknown)\n")
    assert pb.completes(cmds)[0].dsn is True


def test_ok_with_notify_success_writes_a_d_line() -> None:
    pb = pb_()
    (start,) = pb.starts(
        pb.load("A/1", [("smtp", "h", "a@h", "NOTIFY=SUCCESS,FAILURE")])
    )
    pb.started(start.proc)
    pb.hungry(start.proc)
    cmds = pb.line(start.proc, f"1/{rcpt_offset(pb, 1)}\tn\tok done")
    assert len(pb.diags(cmds)) == 1
    assert pb.completes(cmds)[0].dsn is True


def test_ok2_ok3_error2_write_nothing_but_count() -> None:
    pb = pb_()
    (start,) = pb.starts(
        pb.load(
            "A/1", [("smtp", "h", "a@h"), ("smtp", "h", "b@h"), ("smtp", "h", "c@h")]
        )
    )
    pb.started(start.proc)
    pb.hungry(start.proc)
    offs = list(pb.sched.message(1).vertices[0].offsets)  # type: ignore[union-attr]
    cmds = pb.line(start.proc, f"1/{offs[0]}\t\tok2")
    cmds += pb.line(start.proc, f"1/{offs[1]}\t\tok3")
    cmds += pb.line(start.proc, f"1/{offs[2]}\t\terror2")
    assert pb.diags(cmds) == []
    assert [s.split()[3] for s in pb.stats(cmds)] == ["ok2", "ok3", "error2"]
    assert pb.completes(cmds)[0].dsn is True  # error2: the TA wrote a d line
    assert pb.counters.get("SC.TransmittedRecipients") == 3


def test_deferral_sets_message_wakeup_and_attempts() -> None:
    pb = pb_()
    proc = run_one(pb, "A/1")
    th = pb.sched.find_thread("smtp", "h.example")
    assert th is not None
    pb.line(
        proc,
        f"1/{rcpt_offset(pb, 1)}\tx\x01delayed\x014.0.0\x01d\x01h\tdeferred no route\rline2",
    )
    (v,) = list(th.vertices())
    assert (v.attempts, th.attempts, v.message) == (1, 1, "no route\rline2")
    # a fresh thread (wakeup 0): as ZMailer's reschedule(), 10 s after the boundary
    # r[0] - 1 = 0 intervals before the next one; START is on a boundary, so that is
    # 10 s ahead (fixtures/first_deferral/real-p03.txt: W=7s after a run at :03)
    assert th.wakeup == START + 10
    assert pb.writes(pb.hungry(proc)) == ["#idle\n"]
    pb.hungry(proc)
    assert th.wakeup == START + 10  # the run's first deferral decided
    assert pb.sched.next_wakeup() == START  # the first sweeps
    pb.tick()
    assert pb.sched.next_wakeup() == START + 10
    pb.at(START + 10)
    cmds = pb.tick()
    assert pb.starts(cmds) == []  # the idle TA is reused and fed at once
    assert pb.jobs(cmds) == ["A/1\th.example"]
    pb.check_counts()


def test_arrival_during_backoff_starts_the_thread_without_moving_wakeup() -> None:
    """S34 keep / 4.10."""
    pb = pb_()
    proc = run_one(pb, "A/1")
    pb.line(proc, f"1/{rcpt_offset(pb, 1)}\t\tdeferred")
    pb.hungry(proc, 2)
    th = pb.sched.find_thread("smtp", "h.example")
    assert th is not None
    w = th.wakeup
    assert w == START + 10  # a fresh thread's first deferral early in a minute
    pb.advance(5)  # still in the backoff
    cmds = pb.load("A/2", [("smtp", "h.example", "v@h.example")])
    assert sorted(pb.jobs(cmds)) == ["A/1\th.example"] or len(pb.jobs(cmds)) == 1
    pb.hungry(proc)
    first = pb.jobs(cmds)[0].split("\t")[0]
    number = int(first.split("/")[1])
    pb.line(proc, f"{number}/{rcpt_offset(pb, number)}\t\tdeferred")
    assert th.wakeup == w


def test_retryat_is_a_lower_bound_and_moves_the_ta_to_finish() -> None:
    pb = pb_()
    pb.load("A/1", [("of2", "h", "a@h")])
    pb.load("A/2", [("of2", "h", "b@h")])
    (start,) = pb.starts(pb.commands)
    pb.started(start.proc)
    job = pb.jobs(pb.hungry(start.proc))[0]
    n = int(job.split("\t")[0].split("/")[1])
    pb.line(start.proc, f"{n}/{rcpt_offset(pb, n)}\t\tretryat +3600 busy")
    th = pb.sched.find_thread("of2", "h")
    assert th is not None
    (p,) = th.procs()
    assert p.state_name == "FINISH"
    assert pb.writes(pb.hungry(start.proc)) == ["#idle\n"]
    pb.hungry(start.proc)
    assert th.wakeup == START + 3600
    v = next(v for v in th.vertices() if v.msg.number == n)
    assert v.message == "busy"


def test_retryat_without_argument_is_a_deferral() -> None:
    """T2 fix."""
    pb = pb_()
    proc = run_one(pb, "A/1")
    pb.line(proc, f"1/{rcpt_offset(pb, 1)}\t\tretryat")
    th = pb.sched.find_thread("smtp", "h.example")
    assert th is not None
    assert th.wakeup == START + 10  # as a fresh thread's first "deferred"


def test_deferall_counts_one_thread_attempt_and_marks_the_rest() -> None:
    pb = pb_()
    for i in range(3):
        pb.load(f"A/{i + 1}", [("smtp", "h", f"u{i}@h")])
    (start,) = pb.starts(pb.commands)
    pb.started(start.proc)
    job = pb.jobs(pb.hungry(start.proc))[0]
    n = int(job.split("\t")[0].split("/")[1])
    pb.line(start.proc, f"{n}/{rcpt_offset(pb, n)}\t\tdeferall connection refused")
    th = pb.sched.find_thread("smtp", "h")
    assert th is not None
    assert th.attempts == 1
    assert [v.attempts for v in th.vertices()] == [1, 1, 1]
    assert {v.message for v in th.vertices()} == {"connection refused"}
    assert pb.writes(pb.hungry(start.proc)) == ["#idle\n"]  # FINISH: nothing more fed


def test_unknown_status_counts_an_attempt_only() -> None:
    pb = pb_()
    proc = run_one(pb, "A/1")
    pb.line(proc, f"1/{rcpt_offset(pb, 1)}\t\tbogus whatever")
    th = pb.sched.find_thread("smtp", "h.example")
    assert th is not None
    assert (th.attempts, th.rcpts) == (1, 1)


def test_garbage_lines_and_unknown_ids_are_ignored() -> None:
    pb = pb_()
    proc = run_one(pb, "A/1")
    for line in ["garbage", "1x/3\t\tok", "99/1\t\tok", f"1/{rcpt_offset(pb, 1) + 1}\t\tok",
                 "#resync", "# debug text", "", "1/2"]:  # fmt: skip
        assert pb.line(proc, line) == []
    th = pb.sched.find_thread("smtp", "h.example")
    assert th is not None
    assert (th.attempts, th.rcpts) == (0, 1)
    assert pb.line(999, "#hungry") == []


def test_resync_reloads_and_keeps_only_pending_recipients() -> None:
    pb = pb_()
    cmds = pb.load("A/1", [("smtp", "h", "a@h"), ("smtp", "h", "b@h")])
    (start,) = pb.starts(cmds)
    assert pb.line(start.proc, "#resync A/1") == [ReloadMessage("A/1")]
    rcpts = [("smtp", "h", "a@h"), ("smtp", "h", "b@h")]
    data = bytearray(control_bytes("1", "sender@example.org", rcpts))
    first = data.index(b"\nr") + 1
    data[first + 1] = ord("+")
    pb.send(MessageReloaded("A/1", parse(bytes(data)), START, 0))
    th = pb.sched.find_thread("smtp", "h")
    assert th is not None
    (v,) = list(th.vertices())
    assert first not in list(v.offsets)
    assert th.rcpts == 1
    assert pb.counters.get("SC.ReceivedRecipients") == 3  # S30 keep
    pb.check_counts()


# ---------------------------------------------------------------- TA life


def test_ta_death_returns_fed_vertices_without_counting_attempts() -> None:
    pb = pb_()
    for i in range(3):
        pb.load(f"A/{i + 1}", [("smtp", "h", f"u{i}@h")])
    (start,) = pb.starts(pb.commands)
    pb.started(start.proc)
    pb.hungry(start.proc, 2)  # 1 job, then a batch of the other 2
    cmds = pb.exited(start.proc, -9)
    assert pb.starts(cmds) == []
    th = pb.sched.find_thread("smtp", "h")
    assert th is not None
    assert (th.jobs, th.attempts, th.thrkids, pb.sched.kids) == (3, 0, 0, 0)
    assert all(v.state == 0 for v in th.vertices())
    assert th.wakeup > pb.now  # no fork loop
    pb.at(th.wakeup)
    (again,) = pb.starts(pb.tick())
    pb.started(again.proc)
    assert len(pb.jobs(pb.hungry(again.proc, 2))) == 3
    assert pb.counters.get("SC.TransportAgentProcesses-G") == 1
    pb.check_counts()


def test_start_failure_sets_fork_failure() -> None:
    pb = pb_()
    (start,) = pb.starts(pb.load("A/1", [("smtp", "h", "u@h")]))
    pb.send(AgentStartFailed(start.proc, "exec failed"))
    th = pb.sched.find_thread("smtp", "h")
    assert th is not None
    assert th.pending == "System:ForkFailure!"
    assert pb.sched.kids == 0
    assert th.wakeup > pb.now


def test_idle_ta_retired_after_idlemax() -> None:
    pb = pb_()
    proc = run_one(pb, "A/1")
    pb.line(proc, f"1/{rcpt_offset(pb, 1)}\t\tok")
    pb.hungry(proc, 2)
    assert pb.sched.idle == 1
    pb.tick()  # first sweep at start: too young
    pb.advance(240)
    assert pb.retires(pb.tick()) == [proc]
    pb.exited(proc)
    assert (pb.sched.kids, pb.sched.idle) == (0, 0)
    assert list(pb.sched.groups()) == []  # no threads, no TAs: deleted at the TA's exit


def test_ta_never_answering_idle_is_retired() -> None:
    pb = pb_()
    proc = run_one(pb, "A/1")
    pb.line(proc, f"1/{rcpt_offset(pb, 1)}\t\tdeferred")
    assert pb.writes(pb.hungry(proc)) == ["#idle\n"]
    pb.advance(600)
    assert proc in pb.retires(pb.tick())


def test_shutdown_retires_every_ta_and_starts_nothing() -> None:
    pb = pb_()
    run_one(pb, "A/1")
    pb.load("A/2", [("q", "x", "u@x")])
    cmds = pb.send(ShutdownRequested())
    assert [type(c) for c in cmds] == [RetireAgent]
    assert pb.starts(pb.load("A/3", [("smtp", "other", "u@other")])) == []
    assert pb.sched.etrn("x", pb.now)[0] == 0


# ---------------------------------------------------------------- expiry


def test_expiry_on_deferral_expires_the_whole_vertex() -> None:
    """S20/S21/S23: checked against the next wakeup; all recipients of the vertex go."""
    pb = pb_()
    old = START - 5 * 86400 + 5  # expires between now and the next wakeup (START + 10)
    cmds = pb.load("A/1", [("smtp", "h", "a@h"), ("smtp", "h", "b@h")], mtime=old)
    (start,) = pb.starts(cmds)
    pb.started(start.proc)
    pb.hungry(start.proc)
    off0, off1 = rcpt_offset(pb, 1, 0), rcpt_offset(pb, 1, 1)
    cmds = pb.line(
        start.proc,
        f"1/{off0}\tx\x01delayed\x014.4.1\x01smtp; 400 x\x01mx\tdeferred busy",
    )
    (d,) = pb.diags(cmds)
    assert d.startswith(f"d {off0}:")
    assert "\x03\x01failed\x015.4.7\x01smtp; 400 x\x01mx\t" in d
    assert d.endswith(
        "\texpired after 5 days, problem was:\rbusy\n".replace("\t", "\t\r", 1)
    )
    assert pb.marks(cmds) == [("A/1", off0, "-")]
    assert pb.completes(cmds) == []
    cmds = pb.hungry(start.proc)  # the job ends: the unreported sibling expires too
    assert pb.marks(cmds) == [("A/1", off1, "-")]
    (done,) = pb.completes(cmds)
    assert done.dsn is True
    assert pb.counters.get("SC.TransmittedRecipients") == 2
    assert [s.split()[3] for s in pb.stats(pb.commands)] == ["expire", "expire"]


def test_expiry2_sweep_expires_unattempted_queueonly_messages() -> None:
    pb = pb_()
    pb.load("A/1", [("q", "h", "u@h")], mtime=START - 7 * 86400 - 1)
    cmds = pb.tick()
    assert len(pb.diags(cmds)) == 1
    assert len(pb.completes(cmds)) == 1


def test_expiry_sweep_boundaries() -> None:
    """The sweep expires an attempted vertex at exactly mtime + expiry, and any vertex
    at exactly mtime + expiry + expiry2, not a second earlier."""
    pb = pb_()
    e, e2 = 5 * 86400, 7 * 86400
    pb.load("A/1", [("q", "h1", "u@h1")], mtime=START - e2)  # expiry2 due
    pb.load("A/2", [("q", "h2", "u@h2")], mtime=START - e2 + 1)  # a second early
    pb.load("A/3", [("q", "h3", "u@h3")], mtime=START - e)  # due, attempted
    pb.load("A/4", [("q", "h4", "u@h4")], mtime=START - e)  # due, never attempted
    pb.load("A/5", [("q", "h5", "u@h5")], mtime=START - e + 1)  # attempted, early
    for n in (3, 5):
        pb.sched._messages[n].vertices[0].attempts = 1
    cmds = pb.tick()
    assert sorted(c.relpath for c in pb.completes(cmds)) == ["A/1", "A/3"]
    assert pb.sched.msgs == 3


def test_expiry_sweep_of_a_big_queue_is_spread_over_ticks() -> None:
    """The sweep looks at EXPIRY_SLICE vertices per tick and asks for the next tick at
    once, so the event loop is never held for the whole queue; in the end every due
    vertex is expired, and a thread gone meanwhile is passed over."""
    pb = pb_()
    n = EXPIRY_SLICE + EXPIRY_SLICE // 2  # one vertex per thread: two slices
    old = START - 7 * 86400 - 1
    for i in range(n):
        pb.load(f"A/{i + 1}", [("q", f"h{i}", f"u@h{i}")], mtime=old)
    first = pb.tick()
    assert len(pb.completes(first)) == EXPIRY_SLICE
    assert pb.sched.next_wakeup() == pb.now  # the sweep goes on
    gone = pb.sched.find_thread("q", f"h{n - 1}")
    assert gone is not None
    ok, _ = pb.sched.kill_msg(str(n), pb.now)  # the walk's last thread leaves
    assert ok
    assert not gone.alive
    rest = pb.tick()
    assert len(pb.completes(rest)) == n - EXPIRY_SLICE - 1
    assert pb.sched.msgs == 0
    assert pb.sched.next_wakeup() is None  # done, nothing left to sweep


def test_interim_report_sweep_runs_dsn_passes() -> None:
    pb = pb_()
    (start, _) = pb.starts(
        pb.load("A/1", [("smtp", "h", "a@h"), ("smtp", "h2", "b@h2")])
    )
    pb.started(start.proc)
    pb.hungry(start.proc)
    pb.line(start.proc, f"1/{rcpt_offset(pb, 1)}\t\terror no")
    pb.advance(300)
    cmds = pb.tick()
    assert [c for c in cmds if isinstance(c, RunDsnPass)] == [RunDsnPass("A/1")]


# ---------------------------------------------------------------- operations


def test_kill_msg_idle_message_completes_silently() -> None:
    pb = pb_()
    pb.load("A/1", [("q", "h", "u@h"), ("q", "h2", "v@h2")])
    ok, cmds = pb.sched.kill_msg("1", pb.now)
    assert ok
    assert [type(c).__name__ for c in cmds] == ["CompleteMessage"]
    assert pb.counters.get("SC.TransmittedMessages") == 1
    assert pb.counters.get("SC.TransmittedRecipients") == 0
    assert pb.sched.msgs == 0
    assert pb.sched.kill_msg("1", pb.now) == (False, [])
    pb.check_counts()


def test_kill_msg_by_spool_id_waits_for_the_ta() -> None:
    """B4 decision: never unlink under a running TA."""
    pb = pb_()
    proc = run_one(pb, "A/1")
    off = rcpt_offset(pb, 1)
    ok, cmds = pb.sched.kill_msg(spool_id(1, START), pb.now)
    assert ok
    assert cmds == []
    assert pb.sched.is_loaded(1)
    cmds = pb.line(proc, f"1/{off}\t\tdeferred")
    assert cmds == []
    cmds = pb.hungry(proc)
    (done,) = pb.completes(cmds)
    assert done.dsn is False
    assert not pb.sched.is_loaded(1)
    pb.check_counts()


def test_kill_thread_returns_recipients_removed() -> None:
    pb = pb_()
    pb.load("A/1", [("q", "h", "u@h"), ("q", "h", "v@h"), ("q", "other", "w@o")])
    pb.load("A/2", [("q", "h", "x@h")])
    n, cmds = pb.sched.kill_thread("q", "h", pb.now)
    assert n == 3
    assert [c.relpath for c in pb.completes(cmds)] == ["A/2"]
    assert pb.sched.find_thread("q", "h") is None
    assert pb.sched.is_loaded(1)
    pb.check_counts()


def test_requeue_reloads_with_attempts_reset() -> None:
    pb = pb_()
    proc = run_one(pb, "A/1")
    pb.line(proc, f"1/{rcpt_offset(pb, 1)}\t\tdeferred")
    ok, cmds = pb.sched.requeue_msg("1", pb.now)
    assert (ok, cmds) == (True, [])  # held by the TA
    cmds = pb.hungry(proc)
    assert ReloadMessage("A/1") in cmds
    assert not pb.sched.is_loaded(1)
    data = control_bytes(
        "1", "sender@example.org", [("smtp", "h.example", "u@h.example")]
    )
    pb.send(MessageReloaded("A/1", parse(data), START, 0))
    th = pb.sched.find_thread("smtp", "h.example")
    assert th is not None
    assert [v.attempts for v in th.vertices()] == [0]
    assert pb.sched.requeue_msg("nope", pb.now) == (False, [])
    pb.check_counts()


def test_config_change_carries_threads_and_moves_others() -> None:
    pb = pb_()
    proc = run_one(pb, "A/1")
    pb.line(proc, f"1/{rcpt_offset(pb, 1)}\t\tdeferred")
    pb.hungry(proc, 2)
    pb.load("A/2", [("q", "h", "u@h")])
    th = pb.sched.find_thread("smtp", "h.example")
    assert th is not None
    w = th.wakeup
    new = CONF.replace(
        'q/*\tqueueonly retries="1" command="testta"', 'q/h\tcommand="testta"'
    )
    cmds = pb.send(ConfigChanged(parse_config(new, "new.conf")))
    assert pb.sched.find_thread("smtp", "h.example") is th
    assert th.wakeup == w
    q = pb.sched.find_thread("q", "h")
    assert q is not None
    assert q.group.clause.selector == "q/h"
    assert cmds == []
    pb.check_counts()


def test_config_change_reaches_a_group_with_only_idle_agents() -> None:
    # A group whose threads are all gone keeps its idle TAs; a reload that makes its
    # clause queue-only must apply to mail arriving afterwards (it kept the old clause).
    pb = pb_()
    proc = run_one(pb, "A/1")
    pb.line(proc, f"1/{rcpt_offset(pb, 1)}\t\tok")
    assert pb.writes(pb.hungry(proc)) == ["#idle\n"]
    pb.hungry(proc)
    assert pb.sched.find_thread("smtp", "h.example") is None
    assert pb.sched.idle == 1
    new = CONF.replace(
        'smtp/*\tmaxchannel=199 maxring=50 command="testta"',
        'smtp/*\tmaxchannel=199 maxring=50 queueonly command="testta"',
    )
    pb.send(ConfigChanged(parse_config(new, "new.conf")))
    cmds = pb.load("A/2", [("smtp", "h.example", "v@h.example")])
    assert pb.starts(cmds) == []
    assert pb.writes(cmds) == []
    th = pb.sched.find_thread("smtp", "h.example")
    assert th is not None
    assert th.group.clause.queueonly
    pb.check_counts()


def test_obsoletes_line_drops_the_named_message_of_the_same_sender() -> None:
    """Issue 12: ``x <spool-id>`` drops that message, as ZMailer's scheduler does, only
    by exact spool-id and only with the same sender."""
    pb = pb_()
    pb.load("A/1", [("smtp", "h", "u@h")])
    sid = pb.sched._spool_id(pb.sched._messages[1])
    other = control_bytes("3", "x@y", [("smtp", "h3", "u@h")])
    pb.load("A/3", [], data=other.replace(b"m\n", f"x {sid}\nm\n".encode(), 1))
    assert pb.sched.find_thread("smtp", "h") is not None  # another sender: kept
    data = control_bytes("2", "sender@example.org", [("smtp", "h2", "u@h")])
    cmds = pb.load("A/2", [], data=data.replace(b"m\n", b"x 1\nm\n", 1))
    assert pb.completes(cmds) == []  # a file name is not a spool-id
    cmds = pb.load("A/4", [], data=data.replace(b"m\n", f"x {sid}\nm\n".encode(), 1))
    assert [c.relpath for c in pb.completes(cmds)] == ["A/1"]
    th = pb.sched.find_thread("smtp", "h")
    assert th is None or list(th.vertices()) == []
