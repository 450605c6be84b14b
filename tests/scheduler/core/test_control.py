"""Operator control in the core: holds park vertices out of their threads, rules keep
threads from starting, selection by filter, retry and bounce."""

from __future__ import annotations

import sys
from typing import Any

from hypothesis import given, settings, strategies as st

from scheduler.core.commands import AppendDiagnostic, MarkRecipient
from scheduler.core.control import Rule
from scheduler.core.events import MessageGone
from scheduler.core.model import Message
from spool.filters import parse_filter
from spool.ids import spool_id
from tests.scheduler.core.playbook import START, Playbook
from tests.scheduler.core.test_core import CONF, rcpt_offset, run_one


def pb_(**kw: Any) -> Playbook:
    return Playbook(CONF, **kw)


def _msg(pb: Playbook, number: int) -> Message:
    msg = pb.sched.message(number)
    assert msg is not None
    return msg


def _recount(pb: Playbook) -> None:
    """Thread counts equal a recount; totals exclude parked (held) vertices."""
    s = pb.sched
    nv = nr = 0
    for th in s.threads():
        vs = list(th.vertices())
        assert th.jobs == len(vs)
        assert th.rcpts == sum(len(v.offsets) for v in vs)
        nv += len(vs)
        nr += th.rcpts
    pb.check_shape()  # SHOW QUEUE SHAPE's kept histograms equal a walk
    # held mail by destination (the reports' pend=Held threads) equals a recount
    held: dict[tuple[str, str], list[int]] = {}
    for number, info in s.held_numbers().items():
        assert s.message(number) is not None  # no hold outlives its message
        for v, channel, host in info.destinations():
            got = held.setdefault((channel, host), [0, 0])
            got[0] += 1
            got[1] += len(v.offsets)
    shown = {(h.channel, h.host): [h.jobs, h.rcpts] for h in s.held_threads()}
    assert shown == held
    for h in s.held_threads():
        assert sum(len(v.offsets) for v in h.vertices()) == h.rcpts
    assert s.total_vertices == nv
    assert s.total_recipients == nr


def test_hold_parks_every_vertex_and_release_links_them_again() -> None:
    pb = pb_()
    pb.load("A/1", [("q", "h", "u@h"), ("q", "h2", "v@h2")])
    pb.load("A/2", [("q", "h", "x@h")])
    done, cmds = pb.sched.hold([_msg(pb, 1)], "legal", "O1", pb.now)
    assert [m.number for m in done] == [1]
    assert cmds == []
    assert pb.sched.find_thread("q", "h2") is None  # its only vertex is parked
    th = pb.sched.find_thread("q", "h")
    assert th is not None
    assert th.jobs == 1
    _recount(pb)
    # holding twice does nothing
    assert pb.sched.hold([_msg(pb, 1)], "again", "O2", pb.now)[0] == []
    info = pb.sched.hold_info(1)
    assert info is not None
    assert (info.reason, info.op, info.sid) == ("legal", "O1", spool_id(1, START))
    released, _ = pb.sched.release([_msg(pb, 1)], pb.now)
    assert [m.number for m in released] == [1]
    assert pb.sched.hold_info(1) is None
    th2 = pb.sched.find_thread("q", "h2")
    assert th2 is not None
    assert th2.jobs == 1
    _recount(pb)
    pb.check_counts()


def test_a_held_message_is_never_fed() -> None:
    pb = pb_()
    (start,) = pb.starts(pb.load("A/1", [("smtp", "h.example", "u@h.example")]))
    pb.sched.hold([_msg(pb, 1)], "x", "O1", pb.now)
    pb.started(start.proc)
    assert pb.jobs(pb.hungry(start.proc)) == []  # the TA gets nothing: it idles
    cmds = pb.advance(60).tick()
    assert pb.starts(cmds) == []
    _, cmds = pb.sched.release([_msg(pb, 1)], pb.now)
    cmds += pb.hungry(start.proc)  # the TA answers its #idle and joins the idle pool
    cmds += pb.advance(61).tick()  # the idle TA is reused for the thread and fed
    assert pb.jobs(cmds) == ["A/1\th.example"]


def test_a_fed_vertex_is_parked_when_its_job_ends() -> None:
    pb = pb_()
    proc = run_one(pb, "A/1")
    done, _ = pb.sched.hold([_msg(pb, 1)], "x", "O1", pb.now)
    assert done  # held, but the TA keeps its job until it answers
    th = pb.sched.find_thread("smtp", "h.example")
    assert th is not None
    assert th.jobs == 1
    off = rcpt_offset(pb, 1)
    pb.line(proc, f"1/{off}\t\tdeferred")
    pb.hungry(proc)
    assert pb.sched.hold_info(1) is not None
    assert all(v.thread is None for v in _msg(pb, 1).vertices)
    _recount(pb)


def test_holds_restored_before_or_after_loading() -> None:
    pb = pb_()
    sid = spool_id(1, START)
    pb.sched.restore_holds([(sid, START, "O9", "restored")])
    pb.load("A/1", [("q", "h", "u@h")])
    assert pb.sched.find_thread("q", "h") is None
    pb.load("A/2", [("q", "h", "v@h")])
    pb.sched.restore_holds([(spool_id(2, START), START, "O9", "late")])
    assert pb.sched.find_thread("q", "h") is None
    # a reused file name with another mtime is not held
    pb2 = pb_()
    pb2.sched.restore_holds([(spool_id(1, START - 5), START, "O9", "old")])
    pb2.load("A/1", [("q", "h", "u@h")])
    assert pb2.sched.find_thread("q", "h") is not None
    assert pb2.sched.hold_info(1) is None


def test_kill_msg_of_a_held_message_and_by_path() -> None:
    pb = pb_()
    pb.load("A/1", [("q", "h", "u@h")])
    pb.sched.hold([_msg(pb, 1)], "x", "O1", pb.now)
    ok, cmds = pb.sched.kill_msg("A/1", pb.now)
    assert ok
    assert [type(c).__name__ for c in cmds] == ["CompleteMessage"]
    assert pb.sched.hold_info(1) is None
    assert pb.sched.msgs == 0


def test_suspension_keeps_threads_from_starting_until_lifted() -> None:
    pb = pb_()
    pb.sched.set_rules(
        [Rule("R1", "suspend", "smtp", "*.example", reason="remote asked")], pb.now
    )
    cmds = pb.load("A/1", [("smtp", "a.example", "u@a.example")])
    cmds += pb.advance(30).tick()
    assert pb.starts(cmds) == []
    th = pb.sched.find_thread("smtp", "a.example")
    assert th is not None
    assert th.pending == "Suspended:remote_asked"
    cmds = pb.sched.set_rules([], pb.now)
    cmds += pb.advance(1).tick()
    assert len(pb.starts(cmds)) == 1


def test_policy_maxthr_and_rate() -> None:
    pb = pb_()
    pb.sched.set_rules([Rule("P1", "policy", "par", "*", maxthr=1)], pb.now)
    cmds = pb.load("A/1", [("par", "h", "u@h")])
    for i in range(2, 6):
        cmds += pb.load(f"A/{i}", [("par", "h", f"u{i}@h")])
    cmds += pb.advance(1).tick()
    assert len(pb.starts(cmds)) == 1  # the clause allows 3
    pb2 = pb_()
    pb2.sched.set_rules([Rule("P2", "policy", "smtp", "*", rate=1, period=60)], pb2.now)
    cmds = pb2.load("A/1", [("smtp", "a.example", "u@a.example")])
    cmds += pb2.load("A/2", [("smtp", "b.example", "u@b.example")])
    cmds += pb2.advance(1).tick()
    assert len(pb2.starts(cmds)) == 2  # one token per thread to begin with
    th = pb2.sched.find_thread("smtp", "a.example")
    assert th is not None
    assert pb2.sched.rule_for(th, "policy") is not None


def test_select_by_filter() -> None:
    pb = pb_()
    pb.load(
        "A/1", [("q", "a.example", "u@a.example"), ("q", "b.example", "v@b.example")]
    )
    pb.load("A/2", [("q", "b.example", "w@b.example")], sender="x@other.org")
    pb.load("A/3", [("smtp", "c.example", "z@c.example")])

    def numbers(text: str) -> list[int]:
        return sorted(
            m.number
            for m in pb.sched.select(parse_filter(text), pb.now)
            if m is not None
        )

    assert numbers("host=b.example") == [1, 2]
    assert numbers("channel=q host!=a.example") == [1, 2]
    assert numbers("sender=*@other.org") == [2]
    assert numbers("state=queued") == [1, 2, 3]
    assert numbers("id=A/3") == [3]
    pb.sched.hold([_msg(pb, 2)], "x", "O1", pb.now)
    assert numbers("state=held") == [2]
    assert numbers("host=b.example") == [1, 2]  # parked vertices are found too
    assert numbers("age<1m") == [1, 2, 3]
    assert numbers("age>1h") == []
    assert numbers("rcpt=*@b.example") == []  # no address reader given


def test_bounce_fails_pending_recipients_with_a_diagnostic() -> None:
    pb = pb_()
    pb.load("A/1", [("q", "h", "u@h"), ("q", "h2", "v@h2")])
    n, cmds = pb.sched.bounce([_msg(pb, 1)], "cancelled", pb.now)
    assert n == 2
    assert len([c for c in cmds if isinstance(c, AppendDiagnostic)]) == 2
    assert {c.status for c in cmds if isinstance(c, MarkRecipient)} == {"-"}
    assert b"cancelled" in next(c for c in cmds if isinstance(c, AppendDiagnostic)).line
    pb.check_counts()


def test_retry_at_moves_the_thread() -> None:
    pb = pb_()
    pb.load("A/1", [("q", "h", "u@h")])
    threads, _ = pb.sched.retry([_msg(pb, 1)], pb.now + 600, pb.now)
    assert threads == 1
    th = pb.sched.find_thread("q", "h")
    assert th is not None
    assert th.wakeup == pb.now + 600


@given(
    st.lists(
        st.tuples(
            st.sampled_from(["hold", "release", "kill", "bounce", "gone"]),
            st.integers(1, 6),
        ),
        max_size=30,
    )
)
@settings(max_examples=60, deadline=None)
def test_any_hold_release_kill_sequence_keeps_the_counts(
    ops: list[tuple[str, int]],
) -> None:
    pb = pb_()
    for n in range(1, 7):
        pb.load(
            f"A/{n}",
            [("q", f"h{n % 3}", f"u{n}@h"), ("q", "x", f"v{n}@x")],
            mtime=pb.now - 60 * n,
        )
    for op, n in ops:
        msg = pb.sched.message(n)
        if msg is None:
            continue
        if op == "hold":
            pb.sched.hold([msg], "p", "O1", pb.now)
        elif op == "release":
            pb.sched.release([msg], pb.now)
        elif op == "bounce":
            pb.sched.bounce([msg], "r", pb.now)
        elif op == "gone":  # the file went away (a held one too)
            pb.send(MessageGone(f"A/{n}", "test"))
            assert pb.sched.message(n) is None  # held or not, it leaves
        else:
            pb.sched.kill_msg(str(n), pb.now)
        _recount(pb)
    pb.sched.release(list(pb.sched.messages()), pb.now)
    assert pb.sched.held_numbers() == {}
    pb.check_counts()


def test_rcpt_globs_with_a_literal_part_take_candidates_from_the_index() -> None:
    """The index yields only messages whose keys match; the address reader (the
    control file in the daemon) decides. Globs without a literal local part or domain
    test every message."""
    pb = pb_()
    pb.load(
        "A/1", [("q", "a.example", "Ann@A.example"), ("q", "b.example", "v@b.example")]
    )
    pb.load("A/2", [("q", "b.example", "w@b.example")])
    pb.load("A/3", [("smtp", "c.example", "root")])
    asked: list[int] = []
    addresses = {
        1: [("q", "a.example", "Ann@A.example"), ("q", "b.example", "v@b.example")],
        2: [("q", "b.example", "w@b.example")],
        3: [("smtp", "c.example", "root")],
    }

    def reader(msg: Message) -> list[tuple[str, str, str]]:
        asked.append(msg.number)
        return addresses[msg.number]

    def numbers(text: str) -> tuple[list[int], list[int]]:
        asked.clear()
        got = sorted(
            m.number
            for m in pb.sched.select(parse_filter(text), pb.now, reader)
            if m is not None
        )
        return got, sorted(asked)

    assert numbers("rcpt=ann@*") == ([1], [1])
    assert numbers("rcpt=*@B.EXAMPLE") == ([1, 2], [1, 2])
    assert numbers("rcpt=root") == ([3], [3])
    assert numbers("rcpt=nobody@*") == ([], [])
    assert numbers("rcpt=*n@a.example") == ([1], [1])
    # no literal local part or domain: the addresses in the index decide
    assert numbers("rcpt=a*@*") == ([1], [1])
    assert numbers("rcpt=*N*") == ([1], [1])
    assert numbers("rcpt~OO") == ([3], [3])
    assert numbers("rcpt=?@*") == ([1, 2], [1, 2])
    assert numbers("rcpt=*") == ([1, 2, 3], [1, 2, 3])
    assert numbers("rcpt!=ann@*") == ([1, 2, 3], [1, 2, 3])  # not indexed: every file
    pb.sched.hold([_msg(pb, 2)], "x", "O1", pb.now)
    assert numbers("rcpt=w@*") == ([2], [2])  # held messages are indexed too


def test_rcpt_index_compaction_drops_messages_gone() -> None:
    from scheduler.core.rcptindex import SEGMENT, RcptIndex

    idx = RcptIndex(limit=SEGMENT)
    key = (7).to_bytes(4, sys.byteorder)
    last = 3 * SEGMENT
    for n in range(1, last + 1):
        idx.add(n, key * 2, key * 2, b"a%d@x\nb@y\n" % n)  # two recipients each
    assert sorted(set(idx.lookup("local", 7))) == list(range(1, last + 1))
    before = idx.entries
    while idx.compact(lambda n: n % 1000 == 0, budget=1):
        pass
    got = set(idx.lookup("domain", 7))
    assert {n for n in range(1, last + 1) if n % 1000 == 0} <= got
    # only the segment still filling keeps messages that are gone
    assert all(n % 1000 == 0 or n > last - SEGMENT // 2 for n in got)
    assert idx.entries < before // 5
    assert list(idx.lookup("local", 8)) == []
    found = [n for n in idx.search(parse_filter("rcpt=a*0@*").terms[0]) if n]
    assert {n for n in range(1, last + 1) if n % 1000 == 0} <= set(found)
    assert all(n % 10 == 0 for n in found)
