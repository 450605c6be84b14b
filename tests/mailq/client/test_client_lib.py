"""``MailqClient`` and ``BlockingMailqClient`` over real sockets against replay servers."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import pytest

from mailq.client.errors import (
    AccessDenied,
    AuthError,
    CommandRefused,
    ConnectError,
    ProtocolError,
)
from mailq.client.library import (
    BlockingMailqClient,
    MailqClient,
    order_addresses,
    resolve_port,
)
from tests.mailq.client.replayserver import (
    TRANSCRIPTS,
    Exchange,
    ReplayServer,
    Script,
    ThreadedReplayServer,
    auth_passwords,
    script_from_log,
)

RAW = TRANSCRIPTS / "raw"


def raw_script(number: str) -> Script:
    return script_from_log(next(RAW.glob(f"{number}-*.log")), auth_passwords())


@pytest.mark.asyncio
async def test_show_commands_typed_results() -> None:
    script = Script(
        raw_script("12").exchanges[1:2]
        + raw_script("13").exchanges[1:2]
        + raw_script("14").exchanges[1:2]
        + raw_script("15").exchanges[1:2],
        passwords=auth_passwords(),
    )
    async with ReplayServer(script) as srv, MailqClient() as mq:
        await mq.connect("127.0.0.1", srv.port)
        await mq.auth("admin", "adminpw")
        threads = await mq.show_queue_threads2()
        snmp = await mq.show_snmp()
        counters = await mq.show_counters()
        detail = await mq.show_thread("smtp", "example.net")
    assert [t.channel for t in threads] == [
        "smtp",
        "smtp",
        "local",
        "local",
        "smtp-etrn",
    ]
    assert snmp.messages == 5
    assert counters["SC.StoredRecipients-G"] == 8
    assert len(detail.rows) == 3
    assert srv.received[-1] == "QUIT"
    assert srv.mismatches == []


@pytest.mark.asyncio
async def test_etrn_and_kill_replies() -> None:
    script = Script(raw_script("80").exchanges[1:3] + raw_script("81").exchanges[2:6])
    async with ReplayServer(script) as srv, MailqClient() as mq:
        await mq.connect("127.0.0.1", srv.port)
        await mq.auth("admin", "adminpw")
        started = await mq.etrn("example.net")
        await mq.etrn("etrn.example.com")
        killed = await mq.kill_msg("S100003AbmKVBkC35DCm")
        await mq.kill_msg("100004")
        await mq.kill_msg("no-such-id")
        refused = await mq.kill_thread("smtp", "example.org")
    assert (started.ok, started.line) == (True, "+OK; an ETRN started something.")
    assert killed.line == "+OK; KILLed something."
    assert (refused.ok, refused.text) == (False, "Unknown request.")
    assert srv.mismatches == []


@pytest.mark.asyncio
async def test_bad_password_and_unknown_user() -> None:
    async with ReplayServer(Script([], passwords=auth_passwords())) as srv:
        async with MailqClient() as mq:
            await mq.connect("127.0.0.1", srv.port)
            with pytest.raises(AuthError) as info:
                await mq.auth("admin", "wrong")
        assert str(info.value) == (
            "User 'admin' not accepted to server '127.0.0.1'; err='BAD USER OR PASSWORD'"
        )
        assert info.value.exit_code == 77


@pytest.mark.asyncio
async def test_550_greeting_gives_access_denied() -> None:
    async with ReplayServer(raw_script("92")) as srv:
        mq = MailqClient()
        with pytest.raises(AccessDenied) as info:
            await mq.connect("127.0.0.1", srv.port)
    assert str(info.value) == "server 127.0.0.1 refused access: 550 NO ACCESS FOR YOU"
    assert info.value.exit_code == 77


@pytest.mark.asyncio
async def test_refused_show_raises_command_refused() -> None:
    async with ReplayServer(raw_script("30")) as srv, MailqClient() as mq:
        await mq.connect("127.0.0.1", srv.port)
        await mq.auth("qqonly", "qqpw")
        short = await mq.show_queue_short()
        with pytest.raises(CommandRefused) as info:
            await mq.show_queue_threads()
    assert len(short.groups) == 3
    assert info.value.reply.startswith("-MAILQ2 Unknown command")
    assert info.value.exit_code == 1


@pytest.mark.asyncio
async def test_eof_mid_body_is_a_protocol_error() -> None:
    script = Script([Exchange("SHOW SNMP", b"+OK until LF.LF\nKids: 1\n", close=True)])
    async with ReplayServer(script) as srv:
        mq = MailqClient()
        await mq.connect("127.0.0.1", srv.port)
        await mq.auth()
        with pytest.raises(ProtocolError, match="middle of a reply"):
            await mq.show_snmp()
        await mq.close()


@pytest.mark.asyncio
async def test_unix_socket(tmp_path: Path) -> None:
    path = str(tmp_path / "mq.sock")
    async with (
        ReplayServer(Script(raw_script("13").exchanges[1:2]), unix_path=path) as srv,
        MailqClient() as mq,
    ):
        await mq.connect("ignored", path)
        assert mq.is_local
        await mq.auth()
        snmp = await mq.show_snmp()
    assert snmp.kids == 2
    assert srv.received[0].startswith("AUTH nobody ")


@pytest.mark.asyncio
async def test_connect_failure_reports_each_address() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    failed: list[tuple[str, str]] = []
    mq = MailqClient(on_connect_failed=lambda host, why: failed.append((host, why)))
    with pytest.raises(ConnectError) as info:
        await mq.connect("127.0.0.1", port)
    assert info.value.exit_code == 69
    assert [h for h, _ in failed] == ["127.0.0.1"]


@pytest.mark.asyncio
async def test_unknown_host() -> None:
    with pytest.raises(ConnectError) as info:
        await MailqClient().connect("no-such-host.invalid", 174)
    assert info.value.unknown_host
    assert str(info.value) == "cannot find address of no-such-host.invalid"


@pytest.mark.asyncio
async def test_stops_at_first_address_that_connects() -> None:
    """C1 fixed: 'localhost' may resolve to ::1 and 127.0.0.1; only one connection is made."""
    async with ReplayServer(Script([])) as srv:
        failed: list[str] = []
        mq = MailqClient(on_connect_failed=lambda host, why: failed.append(host))
        await mq.connect("localhost", srv.port, family=socket.AF_INET)
        await mq.quit()
        await asyncio.sleep(0)
    assert srv.connections == 1
    assert failed == []


@pytest.mark.asyncio
async def test_silent_server_times_out() -> None:
    writers: list[asyncio.StreamWriter] = []

    async def silent(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        mq = MailqClient(timeout=0.2)
        with pytest.raises(ProtocolError, match="timed out"):
            await mq.connect("127.0.0.1", port)
        await mq.close()
    finally:
        for writer in writers:
            writer.close()
            await writer.wait_closed()
        server.close()
        await server.wait_closed()


def test_blocking_client() -> None:
    with ThreadedReplayServer(Script(raw_script("13").exchanges[1:2])) as srv:
        with BlockingMailqClient() as mq:
            mq.connect("127.0.0.1", srv.port)
            mq.auth("nobody", "nobody")
            snmp = mq.show_snmp()
        assert snmp.uptime == 14
        assert srv.received[-1] == "QUIT"


def test_resolve_port_and_address_order() -> None:
    assert resolve_port("1174") == 1174
    assert resolve_port("/run/mq.sock") == "/run/mq.sock"
    assert resolve_port("smtp") == 25  # C2 fixed: a service name is resolved
    with pytest.raises(ValueError, match="unknown tcp service"):
        resolve_port("no-such-service-x")
    infos = [(socket.AF_INET6, 1), (socket.AF_INET, 2), (socket.AF_INET6, 3)]
    assert [i[1] for i in order_addresses(infos, socket.AF_INET)] == [2, 1, 3]
    assert [i[1] for i in order_addresses(infos, socket.AF_INET6)] == [1, 3, 2]
