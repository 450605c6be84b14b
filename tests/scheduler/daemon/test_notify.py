"""The NEW-datagram notify socket (scheduler/daemon/notify.py)."""

from __future__ import annotations

import asyncio
import socket
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, strategies as st

from scheduler.daemon.notify import NotifySocket, notify_address, parse_notification


@pytest.mark.parametrize(
    ("datagram", "expected"),
    [
        (b"NEW 123456", "123456"),
        (b"NEW Q/123456", "Q/123456"),
        (b"NEW Q/I/123456", "Q/I/123456"),
        (b"NEW 123456-777", "123456-777"),
        (b"NEW 123456\n", "123456"),
        (b"NEW 0123", None),
        (b"NEW q/123", None),
        (b"NEW A/B/C/123", None),
        (b"NEW AB/123", None),
        (b"NEW ../123", None),
        (b"NEW /etc/passwd", None),
        (b"NEW 1/2", None),
        (b"NEW ", None),
        (b"new 123", None),
        (b"NEW  123", None),
        (b"OLD 123", None),
        (b"NEW 12\xff", None),
    ],
)
def test_parse_notification(datagram: bytes, expected: str | None) -> None:
    assert parse_notification(datagram) == expected


@given(st.binary(max_size=40))
def test_parse_never_accepts_a_path_escape(data: bytes) -> None:
    path = parse_notification(data)
    if path is not None:
        assert ".." not in path.split("/")
        assert not path.startswith("/")
        assert path.rsplit("/", 1)[-1][0] in "123456789"


def test_notify_address(tmp_path: Path) -> None:
    default = tmp_path / ".scheduler.notify"
    assert notify_address(None, None, default) == default
    assert notify_address("UNIX:/x/y", "/z", default) == Path("/x/y")
    assert notify_address(None, "unix:/z", default) == Path("/z")
    assert notify_address(None, "/z", default) == Path("/z")
    assert notify_address("localhost:9999", None, default) is None


@pytest.fixture
def short_dir() -> Iterator[Path]:
    # AF_UNIX paths are limited to ~107 bytes; pytest's tmp_path can be longer.
    with tempfile.TemporaryDirectory(prefix="ntf") as d:
        yield Path(d)


def send_all(path: Path) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as client:
        client.settimeout(10)
        for name in (b"NEW 100001", b"junk", b"NEW x/1", b"NEW Y/F/100002"):
            client.sendto(name, str(path))
        for n in range(30):
            client.sendto(f"NEW {200000 + n}".encode(), str(path))


@pytest.mark.asyncio
async def test_socket_delivers_valid_paths_only(short_dir: Path) -> None:
    got: asyncio.Queue[str] = asyncio.Queue()
    path = short_dir / ".scheduler.notify"
    path.write_text("stale file in the way")
    ns = NotifySocket(path, got.put_nowait, per_wakeup=3)
    ns.open()
    try:
        assert stat.S_IMODE(path.stat().st_mode) == 0o200
        # A sender blocks once ~10 datagrams are queued: send from a thread while
        # the loop drains them, a few per wake-up.
        await asyncio.to_thread(send_all, path)
        received = [await asyncio.wait_for(got.get(), 5) for _ in range(32)]
    finally:
        ns.close()
    assert received[:2] == ["100001", "Y/F/100002"]
    assert received[2:] == [str(200000 + n) for n in range(30)]
    assert got.empty()
    assert not path.exists()
