"""The smtp agent against a real SMTP sink on 127.0.0.1 (and a closed port)."""

from __future__ import annotations

import email
import shutil
import socket
import ssl
import subprocess
from pathlib import Path

import pytest

from scheduler.ta import smtp
from spool.layout import Postoffice
from spool.submit import submit
from tests.scheduler.ta.conftest import (
    MESSAGE,
    add_after_recipients,
    control,
    run_ta,
    statuses,
)
from tests.smtpsink import SmtpSink, ThreadedSmtpSink

RULES = {
    "*@fail.example": "550 5.1.1 <{rcpt}>... User unknown",
    "*@later.example": "451 4.3.0 try again later",
}


def _relay(port: int) -> list[str]:
    return ["-h", "agent.test", "-F", "[127.0.0.1]", "-p", str(port), "-s", "-x"]


def _submit(po: Postoffice, host: str, *users: str) -> str:
    rcpts = [("smtp", host, u) for u in users]
    return submit(po, "alice@example.com", rcpts, MESSAGE, hash_levels=1)


def test_one_transaction_envelope_dsn_params_and_body(po: Postoffice) -> None:
    rel = _submit(po, "mx.example", "bob@ok.example", "carol@ok.example")
    add_after_recipients(
        po,
        rel,
        {"bob@ok.example": b"N NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;Bob+40ok.example\n"},
    )
    with ThreadedSmtpSink(RULES) as sink:
        res = run_ta("smtp", po, [f"{rel}\tmx.example"], *_relay(sink.port))
        txns = sink.transactions
        sessions = sink.sessions
    assert res.returncode == 0, res.stderr
    assert sessions == 1
    assert len(txns) == 1
    txn = txns[0]
    assert txn.helo == "agent.test"
    assert txn.mail_from == "alice@example.com"
    assert any(p.startswith("SIZE=") for p in txn.mail_params)
    assert txn.rcpts == [
        ("bob@ok.example", ["NOTIFY=SUCCESS,FAILURE", "ORCPT=rfc822;Bob+40ok.example"]),
        ("carol@ok.example", []),
    ]
    msg = email.message_from_bytes(txn.data.replace(b"\r\n", b"\n"))
    assert msg["Subject"] == "agent test"
    assert msg.get_payload() == "Hello.\n.a line starting with a dot\nBye.\n"
    assert b"\r\n..a line" not in txn.data  # unstuffed by the sink: stuffed on the wire
    assert sorted(r[2] for r in res.reports) == ["ok", "ok3"]  # DSN server: ok3
    assert set(statuses(po, rel).values()) == {"+"}
    notary = res.reports[0][1].split("\001")
    assert notary[1] == "delivered"
    assert notary[3].startswith("smtp; 250 (2.0.0 Ok")


def test_4xx_deferred_5xx_error_with_d_line(po: Postoffice) -> None:
    rel = _submit(
        po, "mx.example", "bob@ok.example", "x@fail.example", "y@later.example"
    )
    with ThreadedSmtpSink(RULES) as sink:
        res = run_ta("smtp", po, [f"{rel}\tmx.example"], *_relay(sink.port))
        txns = sink.transactions
    by_user = {r[1].split("\001")[0]: r for r in res.reports}
    assert by_user["bob@ok.example"][2] == "ok"
    assert by_user["x@fail.example"][2] == "error2"
    assert (
        by_user["x@fail.example"][3]
        == "smtp; 550 (5.1.1 <x@fail.example>... User unknown)"
    )
    assert by_user["x@fail.example"][1].split("\001")[2] == "5.1.1"
    assert by_user["y@later.example"][2] == "deferred"
    assert by_user["y@later.example"][3] == "smtp; 451 (4.3.0 try again later)"
    assert statuses(po, rel) == {
        "bob@ok.example": "+",
        "x@fail.example": "-",
        "y@later.example": " ",
    }
    [d] = control(po, rel).diagnostics
    assert d.message == "smtp; 550 (5.1.1 <x@fail.example>... User unknown)"
    assert [r for r, _ in txns[0].rcpts] == ["bob@ok.example"]


def test_refused_connection_defers_every_recipient(po: Postoffice) -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    rel = _submit(po, "mx.example", "a@ok.example", "b@ok.example")
    res = run_ta("smtp", po, [f"{rel}\tmx.example"], *_relay(port))
    assert [r[2] for r in res.reports] == ["deferred", "deferall"]
    for r in res.reports:
        assert r[3].startswith(
            f"smtp; 500 (connect to 127.0.0.1 [127.0.0.1|{port}|127.0.0.1|"
        )
        assert r[3].endswith("]: Connection refused)")
    assert set(statuses(po, rel).values()) == {" "}
    assert control(po, rel).diagnostics == []


def test_dropped_connection_defers(po: Postoffice) -> None:
    rel = _submit(po, "mx.example", "a@drop.example")
    with ThreadedSmtpSink({"*@drop.example": "drop"}) as sink:
        res = run_ta("smtp", po, [f"{rel}\tmx.example"], *_relay(sink.port))
    [rep] = res.reports
    assert rep[2] == "deferred"
    assert "lost" in rep[3]
    assert statuses(po, rel) == {"a@drop.example": " "}


def test_no_pipelining_no_dsn_helo_fallback(po: Postoffice) -> None:
    rel = _submit(po, "mx.example", "a@ok.example", "b@fail.example")
    add_after_recipients(po, rel, {"a@ok.example": b"N NOTIFY=SUCCESS\n"})
    with ThreadedSmtpSink(RULES, ehlo=False) as sink:
        res = run_ta("smtp", po, [f"{rel}\tmx.example"], *_relay(sink.port))
        txns = sink.transactions
        commands = list(sink.sink.commands)
    assert commands[0].startswith("EHLO")
    assert commands[1] == "HELO agent.test"
    assert txns[0].rcpts == [
        ("a@ok.example", [])
    ]  # no DSN params without the extension
    by_user = {r[1].split("\001")[0]: r for r in res.reports}
    assert by_user["a@ok.example"][2] == "ok2"
    assert by_user["a@ok.example"][1].split("\001")[1] == "relayed"
    assert by_user["b@fail.example"][2] == "error2"


def test_route_map_and_literal_host(po: Postoffice, tmp_path: Path) -> None:
    rel = _submit(po, "routed.example", "a@ok.example")
    rel2 = _submit(po, "[127.0.0.1]", "b@ok.example")
    with ThreadedSmtpSink(RULES) as sink:
        routes = tmp_path / "routes"
        routes.write_text(f"# test routes\nrouted.example [127.0.0.1]:{sink.port}\n")
        res = run_ta(
            "smtp",
            po,
            [f"{rel}\trouted.example", f"{rel2}\t[127.0.0.1]"],
            "--route-map",
            str(routes),
            "-p",
            str(sink.port),
        )
        txns = sink.transactions
    assert [r[2] for r in res.reports] == ["ok", "ok"]
    assert [t.rcpts[0][0] for t in txns] == ["a@ok.example", "b@ok.example"]


def test_route_lookup_unit() -> None:
    settings = smtp.Settings(
        heloname="h",
        relay="relay.example:2525",
        port=25,
        routes={".sub.example": ("[::1]", 26)},
    )
    assert smtp.route_for("a.sub.example", settings) == ("[::1]", 26)
    assert smtp.route_for("other.example", settings) == ("relay.example", 2525)
    assert smtp.split_hostport("[::1]:25") == ("[::1]", 25)
    assert smtp.split_hostport("mx.example") == ("mx.example", None)
    assert smtp.message_bytes(b"A: b\n", b".x\ny\n") == b"A: b\r\n\r\n..x\r\ny\r\n"


@pytest.fixture(scope="module")
def tls_context(tmp_path_factory: pytest.TempPathFactory) -> ssl.SSLContext:
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl is not available to make a test certificate")
    d = tmp_path_factory.mktemp("tls")
    key, cert = d / "key.pem", d / "cert.pem"
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key),
         "-out", str(cert), "-days", "2", "-subj", "/CN=127.0.0.1"],
        check=True,
        capture_output=True,
    )  # fmt: skip
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)
    return ctx


def test_starttls_opportunistic(po: Postoffice, tls_context: ssl.SSLContext) -> None:
    rel = _submit(po, "mx.example", "a@ok.example")
    with ThreadedSmtpSink(RULES, tls=tls_context) as sink:
        res = run_ta("smtp", po, [f"{rel}\tmx.example"], *_relay(sink.port))
        txns = sink.transactions
    assert [r[2] for r in res.reports] == ["ok"], res.stderr
    assert txns[0].tls


def test_require_tls_without_starttls_defers(po: Postoffice) -> None:
    rel = _submit(po, "mx.example", "a@ok.example")
    with ThreadedSmtpSink(RULES) as sink:
        res = run_ta(
            "smtp", po, [f"{rel}\tmx.example"], *_relay(sink.port), "--require-tls"
        )
        txns = sink.transactions
    [rep] = res.reports
    assert rep[2] == "deferall"  # no host of the thread will do: defer them all
    assert "TLS required" in rep[3]
    assert txns == []


@pytest.mark.asyncio
async def test_sink_async_usage() -> None:
    import asyncio

    async with SmtpSink(RULES) as sink:
        reader, writer = await asyncio.open_connection("127.0.0.1", sink.port)
        assert (await reader.readline()).startswith(b"220")
        writer.write(
            b"EHLO t\r\nMAIL FROM:<a@b>\r\nRCPT TO:<x@fail.example>\r\nQUIT\r\n"
        )
        replies = [await reader.readline() for _ in range(8)]
        writer.close()
        await writer.wait_closed()
    assert any(r.startswith(b"550 5.1.1 <x@fail.example>") for r in replies)
