"""The fast parser against the exact line-by-line one: same objects, same errors.

``parse`` validates in one pass and builds recipients lazily (column-wise for plain
runs); ``_parse_exact`` is the reference it must agree with on every input.
"""

from __future__ import annotations

from collections.abc import Callable

from hypothesis import given, strategies as st

from spool import controlfile as cfm
from spool.controlfile import ControlFile, SummaryRow
from spool.errors import CorruptControlFile
from tests.spool.golden import ALL_RUNS, recorded


def _outcome(
    parser: Callable[[bytes, str], ControlFile], data: bytes
) -> ControlFile | tuple[str, int, str]:
    try:
        return parser(data, "f")
    except CorruptControlFile as exc:
        return exc.path, exc.line, exc.reason


def _summary(cf: ControlFile) -> list[SummaryRow]:
    return [
        (r.offset, r.channel, r.host, r.quad, r.notify, r.header_offset, r.dsn_offset)
        for r in cf.recipients
        if r.status == " "
    ]


def assert_same(data: bytes) -> None:
    """``parse`` and ``_parse_exact`` agree, through every accessor, in any order."""
    exact = _outcome(cfm._parse_exact, data)
    fast = _outcome(cfm.parse, data)
    if not isinstance(exact, ControlFile):
        assert fast == exact
        return
    assert isinstance(fast, ControlFile)
    # the accessors that avoid building recipients, before and after building them
    assert fast.has_locked_recipients == any(r.status == "~" for r in exact.recipients)
    assert fast.pending_summary() == _summary(exact)
    assert fast == exact
    assert fast.recipients == exact.recipients
    assert fast.recipients is fast.recipients  # built once
    assert fast.pending_summary() == _summary(exact)
    assert fast.has_locked_recipients == exact.has_locked_recipients
    assert cfm.format(fast) == data
    again = cfm.parse(data)
    assert again.pending == exact.pending
    assert repr(again) == repr(exact)


plain = st.text("abcdefghijklmnopqrstuvwxyz0123456789.@-r", min_size=1, max_size=8)
odd = st.sampled_from(["-", "r", "", "a b", '"q"', "(mx1 mx2)", "((a)(b))", "(x", "\t"])
field = st.one_of(plain, plain, plain, odd)
status = st.sampled_from("    +-~")
slot_fill = st.sampled_from(["      ", "  4711", "999999", " 0    ", "abc   "])


@st.composite
def quads(draw: st.DrawFn) -> str:
    if draw(st.integers(0, 3)):  # mostly the usual four plain fields
        return " ".join(draw(st.lists(plain, min_size=4, max_size=4)))
    fields = draw(st.lists(field, min_size=2, max_size=6))
    sep = draw(st.sampled_from([" ", " ", " ", "  ", "\t"]))
    return sep.join(fields)


@st.composite
def control_files(draw: st.DrawFn) -> bytes:
    flags = draw(st.sampled_from([7, 7, 7, 5, 4, 3, 1, 0]))
    out = [f"@ 0x{flags:08x}\n", "i 12345\n", "o 10\n", "l <a@b>\n"]
    if draw(st.booleans()):
        out.append("e err@x\n")
    out.append(draw(st.sampled_from(["s local - a@b 0\n", "s error - - 0\n", ""])))
    slot = (6 if flags & 1 else 0) + (4 if flags & 2 else 0)
    for _ in range(draw(st.integers(0, 3))):  # blocks of recipients, each with its m
        clean = draw(st.booleans())  # status ' ' and blank slots on most lines
        for _ in range(draw(st.integers(0, 6))):
            odd_line = not clean or draw(st.integers(0, 9)) == 0
            st_char = draw(status) if odd_line else " "
            fill = (draw(slot_fill) + "    ")[:slot] if odd_line else " " * slot
            out.append(f"r{st_char}{fill}{draw(quads())}\n")
            if draw(st.integers(0, 9)) == 0:
                out.append("N NOTIFY=SUCCESS,delay ORCPT=rfc822;x@y\n")
        if draw(st.booleans()):
            out.append(
                draw(
                    st.sampled_from(["T example.com\n", "X x\n", "d 1:2:3::4\ta\tb\n"])
                )
            )
        out.append("m\nSubject: x\nr           a b c d\n\n")
    if draw(st.booleans()):
        out.append("M\nm\n\n")
    return "".join(out).encode()


@given(control_files())
def test_generated_files_agree(data: bytes) -> None:
    assert_same(data)


def mutated(sample: bytes, data: st.DataObject) -> tuple[bytes, bytes]:
    """``sample`` with one to three bytes replaced by syntax-relevant ones, and a
    prefix of that (a file cut short)."""
    raw = bytearray(sample)
    for _ in range(data.draw(st.integers(1, 3))):
        at = data.draw(st.integers(0, len(raw) - 1))
        raw[at] = data.draw(st.sampled_from(b' \n\t"(-r~+mMN@x0\x80'))
    return bytes(raw), bytes(raw[: data.draw(st.integers(0, len(raw)))])


@given(control_files(), st.data())
def test_mutated_files_agree(sample: bytes, data: st.DataObject) -> None:
    for variant in mutated(sample, data):
        assert_same(variant)


@given(st.binary(max_size=200))
def test_arbitrary_bytes_agree(data: bytes) -> None:
    assert_same(data)


def test_recorded_files_agree() -> None:
    for run in ALL_RUNS:
        for data in recorded(run).values():
            assert_same(data)
            assert cfm._parse_fast(data) is not None  # the fast path is really taken


BENCH_LIKE = (
    b"@ 0x00000007\ni 42\no 56\nl <42@x>\ne a@x\ns local - a@x 0\n"
    + b"".join(
        f"r           smtp mx{i}.example.net u{i}@h 0\n".encode() for i in range(10)
    )
    + b"m\nFrom: a@x\n\n"
)


def test_plain_run_column_wise() -> None:
    cf = cfm.parse(BENCH_LIKE)
    rows = cf.pending_summary()
    assert len(rows) == 10
    first = BENCH_LIKE.index(b"\nr") + 1
    header = BENCH_LIKE.index(b"m\nFrom") + 2
    assert rows[0] == (
        first,
        "smtp",
        "mx0.example.net",
        "smtp mx0.example.net u0@h 0",
        frozenset({"FAILURE"}),
        header,
        -1,
    )
    for offset, *_ in rows:
        assert BENCH_LIKE[offset : offset + 12] == b"r           "
    assert not cf.has_locked_recipients
    assert [r.user for r in cf.recipients] == [f"u{i}@h" for i in range(10)]
    assert_same(BENCH_LIKE)


def test_locked_done_and_dash_fields() -> None:
    data = BENCH_LIKE.replace(b"r           smtp mx3", b"r~  4711    smtp mx3")
    data = data.replace(b"r           smtp mx4", b"r+          smtp mx4")
    data = data.replace(b"smtp mx5.example.net u5@h 0", b"smtp - u5@h -")
    cf = cfm.parse(data)
    assert cf.has_locked_recipients
    rows = cf.pending_summary()
    assert len(rows) == 8
    assert ("", "u5@h") not in [(r[2], r[3]) for r in rows]
    dash = [r for r in rows if r[3] == "smtp - u5@h -"]
    assert dash[0][2] == ""  # host "-" is empty (host_ok False)
    assert cf.recipient_at(dash[0][0]).host_ok is False
    assert cf.recipients[3].pid == 4711
    assert_same(data)


def test_recipients_can_be_assigned() -> None:
    cf = cfm.parse(BENCH_LIKE)
    cf.recipients = cf.recipients[:2]
    assert len(cf.pending_summary()) == 2
    assert cf != cfm.parse(BENCH_LIKE)
