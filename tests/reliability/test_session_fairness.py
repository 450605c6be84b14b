"""Squatters cannot lock a legitimate client out (beyond ZMailer's silent refusal).

ZMailer serves 21 sessions and closes every further connection without a byte, so 21
idle connections lock everyone out for their whole lifetime. Past the limit our server
first closes the oldest session still unauthenticated after a second, then one that has
made no progress for five seconds; only then is a newcomer refused (B11's silent close).
Sessions that never authenticate are closed after ``auth_timeout``.
"""

from __future__ import annotations

import asyncio

import pytest

from mailq.server import shell as server_module
from tests.reliability.conftest import RawClient, StartServer

pytestmark = pytest.mark.asyncio


async def _greeted(client: RawClient) -> bool:
    try:
        return (await client.greet()).startswith(b"version zmailer 2.0\n220 ")
    except (asyncio.IncompleteReadError, ConnectionError):
        return False


async def test_unauthenticated_squatters_make_room_for_a_newcomer(
    mq_server: StartServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(server_module, "PRE_AUTH_GRACE", 0.2)
    h = await mq_server(
        max_sessions=2, reserved_sessions=0
    )  # three sessions served, as ZMailer's 20 + 1
    squatters = [await h.connect() for _ in range(3)]
    for s in squatters:
        assert await _greeted(s)
    await asyncio.sleep(0.3)
    legit = await h.login()  # evicts the oldest squatter instead of being refused
    assert await legit.command(b"SHOW SNMP") != b""
    assert await squatters[0].read_to_eof() == b""  # closed to make room, no bytes
    assert h.server.session_count == 3


async def test_authenticated_active_sessions_are_not_evicted(
    mq_server: StartServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(server_module, "PRE_AUTH_GRACE", 0.0)
    monkeypatch.setattr(server_module, "STALL_GRACE", 60.0)
    h = await mq_server(max_sessions=1, reserved_sessions=0)
    users = [await h.login() for _ in range(2)]
    newcomer = await h.connect()
    assert await newcomer.read_to_eof() == b""  # refused silently (B11 keep)
    for u in users:
        assert (await u.command(b"SHOW SNMP")).startswith(b"+OK until LF.LF\n")


async def test_a_stalled_session_makes_room_under_pressure(
    mq_server: StartServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(server_module, "STALL_GRACE", 0.3)
    h = await mq_server(max_sessions=1, reserved_sessions=0)
    stalled = await h.login()
    active = await h.login()
    await asyncio.sleep(0.4)
    assert (await active.command(b"SHOW SNMP")).startswith(b"+OK")  # progress
    legit = await h.login()  # the stalled one (no progress for 0.4 s) goes
    assert (await legit.command(b"SHOW SNMP")).startswith(b"+OK")
    assert await stalled.read_to_eof() == b""


async def test_sessions_that_never_authenticate_are_closed(
    mq_server: StartServer,
) -> None:
    h = await mq_server(auth_timeout=0.3)
    idle = await h.connect()
    assert await _greeted(idle)
    assert await idle.read_to_eof(limit=5) == b""
    legit = await h.login()  # a client that authenticates is not affected
    await asyncio.sleep(0.5)
    assert (await legit.command(b"SHOW SNMP")).startswith(b"+OK")
