from __future__ import annotations

import pytest

from spool import controlfile as cfm
from spool.controlfile import parse
from spool.errors import CorruptControlFile
from tests.spool.golden import ALL_RUNS, recorded


@pytest.mark.parametrize("run", ALL_RUNS)
def test_recorded_files_round_trip(run: str) -> None:
    files = recorded(run)
    assert sorted(files) == ["100001", "100002", "100003", "100004", "100005"]
    for name, data in files.items():
        cf = parse(data, name)
        assert cfm.format(cf) == data
        assert cf.mid == name
        assert cf.flags == 0x7
        assert cf.log_id == f"<{name}.zmtest@zmtest.invalid>"


def test_recorded_100002_offsets() -> None:
    data = recorded()["100002"]
    cf = parse(data)
    assert [r.offset for r in cf.recipients] == [111, 160, 208]
    for r in cf.recipients:
        assert data[r.offset : r.offset + 12] == b"r           "
        assert r.status == " "
        assert r.pid is None
        assert r.notify == frozenset({"FAILURE"})
        assert r.orcpt is None
        assert r.dsn_offset == -1
    assert [(r.channel, r.host, r.user, r.privilege) for r in cf.recipients] == [
        ("smtp", "example.net", "carol@example.net", "0"),
        ("smtp", "example.net", "dave@example.net", "0"),
        ("smtp", "example.org", "erin@example.org", "0"),
    ]
    assert cf.recipients[0].quad == "smtp example.net carol@example.net 0"
    header = cf.recipients[0].header_offset
    assert data[header - 2 : header] == b"m\n"
    assert all(r.header_offset == header for r in cf.recipients)
    block = cf.header_block(header)
    assert block.startswith(b"Received: by zmtest.invalid id 100002;")
    assert block.endswith(b"Date: Sat, 21 Nov 2026 23:47:57 +0000\n")
    assert cf.body_offset == 389
    assert cf.error_address == "alice@example.com"
    assert cf.sender == ("local", "", "alice@example.com", "0")
    assert not cf.is_error_message
    assert [line.tag for line in cf.lines] == list("@iolesrrrm")
    assert cf.lines[-1].status == "\n"
    assert cf.lines[-1].raw.endswith(b"\n\n")


def test_recorded_offsets_match_show_thread() -> None:
    # raw/15 and raw/16: 100001 at 111, 100002 at 160/111 and 208, 100003 at 111.
    files = recorded()
    assert parse(files["100001"]).recipients[0].offset == 111
    assert parse(files["100003"]).recipients[0].offset == 111
    assert parse(files["100002"]).recipients[2].offset == 208


HEAD = b"@ 0x00000007\ni 42\no 10\nl <x@y>\n"


def test_every_tag() -> None:
    data = (
        b"@ 0x00000007\n"
        b"v ../public/verbose\n"
        b"i 42\n"
        b"o 10\n"
        b"l <x@y>\n"
        b"b altbody\n"
        b"x <old@y>\n"
        b"e errors@y\n"
        b's smtp "a host" "us\\"er" 0\n'
        b"R FULL\n"
        b"n ENV1\n"
        b"r~  1234    smtp ((mx1 mx2)(mx3)) u@h 0\n"
        b"N NOTIFY=success,Delay ORCPT=rfc822;u@h\n"
        b"X 1 smtp h v@h 0\n"
        b"r+          local - - -\n"
        b"m\nSubject: a\n\n"
        b"M\nmime\n\n"
        b"T+ignored.example\n"
        b"T example.com 10.0.0.1\n"
        b"d 111:160:-1::1795312765\tn1\x01failed\tsome\ttext\n"
        b"d+11:2:3::4\t\t\n"
    )
    cf = parse(data)
    assert cfm.format(cf) == data
    assert cf.verbose_file == "../public/verbose"
    assert cf.obsoletes == ["<old@y>"]
    assert cf.ret == "FULL"
    assert cf.envid == "ENV1"
    assert cf.sender == ("smtp", "a host", 'us"er', "0")
    assert cf.error_address == 'us"er'  # a later s replaces the e address
    assert cf.etrn == ["example.com 10.0.0.1"]  # only status ' ' lines count
    first, second = cf.recipients
    assert first.status == "~"
    assert first.pid == 1234
    assert first.host == "mx1"
    assert first.host_ok
    assert first.notify == frozenset({"SUCCESS", "DELAY"})
    assert first.orcpt == "rfc822;u@h"
    assert data[first.dsn_offset - 2 : first.dsn_offset] == b"N "
    assert second.status == "+"
    assert (second.host, second.user, second.privilege) == ("", "", "")
    assert not second.host_ok
    assert first.header_offset == second.header_offset == data.index(b"Subject")
    d1, d2 = cf.diagnostics
    assert (d1.rcpt_offset, d1.header_offset, d1.dsn_offset, d1.time) == (
        111,
        160,
        -1,
        1795312765,
    )
    assert (d1.notary, d1.message, d1.reported) == ("n1\x01failed", "some\ttext", False)
    assert (d2.notary, d2.message, d2.reported) == ("", "", True)
    assert [line.tag for line in cf.lines][-6:] == ["m", "M", "T", "T", "d", "d"]


def test_error_sender_and_e_line_order() -> None:
    cf = parse(HEAD + b"s error - - 0\n")
    assert cf.is_error_message
    assert cf.error_address == ""
    cf = parse(HEAD + b"s local - a@b 0\ne c@d\n")
    assert cf.error_address == "c@d"
    cf = parse(HEAD + b"e c@d\ns local - a@b 0\n")
    assert cf.error_address == "a@b"


@pytest.mark.parametrize(
    ("host", "expected", "ok"),
    [
        ("example.net", "example.net", True),
        ("(mx1 mx2)", "mx1", True),
        ("((mx1 mx2)(mx3))", "mx1", True),
        ("(mx1", "", False),
        ("(mx1)x", "", False),
        ("()", "", False),
        ("", "", False),
    ],
)
def test_parse_host(host: str, expected: str, ok: bool) -> None:
    assert cfm.parse_host(host) == (expected, ok)


def test_unquoted_host_list_spans_blanks() -> None:
    cf = parse(HEAD + b"r           smtp (mx1 mx2) u@h 0\n")
    (r,) = cf.recipients
    assert (r.channel, r.host, r.user, r.privilege, r.host_ok) == (
        "smtp",
        "mx1",
        "u@h",
        "0",
        True,
    )
    bad = parse(HEAD + b"r           smtp (mx1 mx2 u@h 0\n").recipients[0]
    assert not bad.host_ok


@pytest.mark.parametrize(
    ("data", "line", "reason"),
    [
        (b"", 1, "empty file"),
        (HEAD + b"r           smtp h u 0", 5, "truncated"),
        (b"@ 0x00000008\n", 1, "unknown/unsupported format set: 0x00000008"),
        (b"@ 0x0000000f\n", 1, "unknown/unsupported format set: 0x0000000f"),
        (b"@ zz\n", 1, "bad '@' line"),
        (HEAD + b"o x\n", 5, "bad 'o' line"),
        (HEAD + b"d 1:2::4\tx\tm\n", 5, "bad 'd' line"),
    ],
)
def test_corrupt(data: bytes, line: int, reason: str) -> None:
    with pytest.raises(CorruptControlFile) as info:
        parse(data, "transport/Q/I/123456")
    err = info.value
    assert (err.path, err.line) == ("transport/Q/I/123456", line)
    assert reason in err.reason
    assert str(err) == f"transport/Q/I/123456:{line}: {err.reason}"


@pytest.mark.parametrize(
    "tail",
    [
        b"m\nSubject: x\n",  # unterminated header block: runs to the end
        b"Z foo\n",  # unknown tag
        b"\n",  # blank line
        b"i\n",  # no status column
        b"r  12\n",  # short recipient line
        b"r?          smtp h u 0\n",  # unknown recipient status
        b"m\nA: b\n\nmx\n",  # text after the m tag: still a block
    ],
)
def test_zmailer_reads_past_it(tail: bytes) -> None:
    """Issue 12: forms the real scheduler queues are queued (not quarantined); the
    line is skipped (or the block runs on) and the file formats back unchanged."""
    data = HEAD + b"r           smtp h u 0\n" + tail
    cf = parse(data, "transport/Q/I/123456")
    assert [r.quad for r in cf.recipients] == ["smtp h u 0"]
    assert cfm.format(cf) == data
    cf.lines = cf.lines  # the line index covers every byte
    assert cfm.format(cf) == data


def test_flags_decide_the_slots() -> None:
    cf = parse(b"@ 0x00000004\ni 1\nr smtp h u 0\n")
    (r,) = cf.recipients
    assert (r.channel, r.host, r.pid, r.quad) == ("smtp", "h", None, "smtp h u 0")
    cf = parse(b"@ 0x00000001\ni 1\nr~  4711smtp h u 0\n")
    assert cf.recipients[0].pid == 4711
    assert cf.recipients[0].quad == "smtp h u 0"


def test_slots_guessed_without_format_bits() -> None:
    """Issue 12: without the PID/delay bits a blank or digit where a slot would start
    is that slot, as in ZMailer (a locked line of a file without an ``@`` line no
    longer strands its recipient in a thread named by the PID)."""
    cf = parse(b"i 1\nr~123456smtp h u 0\nr           local - root 0\nr smtp h2 u 0\n")
    a, b, c = cf.recipients
    assert (a.pid, a.quad) == (123456, "smtp h u 0")
    assert (b.pid, b.quad) == (None, "local - root 0")
    assert (c.pid, c.quad) == (None, "smtp h2 u 0")


def test_formatters() -> None:
    quad = cfm.format_quad("smtp", "", 'a "b"\\c', "-")
    assert quad == 'smtp - "a \\"b\\"\\\\c" "-"'
    assert cfm.parse_quad(quad) == ("smtp", "", 'a "b"\\c', "-")
    line = cfm.format_recipient_line("smtp h u 0")
    assert line == b"r           smtp h u 0\n"
    d = cfm.format_diagnostic(111, 160, -1, 17, "no\ttab", "two\nlines")
    assert d == b"d 111:160:-1::17\tno tab\ttwo\rlines\n"
    (diag,) = parse(HEAD + d).diagnostics
    assert (diag.notary, diag.message, diag.status) == ("no tab", "two\rlines", " ")
    with pytest.raises(ValueError, match="newline"):
        cfm.format_quad("a\nb", "h", "u", "0")
