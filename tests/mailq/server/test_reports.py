"""The report formatting rules in isolation (MQ2-REF 9.1-9.6), and streaming invariance."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings, strategies as st

from mailq.protocol.commands import Right
from mailq.protocol.connection import (
    AuthAccepted,
    Greeting,
    MultilineReply,
    ServerConnection,
)
from mailq.protocol.lines import BODY_END, BODY_START, stuff_lines
from mailq.server.reports import (
    format_thread_line,
    short_report,
    snmp_report,
    thread_detail_report,
    threads2_report,
    threads_report,
    trailer_lines,
)
from tests.mailq.server.fakeview import (
    FakeCounters,
    FakeProc,
    FakeQueue,
    FakeThread,
    FakeVertex,
)

NOW = 1_700_000_000


@dataclass
class Group:
    """A ``GroupView`` whose counts may disagree with its lists (the bracketed cases)."""

    thread_list: list[FakeThread] = field(default_factory=list)
    clause_channel: str = "smtp"
    clause_host: str = "*"
    withhost: int = 0
    thread_count: int = -1  # -1: len(thread_list)
    proc_count: int = 0
    idle_count: int = 0
    idle_list_length: int = 0
    maxring: int = 90
    overfeed: int = 150
    maxthr: int = 1

    def __post_init__(self) -> None:
        if self.thread_count < 0:
            self.thread_count = len(self.thread_list)

    def threads(self) -> Sequence[FakeThread]:
        return self.thread_list


def _vertex(mtime: int = NOW - 12, **kw: object) -> FakeVertex:
    values: dict[str, object] = {
        "path": "Q/I/123456",
        "sender": "joe@sender.example",
        "offsets": [237],
        "expiry": 1700345600,
        "mtime": mtime,
    }
    values.update(kw)
    return FakeVertex(**values)  # type: ignore[arg-type]


def _thread(
    channel: str = "smtp", host: str = "h", wakeup: int = NOW, **kw: object
) -> FakeThread:
    thread = FakeThread(channel, host, wakeup)
    thread.vertex_list = [_vertex()]
    for name, value in kw.items():
        setattr(thread, name, value)
    return thread


def _queue(groups: list[Group], stored: tuple[int, int] = (1, 1)) -> FakeQueue:
    values = {
        "SC.ReceivedMessages": 5384,
        "SC.TransmittedMessages": 5379,
        "SC.StoredMessages-G": stored[0],
        "SC.ReceivedRecipients": 441890,
        "SC.TransmittedRecipients": 441883,
        "SC.StoredRecipients-G": stored[1],
    }
    queue = FakeQueue([], FakeCounters(values), start_time=NOW - 87082, kids=1)
    queue.group_list = groups  # type: ignore[assignment]
    return queue


def _line(thread: FakeThread) -> str:
    return format_thread_line(thread, NOW)


# ---- THREADS padding -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("width", "padding"),
    [
        (14, "\t\t\t\t"),
        (15, "\t\t\t"),
        (22, "\t\t\t"),
        (23, "\t\t"),
        (30, "\t\t"),
        (31, "\t"),
        (38, "\t"),
        (39, " "),
        (60, " "),
    ],
)
def test_tab_padding_thresholds(width: int, padding: str) -> None:
    # prefix "    c/<host>/0" is 8 + len(host) bytes; W = prefix + 7
    channel, host = ("", "") if width == 14 else ("c", "x" * (width - 15))
    thread = _thread(channel, host)
    prefix = f"    {channel}/{host}/0"
    assert len(prefix) + 7 == width
    assert _line(thread).startswith(prefix + padding + "N=")


def test_padding_counts_bytes_not_characters() -> None:
    thread = _thread("c", "é" * 4)  # 8 bytes: W = 8 + 8 + 7 = 23 -> two TABs
    assert _line(thread).startswith("    c/éééé/0\t\tN=")


# ---- the detail block ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("n", "r", "a", "text"),
    [
        (1, 1, 147, "N=1   R=1   A=147"),
        (3, 3, 0, "N=3   R=3   A=0 "),
        (12, 345, 9, "N=12  R=345 A=9 "),
        (1234, 99999, 1000, "N=1234 R=99999 A=1000"),
    ],
)
def test_counts_are_left_aligned(n: int, r: int, a: int, text: str) -> None:
    thread = _thread(attempts=a, frozen=(n, r, NOW - 12))
    assert f"\tN={n}\tR={r}\tA={a}\t" in next(
        iter(threads2_report(_queue([Group([thread])]), NOW))
    )
    assert _line(thread).split("\t")[-1].startswith(text + " QA=12s")


def _procs() -> list[FakeProc]:
    return [
        FakeProc(19598, NOW - 571, NOW - 3, 1, "STUFF"),
        FakeProc(19601, NOW - 7, 0, 0, "IDLE"),
    ]


def test_procs_block_with_several_procs_and_never() -> None:
    thread = _thread(proc_list=_procs(), thrkids=2, unfed=4, wakeup=NOW + 99)
    detail = "P={19598,19601} HA={571,7}s FA={3,never}s OF={1,0} S={STUFF,IDLE} UF=4"
    assert _line(thread).endswith(f"A=0  {detail} QA=12s")
    (row,) = threads2_report(_queue([Group([thread])]), NOW)
    assert row == "smtp\th\tN=1\tR=1\tA=0\t" + detail.replace(" ", "\t") + "\tQA=12s"


def test_kids_only_when_thrkids_differs() -> None:
    thread = _thread(proc_list=_procs()[:1], thrkids=2)
    assert " Kids=2/1 P={19598} " in _line(thread)
    thread.thrkids = 1
    assert "Kids=" not in _line(thread)


def test_wakeup_then_pending_then_nothing() -> None:
    thread = _thread(wakeup=NOW + 1860, pending=">MaxChannel")
    assert _line(thread).endswith("A=0  W=1860s QA=12s")  # W= wins over pend=
    thread.wakeup = NOW
    assert _line(thread).endswith("A=0  pend=>MaxChannel QA=12s")
    thread.pending = ""
    assert _line(thread).endswith("A=0  QA=12s")


def test_qa_is_saytime_of_the_oldest_and_minus_one_without_vertices() -> None:
    thread = _thread()
    thread.vertex_list = [_vertex(mtime=NOW - 151200), _vertex(mtime=NOW - 5)]
    assert _line(thread).endswith(" QA=1d18h")
    thread.vertex_list = []
    assert _line(thread).endswith("N=0   R=0   A=0  QA=-1s")


@pytest.mark.parametrize(
    ("waits", "suffix"),
    [((2, 0), " channelwait"), ((1, 2), " threadwait"), ((3, 2), ""), ((0, 1), "")],
)
def test_wait_suffix_from_the_first_vertex_only(
    waits: tuple[int, int], suffix: str
) -> None:
    thread = _thread()
    thread.vertex_list = [_vertex(waiting_for=w) for w in waits]
    assert _line(thread).endswith("QA=12s" + suffix)
    (row,) = threads2_report(_queue([Group([thread])]), NOW)
    assert row.endswith("\tQA=12s")  # never in THREADS2


# ---- groups and the trailer ----------------------------------------------------------


def test_reference_example_byte_exact() -> None:
    aol = _thread("smtp", "aol.com", attempts=147, proc_list=_procs()[:1], thrkids=1)
    aol.proc_list[0].feedtime = NOW - 571
    aol.vertex_list = [_vertex(mtime=NOW - 151200)]
    some = _thread("smtp", "mail.some-example.com", NOW + 1860, attempts=58)
    some.vertex_list = [_vertex(mtime=NOW - 40288, offsets=[1, 2]), _vertex(mtime=NOW)]
    local = _thread("local", "-", pending=">MaxChannel", withhost=2)
    local.vertex_list = [_vertex(waiting_for=2) for _ in range(3)]
    groups = [
        Group([aol, some], proc_count=1),
        Group([local], "local", withhost=2, maxring=10000, overfeed=0),
    ]
    queue = _queue(groups, stored=(5, 7))
    queue.start_time = NOW - 87082
    queue.freeze()
    queue.frozen = (5, 3, 6, 7)  # msgs, threads, vertices, recipients as the view says
    assert "\n".join(threads_report(queue, NOW)) + "\n" == (
        "smtp/*/0\n"
        "    smtp/aol.com/0\t\tN=1   R=1   A=147 P={19598} HA={571}s FA={571}s OF={1} S={STUFF} UF=0 QA=1d18h\n"
        "    smtp/mail.some-example.com/0 N=2   R=3   A=58 W=1860s QA=11h11m28s\n"
        "\tThreads:    2 Msgs:     3 Procs:   1 Idle:   0 Plim:  90 Flim: 150 Tlim: 1\n"
        "local/*/2\n"
        "    local/-/2\t\t\tN=3   R=3   A=0  pend=>MaxChannel QA=12s channelwait\n"
        "\tThreads:    1 Msgs:     3 Procs:   0 Idle:   0 Plim: 10000 Flim:   0 Tlim: 1\n"
        "Kids: 1  Idle:  0  Msgs:   5  Thrds:   3  Rcpnts:    6  Uptime: 1d11m22s\n"
        "Msgs in 5384 out 5379 stored 5 Rcpnts in 441890 out 441883 stored 7\n"
    )
    assert list(short_report(queue, NOW)) == [
        "smtp/*/0",
        "\tThreads:    2 Msgs:     3 Procs:   1 Idle:   0 Plim:  90 Flim: 150 Tlim: 1",
        "local/*/2",
        "\tThreads:    1 Msgs:     3 Procs:   0 Idle:   0 Plim: 10000 Flim:   0 Tlim: 1",
        "Kids: 1  Idle:  0  Msgs:   5  Thrds:   3  Rcpnts:    6  Uptime: 1d11m22s",
        "Msgs in 5384 out 5379 stored 5 Rcpnts in 441890 out 441883 stored 7",
    ]
    assert next(iter(snmp_report(queue, NOW))).endswith("Uptime: 87082 sec")
    assert list(threads2_report(queue, NOW)) == [
        "smtp\taol.com\tN=1\tR=1\tA=147\tP={19598}\tHA={571}s\tFA={571}s\tOF={1}\tS={STUFF}\tUF=0\tQA=1d18h",
        "smtp\tmail.some-example.com\tN=2\tR=3\tA=58\tW=1860s\tQA=11h11m28s",
        "local\t-\tN=3\tR=3\tA=0\tpend=>MaxChannel\tQA=12s",
    ]


def test_group_summary_brackets_only_when_counts_differ() -> None:
    threads = [_thread(proc_list=_procs()), _thread(host="h2")]
    group = Group(
        threads, thread_count=3, proc_count=5, idle_count=1, idle_list_length=2
    )
    summary = list(short_report(_queue([group]), NOW))[1]
    # walked 2 of 3 threads; 2 procs attached + 2 on the idle list = 4 of 5; idle 1/2
    assert summary == (
        "\tThreads:    3/2 Msgs:     2 Procs:   5/4 Idle:   1/2"
        " Plim:  90 Flim: 150 Tlim: 1"
    )
    exact = Group(threads, proc_count=4, idle_count=2, idle_list_length=2)
    assert "/" not in list(short_report(_queue([exact]), NOW))[1]


def test_trailer_brackets_only_when_live_totals_differ() -> None:
    queue = _queue([Group([_thread()])], stored=(3, 9))
    first, second = trailer_lines(queue, NOW)
    assert (
        first
        == "Kids: 1  Idle:  0  Msgs:   1  Thrds:   1  Rcpnts:    1  Uptime: 1d11m22s"
    )
    assert second == (
        "Msgs in 5384 out 5379 stored 3 (1) Rcpnts in 441890 out 441883 stored 9 (1)"
    )
    queue = _queue([Group([_thread()])])
    assert "(" not in trailer_lines(queue, NOW)[1]
    assert trailer_lines(queue, NOW, snmp=True)[0].endswith("Uptime: 87082 sec")


# ---- SHOW THREAD ---------------------------------------------------------------------


def test_show_thread_rows_and_field_9_states() -> None:
    thread = _thread("smtp", "mail.some-example.com", NOW, attempts=3)
    thread.vertex_list = [
        _vertex(offsets=[237, 124], lastfeed=1699998140, attempts=29, waiting_for=2,
                message="connect to x:\tConnection timed out\nsecond line"),
        _vertex(path="C/R/98765", sender="", offsets=[377], expiry=1700400000, waiting_for=3),
        _vertex(path="A/B/1", waiting_for=1),
        _vertex(path="A/B/2", waiting_for=0),
    ]  # fmt: skip
    queue = _queue([Group([thread])])
    rows = list(thread_detail_report(queue, "smtp", "mail.some-example.com", NOW))
    assert (
        rows[0] == "#smtp/mail.some-example.com/0  N=4   R=5   A=3  QA=12s channelwait"
    )
    tail = f"\t{NOW}\t1699998140\t29\tchannel\tconnect to x: Connection timed out\rsecond line"
    assert rows[1:] == [
        "Q/I/123456\t0\tjoe@sender.example\t237\t1700345600" + tail,
        "Q/I/123456\t1\tjoe@sender.example\t124\t1700345600" + tail,
        f"C/R/98765\t0\t\t377\t1700400000\t{NOW}\t0\t0\t\t",
        f"A/B/1\t0\tjoe@sender.example\t237\t1700345600\t{NOW}\t0\t0\tthread\t",
        f"A/B/2\t0\tjoe@sender.example\t237\t1700345600\t{NOW}\t0\t0\tthread\t",
    ]
    thread.wakeup = NOW + 1860
    rows = list(thread_detail_report(queue, "smtp", "mail.some-example.com", NOW))
    assert {row.split("\t")[8] for row in rows[1:]} == {"retry in 31m"}
    assert list(thread_detail_report(queue, "smtp", "nowhere", NOW)) == []


def test_body_line_starting_with_a_dot_is_stuffed() -> None:
    thread = _thread("smtp", ".dot")
    thread.vertex_list = [_vertex(path=".hidden/1")]
    queue = _queue([Group([thread])])
    conn = ServerConnection("x")
    conn.send(Greeting(True))
    conn.send(AuthAccepted("u", Right.ALL))
    data = conn.send(MultilineReply(thread_detail_report(queue, "smtp", ".dot", NOW)))
    assert b"\n..hidden/1\t0\t" in data
    assert conn.send(MultilineReply(threads2_report(queue, NOW))).startswith(
        BODY_START + b"smtp\t.dot\t"
    )
    data = conn.send(MultilineReply(["." + r for r in threads2_report(queue, NOW)]))
    assert data.startswith(BODY_START + b"..smtp\t.dot\t")


# ---- streaming -----------------------------------------------------------------------

_names = st.text(
    st.characters(blacklist_categories=["Cs"], blacklist_characters="\0"),
    min_size=0,
    max_size=12,
)


@settings(max_examples=40, deadline=None)
@given(
    hosts=st.lists(_names, min_size=0, max_size=700),
    chunk=st.integers(min_value=1, max_value=70_000),
    report=st.sampled_from(["threads", "threads2", "short", "thread"]),
)
def test_streamed_output_is_independent_of_chunking(
    hosts: list[str], chunk: int, report: str
) -> None:
    threads = [_thread("smtp", h, NOW + i % 3, attempts=i) for i, h in enumerate(hosts)]
    if threads:
        threads[0].vertex_list = [_vertex(offsets=list(range(len(hosts))))]
    queue = _queue([Group(threads)])

    def lines() -> list[str]:
        if report == "threads":
            return list(threads_report(queue, NOW))
        if report == "threads2":
            return list(threads2_report(queue, NOW))
        if report == "short":
            return list(short_report(queue, NOW))
        return list(thread_detail_report(queue, "smtp", hosts[0] if hosts else "", NOW))

    expected = lines()
    body = "".join(stuff_lines(line.replace("\n", " ") for line in expected))
    reference = BODY_START + body.encode("utf-8", "surrogateescape") + BODY_END
    conn = ServerConnection("x")
    conn.send(Greeting(True))
    conn.send(AuthAccepted("u", Right.ALL))
    chunks = list(conn.send_chunks(MultilineReply(iter(lines())), chunk_bytes=chunk))
    assert b"".join(chunks) == reference
    assert all(chunks)
    assert chunks[-1].endswith(BODY_END)
