"""The command table: every command x rights, the replies, and the SC.MQ2* counters."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import pytest

from mailq.protocol import replies
from mailq.protocol.auth import authenticator
from mailq.protocol.commands import Right
from mailq.protocol.connection import (
    AuthAccepted,
    AuthRejected,
    AuthRequest,
    Bye,
    Command,
    ConnectionClosed,
    InvalidCommand,
    MultilineReply,
    Quit,
    Reply,
    ServerReply,
)
from mailq.server.authfile import IPPeer, parse_auth_file
from mailq.server.opviews import Deferred
from mailq.server.service import Client, Service
from mailq.server.watch import WatchRequest
from tests.mailq.server import fakeview
from tests.mailq.server.fakeview import FakeOps, FakeQueue

NOW = 1795312216
PEER = IPPeer.from_host("127.0.0.1")
CHALLENGE = "220 MAILQ-V2-CHALLENGE: 1795312216.1.1.00"
AUTH = parse_auth_file(
    "admin:adminpw:ALL:[127.0.0.0]/8\n"
    "qq:qqpw:QQ:[127.0.0.0]/8\n"
    "far:farpw:ALL:[192.0.2.1]\n"
)


def _service(strict: bool = False) -> tuple[Service, FakeQueue, FakeOps]:
    queue = fakeview.main_run()
    ops = FakeOps(queue)
    return Service(queue, ops, lambda: NOW, strict_counters=strict), queue, ops


def _client(rights: Right) -> Client:
    return Client(PEER, CHALLENGE, user="u", rights=rights)


def _run(
    service: Service, queue: FakeQueue, event: object, client: Client
) -> tuple[ServerReply | None, dict[str, int]]:
    """The reply (multi-line bodies materialised) and the counters that changed."""
    before = dict(queue.counters.values)
    reply = service.handle(event, client, lambda: AUTH)  # type: ignore[arg-type]
    assert not isinstance(reply, WatchRequest)

    assert not isinstance(reply, Deferred)  # only operator commands defer
    if isinstance(reply, MultilineReply):
        reply = MultilineReply(list(reply.lines))
    after = queue.counters.values
    delta = {k: v - before.get(k, 0) for k, v in after.items() if v != before.get(k, 0)}
    return reply, delta


def _unknown(verb: str, rest: str) -> Reply:
    return Reply(replies.unknown_command(verb, rest))


@dataclass(frozen=True)
class Case:
    line: str
    right: Right  # what it needs (NONE: any logged-in user)
    granted: ServerReply | type[MultilineReply]
    granted_counter: str | None
    refused: ServerReply
    refused_counter: str | None
    call: tuple[str, ...] | None = None  # the QueueOperations call when granted


CASES = [
    Case("SHOW SNMP", Right.SNMP, MultilineReply, "CommandShowQueueVeryShort",
         _unknown("SHOW", "SNMP"), "CommandsRej"),
    Case("SHOW QUEUE SHORT", Right.QQ, MultilineReply, "CommandShowQueueShort",
         _unknown("SHOW", "QUEUE"), "CommandsRej"),
    Case("SHOW QUEUE THREADS", Right.TT, MultilineReply, "CommandShowQueueThreads2",
         _unknown("SHOW", "QUEUE"), "CommandsRej"),
    Case("SHOW QUEUE THREADS2", Right.TT, MultilineReply, "CommandShowQueueThreads2",
         _unknown("SHOW", "QUEUE"), "CommandsRej"),
    Case("SHOW THREAD smtp example.net", Right.TT, MultilineReply, "CommandShowThread",
         _unknown("SHOW", "THREAD"), "CommandsRej"),
    Case("SHOW COUNTERS", Right.NONE, MultilineReply, "CommandShowCounters",
         Reply(""), None),
    Case("ETRN Example.NET", Right.ETRN, Reply(replies.ETRN_STARTED), "CommandETRN",
         Reply(replies.ETRN_DENIED), "CommandETRN", ("etrn", "example.net")),
    Case("KILL MSG 100001", Right.KILL, Reply(replies.KILL_OK), None,
         Reply(replies.KILL_DENIED), None, ("kill_msg", "100001")),
    # issue 12 item 10: answered as ZMailer answers it, nothing deleted
    Case("KILL THREAD SMTP example.org", Right.KILL,
         Reply(replies.KILL_UNKNOWN_REQUEST), None, Reply(replies.KILL_DENIED), None),
    Case("REQUEUE MSG 100001", Right.KILL, Reply(replies.REQUEUE_NO_SUCH_MESSAGE), None,
         _unknown("REQUEUE", "MSG 100001"), "CommandsRej", ("requeue_msg", "100001")),
]  # fmt: skip

RIGHTS = [
    Right.SNMP,
    Right.QQ,
    Right.TT,
    Right.ETRN,
    Right.KILL,
    Right.QQ | Right.TT,
    Right.SNMP | Right.QQ | Right.TT | Right.ETRN,
    Right.ALL,
]


@pytest.mark.parametrize("case", CASES, ids=[c.line for c in CASES])
@pytest.mark.parametrize("rights", RIGHTS, ids=lambda r: str(r.name or int(r)))
def test_command_by_rights(case: Case, rights: Right) -> None:
    service, queue, ops = _service()
    verb, _, rest = case.line.partition(" ")
    reply, delta = _run(service, queue, Command(verb, rest), _client(rights))
    allowed = (rights & case.right) == case.right
    expected_counter = case.granted_counter if allowed else case.refused_counter
    expected = {"SC.MQ2Commands": 1}
    if expected_counter:
        expected["SC.MQ2" + expected_counter] = 1
    if allowed and case.call and case.call[0].startswith("kill"):
        # the fake's kill moves the message gauges as the scheduler does
        delta = {
            k: v
            for k, v in delta.items()
            if "Stored" not in k and "Transmitted" not in k
        }
    assert delta == expected
    if allowed:
        if case.granted is MultilineReply:
            assert isinstance(reply, MultilineReply)
            assert list(reply.lines)
        else:
            assert reply == case.granted
        assert ops.calls == ([case.call] if case.call else [])
    else:
        assert reply == case.refused
        assert ops.calls == []


def test_show_replies_carry_the_report_bodies() -> None:
    service, queue, _ = _service()
    client = _client(Right.ALL)
    bodies = {}
    for line in (
        "SHOW SNMP",
        "SHOW QUEUE SHORT",
        "SHOW QUEUE THREADS2",
        "SHOW COUNTERS",
    ):
        verb, _, rest = line.partition(" ")
        reply, _ = _run(service, queue, Command(verb, rest), client)
        assert isinstance(reply, MultilineReply)
        bodies[line] = list(reply.lines)
    assert bodies["SHOW SNMP"][0].endswith("Uptime: 14 sec")
    assert bodies["SHOW QUEUE SHORT"][0] == "smtp/*/0"
    assert bodies["SHOW QUEUE THREADS2"][0].startswith("smtp\texample.org\tN=2\t")
    assert any(line.startswith("Time_now") for line in bodies["SHOW COUNTERS"])


def test_strict_counters_need_snmp() -> None:
    service, queue, _ = _service(strict=True)
    reply, delta = _run(service, queue, Command("SHOW", "COUNTERS"), _client(Right.QQ))
    assert reply == _unknown("SHOW", "COUNTERS")
    assert delta == {"SC.MQ2Commands": 1, "SC.MQ2CommandsRej": 1}
    reply, delta = _run(
        service, queue, Command("SHOW", "COUNTERS"), _client(Right.SNMP)
    )
    assert isinstance(reply, MultilineReply)
    assert delta == {"SC.MQ2Commands": 1, "SC.MQ2CommandShowCounters": 1}


@pytest.mark.parametrize(
    ("line", "reply"),
    [
        ("FOO bar baz", _unknown("FOO", "bar baz")),
        ("show snmp", _unknown("show", "snmp")),  # verbs are case-sensitive
        ("SHOW QUEUE", _unknown("SHOW", "QUEUE")),
        ("SHOW QUEUE threads", _unknown("SHOW", "QUEUE")),
        ("SHOW NOTHING at all", _unknown("SHOW", "NOTHING")),
        ("REROUTE MSG 1 to x", _unknown("REROUTE", "MSG")),
        ("REQUEUE ROUTER x", _unknown("REQUEUE", "ROUTER x")),
        ("", _unknown("", "")),
    ],
)
def test_unknown_and_malformed_commands(line: str, reply: Reply) -> None:
    service, queue, ops = _service()
    verb, _, rest = line.partition(" ")
    got, delta = _run(service, queue, Command(verb, rest), _client(Right.ALL))
    assert got == reply
    assert delta == {"SC.MQ2Commands": 1, "SC.MQ2CommandsRej": 1}
    assert ops.calls == []


@pytest.mark.parametrize(
    ("line", "reply", "counter", "calls"),
    [
        ("ETRN", replies.ETRN_NOTHING, "CommandETRN", []),
        ("ETRN nowhere.example", replies.ETRN_NOTHING, "CommandETRN",
         [("etrn", "nowhere.example")]),
        ("KILL MSG", replies.KILL_NO_SUCH_MESSAGE, None, []),
        ("KILL MSG nope", replies.KILL_NO_SUCH_MESSAGE, None,
         [("kill_msg", "nope")]),
        ("KILL THREAD smtp", replies.KILL_UNKNOWN_REQUEST, None, []),
        ("KILL THREAD smtp nowhere", replies.KILL_UNKNOWN_REQUEST, None, []),
        ("KILL ROUTER x", replies.KILL_UNKNOWN_REQUEST, None, []),
        ("REQUEUE MSG", replies.REQUEUE_NO_SUCH_MESSAGE, None, []),
    ],
)  # fmt: skip
def test_operations_that_find_nothing(
    line: str, reply: str, counter: str | None, calls: list[tuple[str, ...]]
) -> None:
    service, queue, ops = _service()
    verb, _, rest = line.partition(" ")
    got, delta = _run(service, queue, Command(verb, rest), _client(Right.ALL))
    assert got == Reply(reply)
    expected = {"SC.MQ2Commands": 1}
    if counter:
        expected["SC.MQ2" + counter] = 1
    assert delta == expected
    assert ops.calls == calls


def test_requeue_found() -> None:
    service, queue, ops = _service()
    ops.requeueable.add("100001")
    reply, _ = _run(
        service, queue, Command("REQUEUE", "MSG 100001"), _client(Right.KILL)
    )
    assert reply == Reply(replies.REQUEUE_OK)


# ---- events before and around AUTH ---------------------------------------------------


def test_auth_success_sets_rights_and_counts() -> None:
    service, queue, _ = _service()
    client = Client(PEER, CHALLENGE)
    request = AuthRequest("qq", authenticator(CHALLENGE, "qqpw").upper())
    reply, delta = _run(service, queue, request, client)
    assert reply == AuthAccepted("qq", Right.QQ)
    assert (client.user, client.rights) == ("qq", Right.QQ)
    assert delta == {"SC.MQ2Commands": 1, "SC.MQ2CommandAUTH": 1}


@pytest.mark.parametrize(
    ("user", "password", "reply"),
    [
        ("qq", "wrong", replies.AUTH_BAD_PASSWORD),
        ("nobody", "x", replies.AUTH_BAD_USER),
        ("far", "farpw", replies.AUTH_BAD_USER),  # the ACL does not admit the peer
    ],
)
def test_auth_failures_count_authrej(user: str, password: str, reply: str) -> None:
    service, queue, _ = _service()
    client = Client(PEER, CHALLENGE)
    request = AuthRequest(user, authenticator(CHALLENGE, password))
    got, delta = _run(service, queue, request, client)
    assert got == AuthRejected(reply)
    assert client.rights == Right.NONE
    assert client.user is None
    assert delta == {
        "SC.MQ2Commands": 1,
        "SC.MQ2CommandAUTH": 1,
        "SC.MQ2AuthRej": 1,
    }


def test_auth_without_a_readable_file_is_refused() -> None:
    service, queue, _ = _service()
    client = Client(PEER, CHALLENGE)
    request = AuthRequest("admin", authenticator(CHALLENGE, "adminpw"))
    before = queue.counters.get("SC.MQ2AuthRej")
    reply = service.handle(request, client, lambda: None)
    assert reply == AuthRejected(replies.AUTH_BAD_USER)
    assert queue.counters.get("SC.MQ2AuthRej") == before + 1


def test_before_auth_quit_and_eof() -> None:
    service, queue, _ = _service()
    client = Client(PEER, CHALLENGE)
    invalid = InvalidCommand("SHOW", replies.MUST_AUTHENTICATE)
    reply, delta = _run(service, queue, invalid, client)
    assert reply == Reply(replies.MUST_AUTHENTICATE)
    assert delta == {"SC.MQ2Commands": 1, "SC.MQ2CommandsRej": 1}
    reply, delta = _run(service, queue, Quit(), client)
    assert reply == Bye()
    assert delta == {"SC.MQ2Commands": 1, "SC.MQ2CommandQUIT": 1}
    reply, delta = _run(service, queue, ConnectionClosed(), client)
    assert reply is None
    assert delta == {}


def test_auth_after_login_is_unknown_and_never_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    service, queue, _ = _service()
    digest = authenticator(CHALLENGE, "adminpw")
    reply, delta = _run(
        service, queue, Command("AUTH", f"admin {digest}"), _client(Right.ALL)
    )
    assert reply == _unknown("AUTH", f"admin {digest}")  # echoed to the peer (B8 keep)
    assert delta == {"SC.MQ2Commands": 1, "SC.MQ2CommandsRej": 1}
    assert digest not in caplog.text
    assert "<hidden>" in caplog.text


def test_gauges_and_count() -> None:
    service, queue, _ = _service()
    service.set_parallel(7)
    service.count("TimedOut", 2)
    assert queue.counters.get("SC.MQ2Parallel-G") == 7
    assert queue.counters.get("SC.MQ2TimedOut") == 2
    assert service.now() == NOW
