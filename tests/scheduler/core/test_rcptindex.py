"""The recipient index's address search (``rcpt=`` globs without a literal local part
or domain, ``rcpt~``) selects the same messages as reading every control file, on
queues that change: arrivals, deliveries, messages gone, holds, compaction."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from unittest import mock

from hypothesis import given, settings, strategies as st

from scheduler.core import control, rcptindex
from scheduler.core.events import MessageGone
from scheduler.core.model import Message
from scheduler.core.rcptindex import RcptIndex
from spool.controlfile import parse
from spool.filters import control_keys, parse_filter, solo_keys, text_search
from tests.scheduler.core.playbook import Playbook, control_bytes
from tests.scheduler.core.test_core import CONF

LOCALS = ["ann", "Ann.B", "bob", "x?y", "j\u00fcrgen", "a*b", "root", "annie", "n"]
DOMAINS = ["a.example", "B.Example", "gmail.com", "[10.0.0.1]", ""]
HOSTS = [("q", "a.example"), ("q", "b.example"), ("smtp", "g.com")]
FILTERS = [
    "rcpt=*ann*",
    "rcpt=*nn@*",
    "rcpt=*@*",
    "rcpt=*",
    "rcpt=?nn*",
    "rcpt=*[ab]*",
    "rcpt=*.example",
    "rcpt=*\u00fc*",
    "rcpt=*?y@*",
    "rcpt=*[!a]nn*",
    "rcpt=*[*",
    "rcpt~NN",
    "rcpt~@b.ex",
    "rcpt~\u00dc",
    "rcpt=*ann* state=held",
    "rcpt=*ann* state=queued",
    "rcpt=* host=a.example",
    "rcpt=*o* channel=smtp",
    "rcpt=*e* age<1h",
    "rcpt=ann@a.example",  # literal parts: by key, or by address when common
    "rcpt=ann@*",
    "rcpt=*@gmail.com",
    "rcpt=root",
    "rcpt=ann@b.*",
]

address = st.builds(
    lambda lo, do: f"{lo}@{do}" if do else lo,
    st.sampled_from(LOCALS),
    st.sampled_from(DOMAINS),
)
rcpt = st.tuples(st.sampled_from(HOSTS), address)
op = st.one_of(
    st.tuples(st.just("arrive"), st.lists(rcpt, min_size=1, max_size=4)),
    st.tuples(
        st.sampled_from(["deliver", "gone", "hold", "release", "compact"]),
        st.integers(0, 40),
    ),
)


@contextmanager
def _small_segments(common: int) -> Iterator[None]:
    """Segments of three recipients (sealed, compacted, merged); ``common``: lines
    looked at one by one before the regex takes over, and the most recipients a
    key's lookup may give before the addresses are searched instead."""
    with (
        mock.patch.object(rcptindex, "SEGMENT", 3),
        mock.patch.object(rcptindex, "COMMON", common),
        mock.patch.object(control, "KEY_CANDIDATES", common),
    ):
        yield


def _numbers(pb: Playbook, text: str, reader: control.Addresses) -> list[int]:
    got = pb.sched.select(parse_filter(text), pb.now, reader, tick=2)
    return sorted(m.number for m in got if m is not None)


@given(st.lists(op, max_size=40), st.sampled_from([0, 1, 2, 64]))
@settings(max_examples=80, deadline=None)
def test_index_search_equals_reading_every_file(
    ops: list[tuple[str, object]], common: int
) -> None:
    with _small_segments(common):
        pb = Playbook(CONF)
        pb.sched.rcpt_index = RcptIndex(limit=4)
        pending: dict[int, list[tuple[str, str, str]]] = {}  # the control files
        asked: list[int] = []

        def reader(msg: Message) -> list[tuple[str, str, str]]:
            asked.append(msg.number)
            return pending.get(msg.number, [])

        n = 0
        for kind, arg in ops:
            if kind == "arrive":
                n += 1
                rows = [(ch, h, a) for (ch, h), a in arg]  # type: ignore[attr-defined]
                pb.load(f"A/{n}", rows)
                pending[n] = rows
                continue
            number = 1 + int(arg) % max(n, 1)  # type: ignore[call-overload]
            msg = pb.sched.message(number)
            if kind == "compact":
                while pb.sched.compact_index(1):
                    pass
            elif msg is None:
                continue
            elif kind == "deliver":  # the file says so; the index does not know
                if pending.get(number):
                    pending[number].pop(0)
            elif kind == "gone":
                pb.send(MessageGone(f"A/{number}", "test"))
                pending.pop(number, None)
            elif kind == "hold":
                pb.sched.hold([msg], "r", "O1", pb.now)
            else:
                pb.sched.release([msg], pb.now)
        for text in FILTERS:
            asked.clear()
            indexed = _numbers(pb, text, reader)
            read = list(asked)
            with (
                mock.patch.object(control, "text_searchable", return_value=False),
                mock.patch.object(control, "index_keys", return_value=[]),
            ):
                assert _numbers(pb, text, reader) == indexed, text
            if "=" in text and " " not in text:  # the index never asks more
                assert len(read) <= len(list(pb.sched.messages()))


def test_search_finds_lines_by_literal_and_by_regex() -> None:
    """Few occurrences of the literal part: each line is looked at; many: a regex
    over the segment. Both give the messages whose lines match, once each."""
    idx = RcptIndex()
    for n in range(1, 201):
        text = b"user%d@host%d.example\nann%d@gmail.com\n" % (n, n % 7, n)
        idx.add(n, b"\0" * 8, b"\0" * 8, text)
    idx._segs[-1].seal()  # searched compressed too

    def search(flt: str) -> list[int]:
        return [n for n in idx.search(parse_filter(flt).terms[0]) if n is not None]

    assert search("rcpt=*ser17@*") == [17]  # rare literal
    assert search("rcpt=*@host3.*") == [n for n in range(1, 201) if n % 7 == 3]
    assert search("rcpt=*@*") == list(range(1, 201))  # common: the regex
    assert search("rcpt=?nn1?@*") == list(range(10, 20))
    assert search("rcpt~N19") == [19, *range(190, 200)]
    assert search("rcpt=nobody*") == []


def test_text_search_literal_and_regex() -> None:
    def ts(flt: str) -> tuple[bytes, bool, bool]:
        lit, rx = text_search(parse_filter(flt).terms[0])
        return (
            lit,
            bool(rx.search(b"x\nj\xc3\xbcrgen@a.example\n")),
            bool(rx.search(b"x\nzz@b\n")),
        )

    assert ts("rcpt=*rgen@*") == (b"rgen@", True, False)
    assert ts("rcpt=J?RGEN@*") == (b"rgen@", True, False)  # ? is one to four bytes
    assert ts("rcpt=*[a-z]@a.exa*") == (b"@a.exa", True, False)
    assert ts("rcpt=*[x") == (b"[x", False, False)  # an open bracket is literal
    assert ts("rcpt~EN@") == (b"en@", True, False)
    assert ts("rcpt=*") == (b"", True, True)


def test_control_keys_give_the_addresses_a_line_each() -> None:
    data = control_bytes("1", "s@x", [("q", "h", "Ann@H"), ("q", "h", "b")])
    keys = control_keys(parse(data, "A/1"))
    assert keys[2] == b"ann@h\nb\n"
    assert control_keys(parse(control_bytes("2", "s@x", []), "A/2"))[2] == b""


@given(
    user=st.one_of(
        st.just("-"),
        st.text(st.sampled_from("aB@.-_x\u00fc\u00c9+"), min_size=1, max_size=12),
    )
)
def test_the_one_recipient_keys_are_the_general_ones(user: str) -> None:
    """solo_keys (the load workers' usual file) gives control_keys' bytes: case,
    UTF-8, no '@', several '@', the '-' of no address."""
    row = (0, "smtp", "h", f"smtp h {user} 99", ("NEVER", ""), 0, -1)
    assert solo_keys(user) == control_keys(None, [row])  # type: ignore[arg-type,list-item]


def test_a_common_local_part_and_domain_search_the_addresses() -> None:
    """``rcpt=info@d1.example``: every message has an ``info`` and a ``d1.example``
    recipient, so either key would read every file; the addresses name the three."""
    pb = Playbook(CONF)
    rows: dict[int, list[tuple[str, str, str]]] = {}
    for n in range(1, 7):
        rows[n] = [
            ("q", f"d{n % 2}.example", f"info@d{n % 2}.example"),
            ("q", f"d{(n + 1) % 2}.example", f"x{n}@d{(n + 1) % 2}.example"),
        ]
        pb.load(f"A/{n}", rows[n])
    asked: list[int] = []

    def reader(msg: Message) -> list[tuple[str, str, str]]:
        asked.append(msg.number)
        return rows[msg.number]

    def check(flt: str, want: list[int], read: list[int]) -> None:
        asked.clear()
        assert _numbers(pb, flt, reader) == want
        assert sorted(asked) == read

    with mock.patch.object(control, "KEY_CANDIDATES", 3):
        check("rcpt=INFO@d1.example", [1, 3, 5], [1, 3, 5])
        check("rcpt=info@*", [1, 2, 3, 4, 5, 6], [1, 2, 3, 4, 5, 6])  # the key
        check("rcpt=x4@*", [4], [4])  # a rare key
    check("rcpt=info@d1.example", [1, 3, 5], [1, 2, 3, 4, 5, 6])  # few: the key
