"""The smtp agent finding its hosts through DNS, against scripted SMTP servers on
127.0.0.x and a DNS server on the wire (all loopback)."""

from __future__ import annotations

import shutil
import ssl
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from spool.layout import Postoffice
from spool.submit import submit
from tests.scheduler.ta.conftest import (
    MESSAGE,
    add_after_recipients,
    control,
    run_ta,
    statuses,
)
from tests.scheduler.ta.dnsserver import DnsServer, ThreadedDnsServer
from tests.scheduler.ta.scripted_smtp import ScriptedSmtp, Servers

ZONE: dict[tuple[str, str], list[str | tuple[int, str]]] = {
    # first MX refuses connections (nothing listens on 127.0.0.9), second takes mail
    ("two.example", "MX"): [(10, "down.two.example"), (20, "up.two.example")],
    ("down.two.example", "A"): ["127.0.0.9"],
    ("up.two.example", "A"): ["127.0.0.2"],
    # first MX greets 421, second takes mail
    ("busy.example", "MX"): [(10, "busy.busy.example"), (20, "up.two.example")],
    ("busy.busy.example", "A"): ["127.0.0.3"],
    # the only MX greets 554
    ("hostile.example", "MX"): [(10, "no.hostile.example")],
    ("no.hostile.example", "A"): ["127.0.0.4"],
    ("null.example", "MX"): [(0, "")],
    ("direct.example", "A"): ["127.0.0.2"],
    ("six.example", "AAAA"): ["::1"],
    ("six.example", "A"): ["127.0.0.5"],
}

EXPECTED_DATA = MESSAGE.replace(b"\n", b"\r\n").replace(b"\r\n.a line", b"\r\n..a line")


@pytest.fixture(scope="module")
def dns() -> Iterator[DnsServer]:
    server = DnsServer(
        zone=dict(ZONE), nxdomain={"nx.example"}, servfail={"sf.example"}
    )
    with ThreadedDnsServer(server) as running:
        yield running


def _submit(po: Postoffice, host: str, *users: str, message: bytes = MESSAGE) -> str:
    rcpts = [("smtp", host, u) for u in users]
    return submit(po, "alice@example.com", rcpts, message, hash_levels=1)


def _agent(dns: DnsServer, port: int, *extra: str) -> list[str]:
    return ["-h", "agent.test", "--resolver", dns.address, "-p", str(port), *extra]


def _up(**kwargs: object) -> ScriptedSmtp:
    return ScriptedSmtp("127.0.0.2", **kwargs)  # type: ignore[arg-type]


def test_first_mx_refuses_second_takes_it_byte_for_byte(
    po: Postoffice, dns: DnsServer
) -> None:
    rel = _submit(po, "two.example", "bob@two.example")
    with Servers(_up()) as s:
        res = run_ta("smtp", po, [f"{rel}\ttwo.example"], *_agent(dns, s.port))
    [rep] = res.reports
    assert rep[2] == "ok", res.stderr
    up = s.servers[0]
    assert up.raw_data == [EXPECTED_DATA]
    assert up.accepted == [("alice@example.com", ["bob@two.example"])]
    assert rep[1].split("\001")[4] == "up.two.example"
    assert statuses(po, rel) == {"bob@two.example": "+"}


def test_4xx_greeting_moves_to_the_next_mx(po: Postoffice, dns: DnsServer) -> None:
    rel = _submit(po, "busy.example", "a@busy.example")
    busy = ScriptedSmtp("127.0.0.3", greeting="421 4.3.2 too busy")
    with Servers(_up(), busy) as s:
        res = run_ta("smtp", po, [f"{rel}\tbusy.example"], *_agent(dns, s.port))
    assert [r[2] for r in res.reports] == ["ok"], res.stderr
    assert busy.sessions == 1
    assert len(s.servers[0].accepted) == 1


def test_5xx_greeting_of_every_host_fails(po: Postoffice, dns: DnsServer) -> None:
    rel = _submit(po, "hostile.example", "a@hostile.example")
    with Servers(ScriptedSmtp("127.0.0.4", greeting="554 5.7.1 go away")) as s:
        res = run_ta("smtp", po, [f"{rel}\thostile.example"], *_agent(dns, s.port))
    [rep] = res.reports
    assert rep[2].removesuffix("2") == "error"
    assert rep[3] == "smtp; 554 (5.7.1 go away)"


def test_null_mx_nxdomain_fail_servfail_defers(po: Postoffice, dns: DnsServer) -> None:
    null = _submit(po, "null.example", "a@null.example")
    nx = _submit(po, "nx.example", "b@nx.example")
    sf = _submit(po, "sf.example", "c@sf.example", "d@sf.example")
    jobs = [f"{null}\tnull.example", f"{nx}\tnx.example", f"{sf}\tsf.example"]
    res = run_ta("smtp", po, jobs, *_agent(dns, 25, "--timeouts", "connect=2"))
    by_user = {r[1].split("\001")[0]: r for r in res.reports}
    a, b = by_user["a@null.example"], by_user["b@nx.example"]
    assert (a[2].removesuffix("2"), a[1].split("\001")[2]) == ("error", "5.1.10")
    assert a[3].startswith("smtp; 556 (5.1.10 null.example does not accept mail")
    assert (b[2].removesuffix("2"), b[1].split("\001")[2]) == ("error", "5.1.2")
    assert [by_user[u][2] for u in ("c@sf.example", "d@sf.example")] == [
        "deferred",
        "deferall",
    ]
    assert "4.4.3" in by_user["c@sf.example"][3]
    assert "SERVFAIL" in by_user["c@sf.example"][3]
    assert statuses(po, null) == {"a@null.example": "-"}
    assert statuses(po, sf) == {"c@sf.example": " ", "d@sf.example": " "}


def test_5xx_rcpt_for_one_of_two_pipelined(po: Postoffice, dns: DnsServer) -> None:
    rel = _submit(po, "direct.example", "good@direct.example", "bad@direct.example")
    server = _up(rcpt={"bad@*": "550 5.1.1 no such user"})
    with Servers(server) as s:
        res = run_ta("smtp", po, [f"{rel}\tdirect.example"], *_agent(dns, s.port))
    by_user = {r[1].split("\001")[0]: r[2].removesuffix("2") for r in res.reports}
    assert by_user == {"good@direct.example": "ok", "bad@direct.example": "error"}
    assert server.accepted == [("alice@example.com", ["good@direct.example"])]
    mail = next(i for i, c in enumerate(server.commands) if c.startswith("MAIL"))
    # pipelined: MAIL, both RCPTs and DATA arrived before any reply was needed
    assert [c.split(":")[0] for c in server.commands[mail : mail + 4]] == [
        "MAIL FROM",
        "RCPT TO",
        "RCPT TO",
        "DATA",
    ]


def test_size_too_big_fails_before_mail(po: Postoffice, dns: DnsServer) -> None:
    rel = _submit(po, "direct.example", "a@direct.example")
    server = _up(extensions=["PIPELINING", "SIZE 100", "8BITMIME"])
    with Servers(server) as s:
        res = run_ta("smtp", po, [f"{rel}\tdirect.example"], *_agent(dns, s.port))
    [rep] = res.reports
    assert rep[2].removesuffix("2") == "error"
    assert rep[1].split("\001")[2] == "5.3.4"
    assert not [c for c in server.commands if c.startswith("MAIL")]


def test_8bit_without_8bitmime_fails_clearly(po: Postoffice, dns: DnsServer) -> None:
    msg = MESSAGE.replace(b"Hello.", "Hyvää päivää.".encode())
    rel = _submit(po, "direct.example", "a@direct.example", message=msg)
    ok = _submit(po, "direct.example", "b@direct.example", message=msg)
    plain = _up(extensions=["PIPELINING"])
    with Servers(plain) as s:
        res = run_ta("smtp", po, [f"{rel}\tdirect.example"], *_agent(dns, s.port))
    [rep] = res.reports
    assert (rep[2].removesuffix("2"), rep[1].split("\001")[2]) == ("error", "5.6.3")
    assert plain.raw_data == []
    with Servers(_up()) as s:
        res = run_ta("smtp", po, [f"{ok}\tdirect.example"], *_agent(dns, s.port))
    assert [r[2] for r in res.reports] == ["ok"]
    assert "BODY=8BITMIME" in next(
        c for c in s.servers[0].commands if c.startswith("MAIL")
    )


def test_utf8_address_needs_smtputf8(po: Postoffice, dns: DnsServer) -> None:
    rel = _submit(po, "direct.example", "jörg@direct.example")
    with Servers(_up(extensions=["8BITMIME"])) as s:
        res = run_ta("smtp", po, [f"{rel}\tdirect.example"], *_agent(dns, s.port))
    [rep] = res.reports
    assert (rep[2].removesuffix("2"), rep[1].split("\001")[2]) == ("error", "5.6.7")
    rel = _submit(po, "direct.example", "jörg@direct.example")
    with Servers(_up()) as s:
        res = run_ta("smtp", po, [f"{rel}\tdirect.example"], *_agent(dns, s.port))
    assert [r[2] for r in res.reports] == ["ok"]
    assert next(c for c in s.servers[0].commands if c.startswith("MAIL")).endswith(
        " SMTPUTF8"
    )


def test_long_lines_broken_within_998_octets(po: Postoffice, dns: DnsServer) -> None:
    long_body = b"." + b"y" * 2500 + b"\n"
    msg = b"Subject: " + b"s" * 1500 + b"\n\n" + long_body
    rel = _submit(po, "direct.example", "a@direct.example", message=msg)
    with Servers(_up()) as s:
        res = run_ta("smtp", po, [f"{rel}\tdirect.example"], *_agent(dns, s.port))
    assert [r[2] for r in res.reports] == ["ok"]
    [data] = s.servers[0].raw_data
    lines = data.split(b"\r\n")
    assert max(len(line) for line in lines) <= 998
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.replace(b"\r\n ", b"") == b"Subject: " + b"s" * 1500
    unstuffed = [
        line[1:] if line.startswith(b".") else line for line in body.split(b"\r\n")
    ]
    assert b"".join(unstuffed) == long_body.rstrip(b"\n")


def test_session_reused_for_the_next_message_with_rset(
    po: Postoffice, dns: DnsServer
) -> None:
    rels = [_submit(po, "direct.example", f"u{i}@direct.example") for i in range(3)]
    with Servers(_up()) as s:
        res = run_ta(
            "smtp", po, [f"{r}\tdirect.example" for r in rels], *_agent(dns, s.port)
        )
    server = s.servers[0]
    assert [r[2] for r in res.reports] == ["ok"] * 3
    assert server.sessions == 1
    assert len(server.accepted) == 3
    assert [c for c in server.commands if c in ("RSET", "QUIT")] == [
        "RSET",
        "RSET",
        "QUIT",
    ]
    with Servers(_up()) as s:
        run_ta(
            "smtp",
            po,
            [f"{_submit(po, 'direct.example', 'x@direct.example')}\tdirect.example"] * 1
            + [f"{_submit(po, 'direct.example', 'y@direct.example')}\tdirect.example"],
            *_agent(dns, s.port, "--no-reuse"),
        )
    assert s.servers[0].sessions == 2


def test_slow_reply_times_out_and_defers(po: Postoffice, dns: DnsServer) -> None:
    rel = _submit(po, "direct.example", "a@direct.example")
    slow = _up(delay={"DOT": 3.0})
    with Servers(slow) as s:
        res = run_ta(
            "smtp",
            po,
            [f"{rel}\tdirect.example"],
            *_agent(dns, s.port, "--timeouts", "dot=0.5"),
        )
    [rep] = res.reports
    assert rep[2] == "deferred"
    assert "timed out" in rep[3]
    assert statuses(po, rel) == {"a@direct.example": " "}


def test_dsn_server_success_notify_reports_ok3(po: Postoffice, dns: DnsServer) -> None:
    rel = _submit(po, "direct.example", "a@direct.example")
    add_after_recipients(
        po,
        rel,
        {"a@direct.example": b"N NOTIFY=SUCCESS ORCPT=rfc822;a@direct.example\n"},
    )
    with Servers(_up()) as s:
        res = run_ta("smtp", po, [f"{rel}\tdirect.example"], *_agent(dns, s.port))
    [rep] = res.reports
    assert rep[2] == "ok3"  # as ZMailer's smtp: the server will send the success DSN
    assert control(po, rel).diagnostics == []
    rcpt = next(c for c in s.servers[0].commands if c.startswith("RCPT"))
    assert "NOTIFY=SUCCESS" in rcpt


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl is not available to make a test certificate")
    d = tmp_path_factory.mktemp("tls")
    key, cert = d / "key.pem", d / "cert.pem"
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key),
         "-out", str(cert), "-days", "2", "-subj", "/CN=direct.example",
         "-addext", "subjectAltName=DNS:direct.example"],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return cert, key


def test_starttls_verified_per_destination(
    po: Postoffice, dns: DnsServer, certificate: tuple[Path, Path], tmp_path: Path
) -> None:
    cert, key = certificate
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)
    policy = tmp_path / "tls"
    policy.write_text("direct.example verify\n")
    rel = _submit(po, "direct.example", "a@direct.example")
    with Servers(_up(tls=ctx)) as s:
        res = run_ta(
            "smtp",
            po,
            [f"{rel}\tdirect.example"],
            *_agent(dns, s.port, "--tls-policy", str(policy), "--tls-ca", str(cert)),
        )
    assert [r[2] for r in res.reports] == ["ok"], res.stderr
    assert s.servers[0].tls_sessions == 1
    # the same policy without the CA: verification fails, nothing is sent in clear
    rel = _submit(po, "direct.example", "b@direct.example")
    with Servers(_up(tls=ctx)) as s:
        res = run_ta(
            "smtp",
            po,
            [f"{rel}\tdirect.example"],
            *_agent(dns, s.port, "--tls-policy", str(policy)),
        )
    [rep] = res.reports
    assert rep[2] == "deferall"
    assert "TLS negotiation" in rep[3]
    assert s.servers[0].accepted == []


def test_zmailer_x_flag_skips_mx_and_t_sets_timeouts(
    po: Postoffice, dns: DnsServer
) -> None:
    from scheduler.ta.smtp import parse_timeouts

    rel = _submit(po, "two.example", "a@two.example")  # has MX records, but no A
    res = run_ta("smtp", po, [f"{rel}\ttwo.example"], *_agent(dns, 25, "-x"))
    [rep] = res.reports
    assert rep[2].removesuffix("2") == "error"
    assert "no address records for two.example" in rep[3]
    t = parse_timeouts(None, None, ["conn=20", "dot=15m", "90"])
    assert (t.connect, t.dot, t.greeting, t.mail, t.block) == (20, 900, 90, 90, 180)


def test_a_session_closed_by_the_server_is_reopened(
    po: Postoffice, dns: DnsServer
) -> None:
    rels = [_submit(po, "direct.example", f"u{i}@direct.example") for i in range(2)]
    server = _up(close_after_data=True)
    with Servers(server) as s:
        res = run_ta(
            "smtp", po, [f"{r}\tdirect.example" for r in rels], *_agent(dns, s.port)
        )
    assert [r[2] for r in res.reports] == ["ok", "ok"], res.stderr
    assert server.sessions == 2
    assert len(server.accepted) == 2


def test_ipv6_address_tried_first(po: Postoffice, dns: DnsServer) -> None:
    rel = _submit(po, "six.example", "a@six.example")
    six, four = ScriptedSmtp("::1"), ScriptedSmtp("127.0.0.5")
    try:
        with Servers(six, four) as s:
            res = run_ta("smtp", po, [f"{rel}\tsix.example"], *_agent(dns, s.port))
    except OSError:
        pytest.skip("no IPv6 loopback")
    assert [r[2] for r in res.reports] == ["ok"], res.stderr
    assert six.accepted == [("alice@example.com", ["a@six.example"])]
    assert four.sessions == 0


def test_bad_domain_name_fails_at_once(po: Postoffice, dns: DnsServer) -> None:
    rel = _submit(po, "a..b.example", "x@a..b.example")
    res = run_ta("smtp", po, [f"{rel}\ta..b.example"], *_agent(dns, 25))
    [rep] = res.reports
    assert (rep[2].removesuffix("2"), rep[1].split("\001")[2]) == ("error", "5.1.2")


def test_slow_greeting_moves_on_to_the_next_mx(po: Postoffice, dns: DnsServer) -> None:
    rel = _submit(po, "busy.example", "a@busy.example")
    slow = ScriptedSmtp("127.0.0.3", delay={"GREETING": 3.0})
    with Servers(_up(), slow) as s:
        res = run_ta(
            "smtp",
            po,
            [f"{rel}\tbusy.example"],
            *_agent(dns, s.port, "--timeouts", "greeting=0.5"),
        )
    assert [r[2] for r in res.reports] == ["ok"], res.stderr
    assert slow.sessions == 1
    assert len(s.servers[0].accepted) == 1


def test_known_results_survive_a_connection_lost_at_rset(
    po: Postoffice, dns: DnsServer
) -> None:
    rel = _submit(po, "direct.example", "a@direct.example", "b@direct.example")
    server = _up(rcpt={"*": "550 5.1.1 unknown"}, drop_on={"RSET"})
    with Servers(server) as s:
        res = run_ta("smtp", po, [f"{rel}\tdirect.example"], *_agent(dns, s.port))
    assert [r[2].removesuffix("2") for r in res.reports] == ["error", "error"], (
        res.stderr
    )
