"""Model objects: group ring and pickup pointer, thread compaction, oldest mtime, loading."""

from __future__ import annotations

from array import array

from scheduler.config import Clause
from scheduler.loading import split_recipients
from scheduler.model import Group, Message, Thread, Vertex
from spool.controlfile import parse

from .playbook import control_bytes


def make_thread(n: int) -> tuple[Thread, list[Vertex]]:
    g = Group(Clause(), "smtp", "", ("*/*", "smtp", ""))
    th = Thread(g, "smtp", "h")
    g.ring.append(th)
    vs = []
    for i in range(n):
        m = Message(i + 1, f"A/{i + 1}", "s@x", 1000 + i, 0, 0, -1)
        v = Vertex(m, array("i", [10 * i]), None)
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
    assert list(specs[2].offsets) == [dave, carol]
    assert specs[2].extra is None
    assert specs[1].extra is not None
    assert specs[1].extra[0][0] == frozenset({"NEVER"})
    assert hdr > 0
