"""Mail really leaves: the real daemon runs the real smtp agent against a loopback sink.

Messages are submitted with ``mailq-spool submit`` while the daemon runs. The sink gets
exactly the right envelope and body; a 4xx deferral carries the diagnostic and is retried
per the clause; a 5xx produces a DSN (RFC 3464), which itself goes out through the smtp
agent from the null sender and is parsed here with the ``email`` package.
"""

from __future__ import annotations

import email
from email.message import Message

from tests.e2e.conftest import DaemonFactory, DaemonProc, files_gone, wait_until
from tests.smtpsink import ThreadedSmtpSink, Transaction

CONF = """\
*/*\tinterval=2 idlemax=30s expiry=5d retries="1 1 1 1 1" skew=1
\tmaxchannel=0 maxring=20 overfeed=10

smtp/*\tcommand="builtin:smtp -h e2e.test -F [127.0.0.1] -p {port}"
"""
RULES = {
    "*@fail.example": "550 5.1.1 <{rcpt}>... User unknown",
    "*@later.example": "451 4.3.0 try again later",
}


def _to(sink: ThreadedSmtpSink, rcpt: str) -> list[Transaction]:
    return [t for t in sink.transactions if rcpt in [r[0] for r in t.rcpts]]


def _parts(msg: Message) -> list[Message]:
    payload = msg.get_payload()
    assert isinstance(payload, list)
    out: list[Message] = []
    for part in payload:
        assert isinstance(part, Message)
        out.append(part)
    return out


def _thread_row(d: DaemonProc, host: str) -> list[str]:
    (body,) = d.query(f"SHOW THREAD smtp {host}")
    rows = [line for line in body.splitlines() if not line.startswith("#")]
    return rows[0].split("\t", 9) if rows else []


def test_delivery_deferral_and_bounce_through_the_daemon(
    daemon_factory: DaemonFactory,
) -> None:
    with ThreadedSmtpSink(RULES) as sink:
        d = daemon_factory(CONF.format(port=sink.port))
        # One at a time: names are i-node numbers (as ZMailer's), and a completed
        # message frees its number for the next submission.
        ok = d.submit("ok@ok.example")

        # delivered: exactly one transaction with the right envelope and body
        wait_until(lambda: files_gone(d.po, ok), what="delivery to ok.example")
        (txn,) = _to(sink, "ok@ok.example")
        assert txn.helo == "e2e.test"
        assert txn.mail_from == "sender@example.com"
        assert [r[0] for r in txn.rcpts] == ["ok@ok.example"]
        assert b"Subject: e2e\r\n" in txn.data
        assert txn.data.endswith(b"\r\n\r\nbody\r\n")

        # bounced: the message is gone and a DSN from <> reaches the sender
        fail = d.submit("fail@fail.example")
        wait_until(lambda: files_gone(d.po, fail), what="the 5xx to complete")
        wait_until(lambda: _to(sink, "sender@example.com"), what="the DSN", limit=60)
        (dsn,) = _to(sink, "sender@example.com")
        assert dsn.mail_from == ""
        report = email.message_from_bytes(dsn.data.replace(b"\r\n", b"\n"))
        assert report.get_content_type() == "multipart/report"
        assert report.get_param("report-type") == "delivery-status"
        assert "FAILED" in str(report["Subject"])
        parts = _parts(report)
        (status,) = [
            p for p in parts if p.get_content_type() == "message/delivery-status"
        ]
        blocks = status.get_payload()
        assert isinstance(blocks, list)
        per_message, per_rcpt = blocks[0], blocks[1]
        assert isinstance(per_message, Message)
        assert isinstance(per_rcpt, Message)
        assert per_message["Reporting-MTA"]
        assert per_rcpt["Final-Recipient"].replace(" ", "").lower() == (
            "rfc822;fail@fail.example"
        )
        assert per_rcpt["Action"] == "failed"
        assert per_rcpt["Status"] == "5.1.1"
        assert "550" in per_rcpt["Diagnostic-Code"]
        returned = [
            p
            for p in parts
            if p.get_content_type() in ("message/rfc822", "text/rfc822-headers")
        ]
        assert returned

        # deferred: kept, the diagnostic recorded, retried per the clause (interval 2 s)
        later = d.submit("later@later.example")
        wait_until(
            lambda: int((_thread_row(d, "later.example") or ["0"] * 8)[7]) >= 2,
            what="a retry of later.example",
            limit=60,
        )
        row = _thread_row(d, "later.example")
        assert row[0] == later
        assert "451" in row[9]
        assert "try again later" in row[9]
        assert not files_gone(d.po, later)
        assert _to(sink, "later@later.example") == []  # never accepted


DNS_CONF = """\
*/*\tinterval=2 idlemax=30s expiry=5d retries="1 1 1 1 1" skew=1
\tmaxchannel=0 maxring=20 overfeed=10

smtp/*\tcommand="builtin:smtp -h e2e.test --resolver {resolver} -p {port}"
"""


def test_mx_fallover_and_null_mx_bounce_once(daemon_factory: DaemonFactory) -> None:
    """Through DNS: the first MX refuses, the second takes it; a null-MX domain bounces
    once (and the bounce finds the sender's MX too)."""
    from tests.scheduler.ta.dnsserver import DnsServer, ThreadedDnsServer
    from tests.scheduler.ta.scripted_smtp import ScriptedSmtp, Servers

    zone: dict[tuple[str, str], list[str | tuple[int, str]]] = {
        ("two.example", "MX"): [(10, "down.two.example"), (20, "up.two.example")],
        ("down.two.example", "A"): ["127.0.0.9"],  # nothing listens there
        ("up.two.example", "A"): ["127.0.0.2"],
        ("null.example", "MX"): [(0, "")],
        ("example.com", "MX"): [(10, "up.two.example")],
    }
    server = ScriptedSmtp("127.0.0.2")
    with ThreadedDnsServer(DnsServer(zone=zone)) as dns, Servers(server) as smtp:
        d = daemon_factory(DNS_CONF.format(resolver=dns.address, port=smtp.port))
        ok = d.submit("bob@two.example")
        wait_until(lambda: files_gone(d.po, ok), what="delivery via the second MX")
        assert server.accepted == [("sender@example.com", ["bob@two.example"])]

        null = d.submit("x@null.example")
        wait_until(lambda: files_gone(d.po, null), what="the null MX to fail")
        wait_until(
            lambda: any(m == "" for m, _ in server.accepted),
            what="the bounce",
            limit=60,
        )
        wait_until(
            lambda: not list(d.po.transport.rglob("[0-9]*")), what="an empty queue"
        )
        bounces = [(m, r) for m, r in server.accepted if m == ""]
        assert bounces == [("", ["sender@example.com"])]
        [data] = [raw for raw in server.raw_data if b"x@null.example" in raw]
        assert b"5.1.10" in data
