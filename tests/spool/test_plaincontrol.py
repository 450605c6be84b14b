"""The startup load's fast path (spool.plaincontrol) against the parser: on every
generated file it either declines (None) or gives what ``parse`` gives."""

from __future__ import annotations

from hypothesis import given, strategies as st

from spool import controlfile as cfm
from spool.errors import CorruptControlFile
from spool.plaincontrol import parse_plain, parse_solo
from tests.spool.golden import ALL_RUNS, recorded
from tests.spool.test_fastparse import BENCH_LIKE, control_files, mutated, quads


def assert_agrees(data: bytes) -> bool:
    """True if the fast path took the file (and then agrees with the parser); the
    one-recipient path (parse_solo), when it takes the file, agrees with both."""
    plain = parse_plain(data)
    solo = parse_solo(data)
    if plain is None:
        assert solo is None
        return False
    if solo is not None:
        mid, sender, off, quad, channel, host, hdr = solo
        [row] = plain.pending_summary()
        assert (plain.mid, plain.report_sender) == (mid, sender)
        assert row == (off, channel, host, quad, cfm.DEFAULT_NOTIFY, hdr, -1)
    try:
        cf = cfm.parse(data, "f")
    except CorruptControlFile as exc:  # pragma: no cover - a failure
        raise AssertionError(f"plain, yet corrupt: {exc}") from exc
    assert plain.mid == cf.mid
    assert plain.log_id == cf.log_id
    assert plain.flags == cf.flags
    assert plain.report_sender == cf.report_sender
    assert list(plain.diagnostics) == cf.diagnostics
    assert list(plain.etrn) == cf.etrn
    assert list(plain.obsoletes) == cf.obsoletes
    assert plain.pending_summary() == cf.pending_summary()
    assert not cf.has_locked_recipients
    return True


@st.composite
def router_files(draw: st.DrawFn) -> bytes:
    """Mostly the usual shape, with odd quads, slots, senders and header blocks."""
    flags = draw(st.sampled_from([7, 7, 7, 3, 5, 15]))
    out = [f"@ 0x{flags:08x}\n", f"i {draw(st.sampled_from(['12345', 'A/1', '']))}\n"]
    out += ["o 10\n", "l <a@b>\n"]
    if draw(st.booleans()):
        out.append("e err@x\n")
    out.append(
        draw(st.sampled_from(["s local - a@b 0\n", "s error - - 0\n", 's a "b c" d\n']))
    )
    for _ in range(draw(st.integers(0, 5))):
        slots = draw(
            st.sampled_from([" " * 11, " " * 11, "  4711     ", "+" + " " * 10])
        )
        out.append(f"r{slots}{draw(quads())}\n")
        if draw(st.integers(0, 15)) == 0:
            out.append("N NOTIFY=SUCCESS ORCPT=rfc822;x@y\n")
    out.append(
        draw(st.sampled_from(["m\nSubject: x\n\n", "m\n\n", "m\nA: b\nr  x\n\n"]))
    )
    if draw(st.integers(0, 3)) == 0:
        out.append(draw(st.sampled_from(["d 1:2:3::4\ta\tb\n", "x 1\n", "M\nm\n\n"])))
    return "".join(out).encode()


@st.composite
def plain_files(draw: st.DrawFn) -> bytes:
    """The plain shape itself, with every kind of quad, sender and header block."""
    flags = draw(st.sampled_from([7, 3]))
    mid = draw(st.sampled_from(["12345", "A/1", "", "x y"]))
    out = [f"@ 0x{flags:08x}\n", f"i {mid}\no {draw(st.integers(0, 999))}\n"]
    out.append(f"l {draw(st.sampled_from(['<a@b>', '', 'x']))}\n")
    if draw(st.booleans()):
        out.append("e err@x\n")
    out.append(f"s {draw(quads())}\n")
    rcpts = draw(st.lists(quads(), min_size=1, max_size=5))
    out += [f"r{' ' * 11}{quad}\n" for quad in rcpts]
    out.append(
        draw(st.sampled_from(["m\nSubject: x\n\n", "m\n\n", "m\nA: b\nr  x\n\n"]))
    )
    return "".join(out).encode()


@given(plain_files())
def test_plain_files_agree(data: bytes) -> None:
    assert_agrees(data)


@given(router_files())
def test_router_files_agree(data: bytes) -> None:
    assert_agrees(data)


@given(control_files())
def test_generated_files_agree(data: bytes) -> None:
    assert_agrees(data)


@given(router_files(), st.data())
def test_mutated_files_agree(sample: bytes, data: st.DataObject) -> None:
    for variant in mutated(sample, data):
        assert_agrees(variant)


def test_the_usual_files_take_the_fast_path() -> None:
    assert assert_agrees(BENCH_LIKE)
    one = b"@ 0x00000007\ni 7\no 20\nl <7@b>\ne s@x\ns local - s@x 0\n"
    one += b"r           smtp h.example u@h.example 0\nm\nSubject: b\n\n"
    assert assert_agrees(one)
    assert parse_solo(one) == (
        "7", "s@x", 52, "smtp h.example u@h.example 0", "smtp", "h.example", 95
    )  # fmt: skip
    for other in (
        BENCH_LIKE,  # ten recipients
        one.replace(b"smtp h.example", b"smtp -"),  # no host
        one.replace(b"u@h.example 0", b"u@h.example"),  # three words
        one.replace(b"u@h.example", b"(u@h.example)"),
    ):
        assert parse_solo(other) is None
    taken = [assert_agrees(d) for run in ALL_RUNS for d in recorded(run).values()]
    assert any(taken)


def test_other_files_are_left_to_the_parser() -> None:
    base = BENCH_LIKE
    assert parse_plain(base) is not None
    for data in (
        base.replace(b"\nr  ", b"\nr+ ", 1),  # a delivered recipient
        base + b"d 1:2:3::4\ta\tb\n",  # a diagnostic after the m block
        base.replace(b"\nm\n", b"\nN NOTIFY=NEVER\nm\n"),
        base.replace(b"0x00000007", b"0x00000005"),  # slots guessed line by line
        base.replace(b"smtp mx1", b'smtp "mx 1"'),  # quoting
        base[:-1],  # no final LF
        base.replace(b"From", b"Fr\xc3\xa9"),  # not ASCII
    ):
        assert data != base
        assert parse_plain(data) is None
