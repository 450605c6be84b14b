"""The sans-IO client connection and the report parsers, on recorded bytes."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given, strategies as st

from mailq.client.errors import ProtocolError
from mailq.client.parse import (
    parse_counters,
    parse_queue_short,
    parse_saytime,
    parse_snmp,
    parse_thread_body,
    parse_thread_row,
    parse_threads2,
)
from mailq.client.proto import (
    NEED_DATA,
    AccessRefused,
    Body,
    ClientConnection,
    Closed,
    Event,
    Greeting,
    Reply,
)
from mailq.protocol.auth import authenticator
from spool.timefmt import saytime
from tests.mailq.client.replayserver import TRANSCRIPTS

RAW = TRANSCRIPTS / "raw"


def _events(conn: ClientConnection) -> list[Event]:
    out: list[Event] = []
    while True:
        ev = conn.next_event()
        if ev is NEED_DATA:
            return out
        assert not isinstance(ev, type(NEED_DATA))
        out.append(ev)
        if isinstance(ev, Closed):
            return out


def feed(data: bytes, chunk: int = 0, eof: bool = True) -> list[Event]:
    conn = ClientConnection()
    events: list[Event] = []
    step = chunk or max(len(data), 1)
    for i in range(0, len(data), step):
        conn.receive_data(data[i : i + step])
        events += _events(conn)
    if eof:
        conn.receive_eof()
        events += _events(conn)
    return events


def s2c(name: str) -> bytes:
    return next(RAW.glob(f"{name}-*.s2c")).read_bytes()


def test_recorded_session_whole_and_byte_by_byte() -> None:
    data = s2c("15")
    whole = feed(data)
    assert isinstance(whole[0], Greeting)
    assert whole[0].challenge.startswith("220 MAILQ-V2-CHALLENGE: ")
    assert whole[1] == Reply("+OK")
    assert isinstance(whole[2], Body)
    assert whole[2].lines[0].startswith("#smtp/example.net/0  N=2")
    assert whole[-1] == Closed()
    assert feed(data, chunk=1) == whole


@given(st.integers(min_value=1, max_value=64))
def test_chunking_does_not_change_events(chunk: int) -> None:
    data = s2c("14")
    assert feed(data, chunk=chunk) == feed(data)


def test_550_greeting_is_access_refused() -> None:
    events = feed(s2c("92"), eof=False)
    assert events == [AccessRefused("550 NO ACCESS FOR YOU")]


def test_version_mismatch() -> None:
    with pytest.raises(ProtocolError, match="version mismatch"):
        feed(b"version zmailer 1.0\n")


def test_kill_extra_empty_lines_are_skipped() -> None:
    """B2: the KILL replies end in an extra LF; the next reply is still in step."""
    events = feed(s2c("81"))
    replies = [e.line for e in events if isinstance(e, Reply)]
    assert replies == [
        "+OK",
        "+OK; KILLed something.",
        "+OK; KILLed something.",
        "+OK; KILLed something.",
        "-Unknown request.",
        "-Unknown request.",
        "+Bye bye",
    ]


def test_eof_inside_body_is_an_error_not_blank_lines() -> None:
    """C3 fixed."""
    data = b"version zmailer 2.0\n220 MAILQ-V2-CHALLENGE: 1.2.3\n+OK until LF.LF\nKids: 1\n"
    with pytest.raises(ProtocolError, match="middle of a reply"):
        feed(data)


def test_eof_inside_a_line_is_an_error() -> None:
    with pytest.raises(ProtocolError, match="inside a line"):
        feed(b"version zmailer 2.0\n220 MAILQ-V2-CHALLENGE: 1.2.3\n+O")


def test_dot_unstuffing_and_empty_body_lines() -> None:
    data = (
        b"version zmailer 2.0\n220 MAILQ-V2-CHALLENGE: 1\n+OK until LF.LF\n..x\n\n.\n"
    )
    events = feed(data)
    assert events[1] == Body((".x", ""))


def test_overlong_line_is_refused() -> None:
    conn = ClientConnection(max_line=100)
    conn.receive_data(b"x" * 200)
    with pytest.raises(ProtocolError, match="longer than"):
        conn.next_event()


@given(st.binary(max_size=300))
def test_arbitrary_bytes_raise_only_protocol_error(data: bytes) -> None:
    with contextlib.suppress(ProtocolError):
        feed(data)


def test_auth_line_hashes_the_whole_challenge_line() -> None:
    conn = ClientConnection()
    conn.receive_data(
        b"version zmailer 2.0\n220 MAILQ-V2-CHALLENGE: 942665308.906504.3\n"
    )
    _events(conn)
    assert (
        conn.auth("nobody", "nobody")
        == b"AUTH nobody 7fa458248b5fcfbfaedc78b99e9a0e28\n"
    )
    digest = authenticator("220 MAILQ-V2-CHALLENGE: 942665308.906504.3", "adminpw")
    assert conn.auth("admin", "adminpw") == f"AUTH admin {digest}\n".encode()
    with pytest.raises(ValueError, match="bad user"):
        conn.auth("two words", "x")


def test_command_refuses_line_breaks() -> None:
    with pytest.raises(ValueError, match="CR or LF"):
        ClientConnection().command("SHOW SNMP\nKILL MSG 1")


def test_line_observer_sees_every_line() -> None:
    seen: list[str] = []
    conn = ClientConnection(line_observer=seen.append)
    conn.receive_data(s2c("13"))
    _events(conn)
    assert seen[0] == "version zmailer 2.0"
    assert seen[-1] == "+Bye bye"


# -- parsers -------------------------------------------------------------------------


def _body(name: str) -> list[str]:
    events = feed(s2c(name))
    bodies = [e for e in events if isinstance(e, Body)]
    return list(bodies[0].lines)


@given(st.integers(min_value=-(10**7), max_value=10**7))
def test_parse_saytime_inverts_saytime_when_exact(seconds: int) -> None:
    text = saytime(seconds)
    d, rest = divmod(abs(seconds), 86400)
    if d and rest // 3600 and rest % 3600:
        return  # saytime drops minutes/seconds when both days and hours are shown
    assert parse_saytime(text) == seconds


def test_threads2_recorded() -> None:
    threads = parse_threads2(_body("12"))
    first = threads[0]
    assert (first.channel, first.host, first.n, first.r, first.a) == (
        "smtp",
        "example.org",
        2,
        2,
        1,
    )
    assert first.w is not None
    assert first.qa is not None
    assert first.qa > 7000
    assert [t.host for t in threads][-1] == "etrn.example.com"


def test_threads2_with_processes_and_pend() -> None:
    (t,) = parse_threads2(
        [
            "smtp\taol.com\tN=1\tR=1\tA=147\tP={19598}\tHA={571}s\tFA={571}s\tOF={1}\tS={STUFF}\tUF=0\tQA=1d18h"
        ]
    )
    assert t.has_procs
    assert t.fields["S"] == "{STUFF}"
    assert t.qa == 151200
    (p,) = parse_threads2(["local\t-\tN=3\tR=3\tA=0\tpend=>MaxChannel\tQA=12s"])
    assert p.pend == ">MaxChannel"


def test_thread_body_recorded_skips_summary_lines() -> None:
    detail = parse_thread_body("smtp", "example.net", _body("15"))
    assert len(detail.summary) == 1
    assert [(r.index, r.offset) for r in detail.rows] == [(0, 111), (0, 160), (1, 111)]
    assert detail.rows[1].sender == "alice@example.com"
    assert detail.rows[0].state.startswith("retry in ")


def test_thread_row_keeps_tabs_in_field_10_and_old_layout() -> None:
    """C9 fixed; a non-digit field 2 (old 9-field server) gets index 0."""
    row = parse_thread_row("Q/I/1\t0\ta@b\t237\t1\t2\t3\t4\tthread\tpart1\tpart2\rnext")
    assert row.message == "part1\tpart2\rnext"
    assert row.diagnostic_parts == ["part1\tpart2", "next"]
    old = parse_thread_row("Q/I/1\ta@b\t237\t1\t2\t3\t4\tthread\tmsg")
    assert (old.index, old.sender, old.message) == (0, "a@b", "msg")
    with pytest.raises(ValueError, match="malformed"):
        parse_thread_row("too\tfew")


def test_snmp_recorded_and_live_counts() -> None:
    snmp = parse_snmp(_body("13"))
    assert (snmp.kids, snmp.messages, snmp.threads, snmp.vertices) == (2, 5, 5, 7)
    assert snmp.recipients_stored == 8
    live = parse_snmp(
        [
            "Kids: 1  Idle:  0  Msgs:   5  Thrds:   3  Rcpnts:    6  Uptime: 87082 sec",
            "Msgs in 5384 out 5379 stored 5 (4) Rcpnts in 441890 out 441883 stored 7 (6)",
        ]
    )
    assert (live.messages_live, live.recipients_live, live.stored_recipients) == (
        4,
        6,
        6,
    )


def test_short_and_threads_recorded() -> None:
    short = parse_queue_short(_body("10"))
    assert [(g.channel, g.threads, g.messages, g.plim) for g in short.groups] == [
        ("smtp", 2, 4, 50),
        ("local", 2, 2, 5),
        ("smtp-etrn", 1, 1, 20),
    ]
    threads = parse_queue_short(_body("11"))
    assert threads.groups == short.groups
    assert threads.totals.uptime == short.totals.uptime


def test_counters_recorded() -> None:
    counters = parse_counters(_body("14"))
    assert counters["SC.StoredMessages-G"] == 5
    assert isinstance(counters["SYS.Load-Avg-1-min-G"], float)
    assert "ZMailer" not in counters
