"""Hypothesis: control files round-trip; arbitrary bytes only raise CorruptControlFile."""

from __future__ import annotations

from hypothesis import given, strategies as st

from spool import controlfile as cfm
from spool.errors import CorruptControlFile

value = st.text(
    st.characters(blacklist_categories=["Cs"], blacklist_characters="\n"), max_size=12
)
word = st.text("abcdefghijklmnopqrstuvwxyz0123456789.-@", min_size=1, max_size=10)
header_line = st.text(
    st.characters(blacklist_categories=["Cs"], blacklist_characters="\n"),
    min_size=1,
    max_size=20,
).map(lambda s: s + "\n")


@st.composite
def control_files(draw: st.DrawFn) -> tuple[bytes, list[tuple[str, str, str, str]]]:
    out = [b"@ 0x00000007\n", b"i 12345\n", b"o 10\n", b"l <a@b>\n"]
    quads = []
    for _ in range(draw(st.integers(0, 5))):
        quad = (draw(word), draw(value), draw(value), draw(value))
        quads.append(quad)
        status = draw(st.sampled_from(" ~+-"))
        pid = draw(st.sampled_from(["      ", "  4711", "999999"]))
        out.append(f"r{status}{pid}    {cfm.format_quad(*quad)}\n".encode())
        if draw(st.booleans()):
            out.append(b"N NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;x@y\n")
    out.append(
        b"m\n" + "".join(draw(st.lists(header_line, max_size=4))).encode() + b"\n"
    )
    out.extend(
        cfm.format_diagnostic(
            draw(st.integers(0, 10**6)),
            -1,
            draw(st.integers(-1, 10**6)),
            draw(st.integers(0, 2**33)),
            draw(value),
            draw(value),
            draw(st.sampled_from(" +")),
        )
        for _ in range(draw(st.integers(0, 3)))
    )
    return b"".join(out), quads


@given(control_files())
def test_round_trip(sample: tuple[bytes, list[tuple[str, str, str, str]]]) -> None:
    data, quads = sample
    cf = cfm.parse(data)
    assert cfm.format(cf) == data
    assert b"".join(line.raw for line in cf.lines) == data
    assert [line.offset for line in cf.lines if line.tag == "r"] == [
        r.offset for r in cf.recipients
    ]
    cf.lines = cf.lines[:-1]
    assert cfm.format(cf) == data[: cf.lines[-1].offset + len(cf.lines[-1].raw)]
    assert [(r.channel, r.user, r.privilege) for r in cf.recipients] == [
        (q[0], q[2], q[3]) for q in quads
    ]
    for rcpt in cf.recipients:
        assert data[rcpt.offset : rcpt.offset + 1] == b"r"
        assert cfm.parse_quad(rcpt.quad)[2] == rcpt.user


@given(value, value, value, value)
def test_quad_round_trip(a: str, b: str, c: str, d: str) -> None:
    assert cfm.parse_quad(cfm.format_quad(a, b, c, d)) == (a, b, c, d)


@given(st.binary(max_size=300))
def test_arbitrary_bytes(data: bytes) -> None:
    error: CorruptControlFile | None = None
    formatted = data
    try:
        cf = cfm.parse(data)
        formatted = cfm.format(cf)
        assert b"".join(line.raw for line in cf.lines) == data
    except CorruptControlFile as exc:
        error = exc
    assert formatted == data
    assert error is None or error.line >= 1


@given(control_files(), st.data())
def test_mutated_files(sample: tuple[bytes, object], data: st.DataObject) -> None:
    raw = bytearray(sample[0])
    for _ in range(data.draw(st.integers(1, 4))):
        at = data.draw(st.integers(0, len(raw) - 1))
        raw[at] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(raw)))
    for candidate in (bytes(raw), bytes(raw[:cut])):
        try:
            cf = cfm.parse(candidate)
        except CorruptControlFile:
            continue
        assert cfm.format(cf) == candidate
