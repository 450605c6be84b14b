"""The sans-IO core: framing, states, limits, AUTH budget, serialisation, properties."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from hypothesis import given, strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from mailq.protocol import replies
from mailq.protocol.commands import Right
from mailq.protocol.connection import (
    AuthAccepted,
    AuthRejected,
    AuthRequest,
    Bye,
    Command,
    ConnectionClosed,
    Event,
    Greeting,
    InvalidCommand,
    MultilineReply,
    Quit,
    Reply,
    ServerConnection,
)
from mailq.protocol.errors import LocalProtocolError, RemoteProtocolError
from mailq.protocol.lines import unstuff_line
from mailq.protocol.states import State

CHALLENGE = "220 MAILQ-V2-CHALLENGE: 1700000000.5123.1.00"


def _ready() -> ServerConnection:
    conn = ServerConnection(CHALLENGE)
    conn.send(Greeting(allowed=True))
    conn.send(AuthAccepted("admin", Right.ALL))
    return conn


def _events(conn: ServerConnection) -> list[Event]:
    out: list[Event] = []
    while True:
        event = conn.next_event()
        if event is None or isinstance(event, ConnectionClosed):
            if event is not None:
                out.append(event)
            return out
        out.append(event)


def _whole(data: bytes) -> Iterator[bytes]:
    yield data


def _bytewise(data: bytes) -> Iterator[bytes]:
    for i in range(len(data)):
        yield data[i : i + 1]


def _feed(
    conn: ServerConnection, data: bytes, split: Callable[[bytes], Iterator[bytes]]
) -> list[Event]:
    events: list[Event] = []
    for piece in split(data):
        conn.receive_data(piece)
        events.extend(_events(conn))
    return events


SPLITS = pytest.mark.parametrize(
    "split", [_whole, _bytewise], ids=["whole", "bytewise"]
)


@SPLITS
def test_lines_are_framed_on_lf_with_cr_deleted(
    split: Callable[[bytes], Iterator[bytes]],
) -> None:
    conn = _ready()
    events = _feed(conn, b"SH\rOW QUEUE SHORT\r\nFOO bar  baz \n\n", split)
    assert events == [
        Command("SHOW", "QUEUE SHORT"),
        Command("FOO", "bar  baz "),  # trailing blanks kept (MQ2-REF 5.1)
        Command("", ""),
    ]


@SPLITS
def test_trailing_partial_line_waits_for_more(
    split: Callable[[bytes], Iterator[bytes]],
) -> None:
    conn = _ready()
    assert _feed(conn, b"SHOW SNMP\nSHOW QUE", split) == [Command("SHOW", "SNMP")]
    conn.receive_data(b"UE SHORT\n")
    assert _events(conn) == [Command("SHOW", "QUEUE SHORT")]


def test_partial_line_at_eof_is_discarded() -> None:
    conn = _ready()
    conn.receive_data(b"SHOW SNMP")
    conn.receive_data(b"")
    assert conn.next_event() == ConnectionClosed()
    assert conn.state is State.CLOSED
    with pytest.raises(LocalProtocolError):
        conn.receive_data(b"more")


def test_nul_truncates_the_line() -> None:
    conn = _ready()
    conn.receive_data(b"SHOW SNMP\0 ignored\n")
    assert conn.next_event() == Command("SHOW", "SNMP")


def test_arbitrary_bytes_decode_without_error() -> None:
    conn = _ready()
    conn.receive_data(b"\xff\xfe verb\n")
    event = conn.next_event()
    assert isinstance(event, Command)
    assert conn.send(Reply(replies.unknown_command(event.verb, event.rest))) == (
        b"-MAILQ2 Unknown command, or refused by access control; VERB='\xff\xfe' REST='verb'\n"
    )


@pytest.mark.parametrize("verb", [b"QUIT", b"quit", b"Exit", b"EXIT extra words"])
def test_quit_any_case_stops_reading(verb: bytes) -> None:
    conn = ServerConnection(CHALLENGE)
    conn.send(Greeting(True))
    conn.receive_data(verb + b"\nSHOW SNMP\n")
    assert conn.next_event() == Quit()
    assert conn.state is State.CLOSED
    assert conn.send(Bye()) == b"+Bye bye\n"
    assert (
        conn.next_event() == ConnectionClosed()
    )  # B9 fix: the pipelined line is dropped


def test_before_auth_only_auth_and_quit() -> None:
    conn = ServerConnection(CHALLENGE)
    conn.send(Greeting(True))
    conn.receive_data(
        b"SHOW QUEUE SHORT\nauth x y\nAUTH\nAUTH admin\nAUTH admin  abc \n"
    )
    assert _events(conn) == [
        InvalidCommand("SHOW", replies.MUST_AUTHENTICATE),
        InvalidCommand("auth", replies.MUST_AUTHENTICATE),
        AuthRequest("", ""),
        AuthRequest("admin", ""),
        AuthRequest("admin", "abc "),
    ]
    assert "abc" not in repr(AuthRequest("admin", "abc"))  # never in logs


def test_auth_after_login_is_a_command() -> None:
    conn = _ready()
    conn.receive_data(b"AUTH qqonly 0123\n")
    assert conn.next_event() == Command("AUTH", "qqonly 0123")


@pytest.mark.parametrize("limit", [64, 100])
def test_line_limit_at_and_over(limit: int) -> None:
    conn = ServerConnection(CHALLENGE, max_line=limit)
    conn.send(Greeting(True))
    conn.receive_data(b"x" * limit + b"\n")
    assert conn.next_event() == InvalidCommand("x" * limit, replies.MUST_AUTHENTICATE)
    conn.receive_data(b"y" * (limit + 1))
    with pytest.raises(RemoteProtocolError):
        conn.next_event()
    assert conn.state is State.ERROR
    assert conn.next_event() == ConnectionClosed()


def test_line_limit_with_lf_just_after() -> None:
    conn = ServerConnection(CHALLENGE, max_line=64)
    conn.send(Greeting(True))
    conn.receive_data(b"z" * 65 + b"\n")
    with pytest.raises(RemoteProtocolError):
        conn.next_event()


@pytest.mark.parametrize("budget", [1, 3])
def test_auth_failure_budget_closes(budget: int) -> None:
    conn = ServerConnection(CHALLENGE, max_auth_failures=budget)
    conn.send(Greeting(True))
    for _ in range(budget - 1):
        assert (
            conn.send(AuthRejected(replies.AUTH_BAD_PASSWORD))
            == b"-BAD USER OR PASSWORD\n"
        )
        assert conn.state is State.AWAIT_AUTH
    conn.send(AuthRejected(replies.AUTH_BAD_USER))
    assert conn.state is State.CLOSED
    with pytest.raises(LocalProtocolError):
        conn.send(Reply("+OK"))


def test_greetings() -> None:
    conn = ServerConnection(CHALLENGE)
    assert conn.send(Greeting(True)) == f"version zmailer 2.0\n{CHALLENGE}\n".encode()
    with pytest.raises(LocalProtocolError):
        conn.send(Greeting(True))
    refused = ServerConnection("")
    assert (
        refused.send(Greeting(False)) == b"version zmailer 2.0\n550 NO ACCESS FOR YOU\n"
    )
    assert refused.state is State.CLOSED


def test_kill_replies_keep_the_empty_line() -> None:
    conn = _ready()
    assert conn.send(Reply(replies.KILL_OK)) == b"+OK; KILLed something.\n\n"
    assert conn.send(Reply(replies.KILL_DENIED)) == b"-No KILL allowed for you.\n"


def test_reply_constants_shape() -> None:
    for name in replies.__all__:
        value = getattr(replies, name)
        if isinstance(value, str) and name not in ("VERSION", "NO_ACCESS"):
            assert value[0] in "+-", name
            assert not value.endswith("\n\n"), name


def test_multiline_stuffing_and_terminator() -> None:
    conn = _ready()
    data = conn.send(MultilineReply([".hidden", "plain", "", "..", "a\nb"]))
    assert data == b"+OK until LF.LF\n..hidden\nplain\n\n...\na b\n.\n"
    assert conn.send(MultilineReply([])) == b"+OK until LF.LF\n.\n"


def _unstuff_body(data: bytes) -> list[str]:
    text = data.decode("utf-8", "surrogateescape")
    assert text.startswith("+OK until LF.LF\n")
    assert text.endswith("\n.\n")
    body = text[len("+OK until LF.LF\n") : -2]
    lines = body.split("\n")[:-1] if body else []
    assert "." not in lines  # a stuffed body never contains a bare "." line
    return [unstuff_line(line) for line in lines]


_line = st.text(
    st.characters(blacklist_characters="\n", blacklist_categories=["Cs"]), max_size=40
)


@given(st.lists(_line, max_size=30), st.integers(min_value=1, max_value=200))
def test_dot_stuffing_round_trip_any_chunk_size(lines: list[str], chunk: int) -> None:
    conn = _ready()
    data = b"".join(conn.send_chunks(MultilineReply(lines), chunk_bytes=chunk))
    assert _unstuff_body(data) == lines
    assert data == _ready().send(MultilineReply(lines))


@given(
    st.binary(max_size=300),
    st.lists(st.integers(min_value=0, max_value=300), max_size=8),
)
def test_chunking_invariance(data: bytes, cuts: list[int]) -> None:
    reference = _ready()
    if data:
        reference.receive_data(data)
    expected = _events(reference)
    conn = _ready()
    got: list[Event] = []
    last = 0
    for cut in [*sorted(c % (len(data) + 1) for c in cuts), len(data)]:
        if cut > last:  # b"" would mean EOF
            conn.receive_data(data[last:cut])
            got.extend(_events(conn))
            last = cut
    assert got == expected


@given(st.binary(max_size=2000), st.booleans())
def test_arbitrary_bytes_only_events_or_remote_error(data: bytes, authed: bool) -> None:
    conn = ServerConnection(CHALLENGE, max_line=128)
    conn.send(Greeting(True))
    if authed:
        conn.send(AuthAccepted("u", Right.ALL))
    conn.receive_data(data)
    conn.receive_data(b"")
    try:
        events = _events(conn)
    except RemoteProtocolError:
        assert conn.state is State.ERROR
        return
    assert isinstance(events[-1], ConnectionClosed)
    for event in events:
        assert isinstance(
            event, (Command, AuthRequest, InvalidCommand, Quit, ConnectionClosed)
        )


class SessionMachine(RuleBasedStateMachine):
    """The session against a small model: authenticated? closed? failures used."""

    def __init__(self) -> None:
        super().__init__()
        self.conn = ServerConnection(CHALLENGE, max_auth_failures=3, max_line=256)
        self.conn.send(Greeting(True))
        self.authed = False
        self.closed = False
        self.failures = 0

    def _one(self, line: bytes) -> Event | None:
        self.conn.receive_data(line)
        return self.conn.next_event()

    @precondition(lambda self: not self.closed and not self.authed)
    @rule()
    def auth_ok(self) -> None:
        event = self._one(b"AUTH admin 00\n")
        assert isinstance(event, AuthRequest)
        assert self.conn.send(AuthAccepted("admin", Right.ALL)) == b"+OK\n"
        self.authed = True

    @precondition(lambda self: not self.closed and not self.authed)
    @rule()
    def auth_bad(self) -> None:
        assert isinstance(self._one(b"AUTH admin bad\n"), AuthRequest)
        self.conn.send(AuthRejected(replies.AUTH_BAD_PASSWORD))
        self.failures += 1
        self.closed = self.failures >= 3

    @precondition(lambda self: not self.closed)
    @rule(verb=st.sampled_from([b"SHOW", b"ETRN", b"FOO", b"", b"KILL"]))
    def command(self, verb: bytes) -> None:
        event = self._one(verb + b" x\n")
        if self.authed:
            assert event == Command(verb.decode(), "x")
        else:
            assert isinstance(event, InvalidCommand)

    @precondition(lambda self: not self.closed)
    @rule(data=st.binary(min_size=1, max_size=50).filter(lambda b: b"\n" not in b))
    def garbage_without_newline(self, data: bytes) -> None:
        assert self._one(data) is None or self.conn.state is not State.READY
        self.conn.receive_data(b"\n")
        event = self.conn.next_event()
        assert event is not None
        if isinstance(event, Quit):  # the garbage happened to spell QUIT or EXIT
            self.closed = True

    @precondition(lambda self: not self.closed)
    @rule()
    def quit(self) -> None:
        assert self._one(b"quit\n") == Quit()
        self.closed = True

    @precondition(lambda self: self.closed)
    @rule()
    def input_after_close_is_ignored(self) -> None:
        self.conn.receive_data(b"SHOW SNMP\n")
        assert self.conn.next_event() == ConnectionClosed()

    @invariant()
    def states_agree(self) -> None:
        if self.closed:
            assert self.conn.state is State.CLOSED
            assert self.conn.next_event() == ConnectionClosed()
        elif self.authed:
            assert self.conn.state is State.READY
        else:
            assert self.conn.state is State.AWAIT_AUTH


TestSessionMachine = SessionMachine.TestCase
