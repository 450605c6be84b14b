"""Model objects: group ring and pickup pointer, thread compaction, oldest mtime, loading."""

from __future__ import annotations

from array import array

import pytest

from scheduler.config.clauses import Clause
from scheduler.core.loading import split_recipients
from scheduler.core.model import (
    Group,
    Message,
    PlainVertex,
    SoloMessage,
    Thread,
    Vertex,
)
from spool.controlfile import parse
from tests.scheduler.core.playbook import Playbook, control_bytes


def make_thread(n: int) -> tuple[Thread, list[PlainVertex]]:
    g = Group(Clause(), "smtp", "", ("*/*", "smtp", ""))
    th = Thread(g, "smtp", "h")
    g.ring.append(th)
    vs = []
    for i in range(n):
        m = Message(i + 1, f"A/{i + 1}", "s@x", 1000 + i, 0, 0, -1)
        v = PlainVertex(m, array("i", [10 * i]), None)
        v.thread = th
        th.vlist.append(v)
        th.jobs += 1
        th.note_added(m.mtime)
        vs.append(v)
    return th, vs


def test_oldest_mtime_recomputed_only_when_the_oldest_leaves() -> None:
    th, vs = make_thread(3)
    assert th.oldest_mtime == 1000
    vs[1].thread = None
    th.jobs -= 1
    th.note_removed(vs[1].msg.mtime)
    assert th.oldest_mtime == 1000
    vs[0].thread = None
    th.jobs -= 1
    th.note_removed(vs[0].msg.mtime)
    assert th.oldest_mtime == 1002
    vs[2].thread = None
    th.jobs -= 1
    th.note_removed(vs[2].msg.mtime)
    assert th.oldest_mtime is None


def test_compact_keeps_the_feed_pointer_on_the_same_vertex() -> None:
    th, vs = make_thread(6)
    th.feedptr = 4
    vs[1].thread = None
    vs[3].thread = None
    vs[5].thread = None
    th.compact()
    assert th.vlist == [vs[0], vs[2], vs[4]]
    assert th.vlist[th.feedptr] is vs[4]
    assert list(th.vertices()) == [vs[0], vs[2], vs[4]]


def test_group_ring_lists_from_the_pickup_pointer() -> None:
    g = Group(Clause(), "smtp", "", ("*/*", "smtp", ""))
    a, b, c = (Thread(g, "smtp", h) for h in "abc")
    g.ring += [a, b, c]
    assert [t.host for t in g.threads()] == ["a", "b", "c"]
    g.advance_pickup(a)
    assert [t.host for t in g.threads()] == ["b", "c", "a"]
    g.remove_thread(b)
    assert [t.host for t in g.threads()] == ["c", "a"]
    g.advance_pickup(a)
    g.remove_thread(c)
    assert [t.host for t in g.threads()] == ["a"]
    assert (g.thread_count, g.withhost, g.maxthr) == (1, 0, 1)


def test_split_recipients_orders_and_groups() -> None:
    data = control_bytes(
        "1",
        "s@x",
        [
            ("smtp", "B.example", "carol@b"),
            ("local", "x", "x"),
            ("smtp", "b.example", "dave@b"),
            ("smtp", "a.example", "z@a", "NOTIFY=NEVER"),
        ],
    )
    specs, bad, hdr = split_recipients(parse(data))
    assert bad == []
    assert [(s.channel, s.host, s.count) for s in specs] == [
        ("local", "x", 1),
        ("smtp", "a.example", 1),
        ("smtp", "b.example", 2),
    ]
    carol = data.index(b"carol") - len(b"r           smtp B.example ")
    dave = data.index(b"dave") - len(b"r           smtp b.example ")
    assert not isinstance(specs[2].offsets, int)
    assert list(specs[2].offsets) == [dave, carol]
    assert specs[2].extra is None
    assert specs[1].extra is not None
    assert specs[1].extra[0][0] == frozenset({"NEVER"})
    assert hdr > 0


def test_message_keeps_a_shared_prefix_and_one_time_int() -> None:
    a = Message(100001, "Y/F/100001", "s@x", 1_800_000_000, 123456789, 0, -1)
    b = Message(100002, "Y/F/100002", "s@x", 1_800_000_001, 0, 0, -1)
    odd = Message(7, "Y/F/S7abc", "s@x", 1_800_000_000, 999_999_999, 0, -1)
    lead = Message(8, "A/08", "s@x", 5, 0, 0, -1)  # "08" is not str(8)
    assert (a.relpath, a.mid, a.mtime, a.mtime_ns) == (
        "Y/F/100001",
        "100001",
        1_800_000_000,
        123456789,
    )
    assert a._path is b._path
    assert (odd.relpath, odd.mid, odd.mtime_ns) == ("Y/F/S7abc", "S7abc", 999_999_999)
    assert (lead.relpath, lead.mid) == ("A/08", "08")


def test_vertex_single_offset_and_diagnostic_slot() -> None:
    m = Message(1, "A/1", "s@x", 1000, 0, 0, 40)
    one = PlainVertex(m, 120, None)
    many = PlainVertex(m, array("i", [300, 200]), None)
    m.vertices = (one,)
    assert m.vertices == (one,)
    assert m._v is one
    m.vertices = (one, many)
    assert m.vertices == (one, many)
    assert (list(one.offsets), 120 in one.offsets, one.offsets.index(120)) == (
        [120],
        True,
        0,
    )
    assert one.rcpt_extra(0) == (frozenset({"FAILURE"}), 40, -1)
    one.drop_index(0)
    assert len(one.offsets) == 0
    many.drop_index(1)
    assert list(many.offsets) == [300]
    assert (one.message, one.notary) == (None, None)
    one.notary = "n"
    one.message = "deferred"
    assert (one.message, one.notary) == ("deferred", "n")
    one.notary = None
    assert (one.message, one.notary) == ("deferred", None)


def test_message_packed_fields_are_independent() -> None:
    m = Message(7, "Q/I/7", "s@x", 1_800_000_000, 999_999_999, -42, 300)
    assert (m.mtime, m.mtime_ns, m.cdelta, m.hdr) == (
        1_800_000_000,
        999_999_999,
        -42,
        300,
    )
    m.live = 3
    m.held = 2
    m.flags |= 1
    assert (m.flags & 1, m.live, m.held) == (1, 3, 2)
    m.live -= 1
    m.held = 0
    m.flags &= ~1
    assert (m.flags, m.live, m.held, m.relpath) == (32, 2, 0, "Q/I/7")
    m.held = 5_000_000
    m.live = (1 << 24) - 1
    assert (m.live, m.held, m.flags) == ((1 << 24) - 1, 5_000_000, 32)
    with pytest.raises(ValueError, match="live vertex count"):
        m.live = 1 << 24
    with pytest.raises(ValueError, match="held vertex count"):
        m.held = -1


def test_vertex_packed_fields_are_independent() -> None:
    m = Message(7, "Q/I/7", "s@x", 1000, 0, 0, -1)
    v = PlainVertex(m, 5, None)
    v.state = 1 | 8
    v.waiting_for = 3
    v.attempts = 1000
    v.lastfeed = 1_800_000_123
    assert (v.state, v.waiting_for, v.attempts, v.lastfeed) == (
        9,
        3,
        1000,
        1_800_000_123,
    )
    v.attempts -= 1
    v.state &= ~8
    v.waiting_for = 0
    assert (v.state, v.waiting_for, v.attempts, v.lastfeed) == (
        1,
        0,
        999,
        1_800_000_123,
    )
    v.lastfeed = 0
    assert (v.state, v.attempts, v.lastfeed) == (1, 999, 0)
    with pytest.raises(ValueError, match="vertex state"):
        v.state = 16


def test_vertex_rare_fields_share_the_offsets_slot() -> None:
    m = Message(7, "Q/I/7", "s@x", 1000, 0, 0, -1)
    ex = ((frozenset({"NEVER"}), 9, 10), (frozenset({"SUCCESS"}), 11, 12))
    v = PlainVertex(m, array("i", [40, 20]), ex)
    assert list(v.offsets) == [40, 20]
    assert v.rcpt_extra(1) == ex[1]
    v.message = "4.0.0 later"
    v.drop_index(0)
    assert (list(v.offsets), v.extra, v.message) == ([20], ex[1:], "4.0.0 later")
    v.extra = None
    v.message = None
    assert type(v._offs) is array
    assert v.notary is None
    v.notary = "x"
    v.clear_offsets()
    assert (list(v.offsets), v.extra, v.notary) == ([], None, "x")


def test_thread_run_fields_allocate_only_when_set() -> None:
    th, _ = make_thread(1)
    th.unfed = 0
    th.thrkids = 0
    assert th._r is None
    assert list(th.procs()) == []
    th.thrkids += 1
    th.feedptr = 4
    assert (th.thrkids, th.feedptr, th.unfed, th._r is not None) == (1, 4, 0, True)
    other, _ = make_thread(1)
    assert other.alive
    other.alive = False
    assert (other.alive, other.thrkids, th.alive) == (False, 0, True)


def test_solo_message_is_its_own_vertex_with_independent_fields() -> None:
    m = SoloMessage(9, "Q/I/9", "s@x", 1_800_000_000, 5, -3, 40, 120, None)
    assert isinstance(m, Message)
    assert isinstance(m, Vertex)
    assert m.msg is m
    assert m.vertices == (m,)
    assert (m.live, m.held, m.flags, m.thread) == (1, 0, 32, None)
    assert (list(m.offsets), m.path, m.sender, m.relpath) == (
        [120],
        "Q/I/9",
        "s@x",
        "Q/I/9",
    )
    # message bits (flags/live/held) and vertex bits (state/attempts/lastfeed) are
    # packed into two different ints: changing one never moves the other
    m.state = 1 | 2
    m.attempts = 7
    m.lastfeed = 1_800_000_050
    m.held = 1
    m.flags |= 1
    assert (m.state, m.attempts, m.lastfeed) == (3, 7, 1_800_000_050)
    assert (m.flags, m.live, m.held) == (33, 1, 1)
    m.live = 0
    m.state = 0
    assert (m.state, m.attempts, m.live, m.held, m.mtime, m.mtime_ns, m.cdelta) == (
        0,
        7,
        0,
        1,
        1_800_000_000,
        5,
        -3,
    )
    assert m.rcpt_extra(0) == (frozenset({"FAILURE"}), 40, -1)
    m.message = "4.4.1 later"
    assert (m.message, list(m.offsets)) == ("4.4.1 later", [120])
    m.drop_index(0)
    assert list(m.offsets) == []
    m.vertices = (m,)
    with pytest.raises(ValueError, match="its only vertex"):
        m.vertices = ()


def test_loading_makes_a_solo_message_only_for_one_vertex() -> None:
    pb = Playbook('*/*\tinterval=1m\nsmtp/*\tqueueonly command="testta"\n')
    pb.load("Q/I/1", [("smtp", "a.example", "u@a"), ("smtp", "A.example", "v@a")])
    pb.load("Q/I/2", [("smtp", "a.example", "u@a"), ("smtp", "b.example", "v@b")])
    solo = pb.sched._messages[1]
    multi = pb.sched._messages[2]
    assert type(solo) is SoloMessage
    assert solo.vertices == (solo,)
    assert len(solo.offsets) == 2
    assert type(multi) is Message
    assert [type(v) for v in multi.vertices] == [PlainVertex, PlainVertex]
    assert all(v.msg is multi for v in multi.vertices)
    th = pb.sched._threads[("smtp", "a.example")]
    assert th.vlist == [solo, multi.vertices[0]]
    assert (th.jobs, th.rcpts) == (2, 3)
