"""Vertices cut as ZMailer's scheduler cuts them (issue 12; observed with the real one)."""

from __future__ import annotations

from scheduler.core.vertexspecs import split_recipients
from spool.controlfile import parse

HEAD = b"@ 0x00000003\ni 1\no 10\nl <x>\ns local a a 0\n"


def _split(*quads: str) -> list[tuple[str, str, list[int]]]:
    data = HEAD + b"".join(b"r" + b" " * 11 + q.encode() + b"\n" for q in quads)
    cf = parse(data + b"m\nSubject: x\n\n")
    offs = [r.offset for r in cf.recipients]
    specs, bad, _ = split_recipients(cf)
    assert bad == []
    out = []
    for s in specs:
        o = [s.offsets] if isinstance(s.offsets, int) else list(s.offsets)
        out.append((s.channel, s.host, [offs.index(x) for x in o]))
    return out


def test_dash_host_is_a_thread() -> None:
    assert _split("local - root 65534") == [("local", "-", [0])]


def test_list_and_plain_name_next_to_each_other_are_one_vertex() -> None:
    assert _split("local ((h)) a 0", "local h b 0") == [("local", "h", [1, 0])]


def test_equal_lines_later_one_first() -> None:
    assert _split("smtp h u 0", "smtp h u 0") == [("smtp", "h", [1, 0])]


def test_uncuttable_hosts_ride_along() -> None:
    # sorted: "local (h) x" < "local z y": the first cannot be cut -> thread " "/" "
    assert _split("local z y 0", "local (h) x 0") == [
        (" ", " ", [1]),
        ("local", "z", [0]),
    ]
    # between two cut ones it joins the vertex before it
    assert _split("aaa z u 0", "smtp (h) x 0", "smtp z u 0") == [
        ("aaa", "z", [1, 0]),
        ("smtp", "z", [2]),
    ]
    # last of all, it names the vertex it joins by the rest of its line
    assert _split("aaa z u 0", "smtp (h) x 0") == [("smtp", "h) x 0", [1, 0])]
