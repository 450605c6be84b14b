"""Listener specs and the sockets they bind (``mailq.server.listeners``), over real sockets."""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import socket
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from mailq.protocol.errors import ListenError
from mailq.server.listeners import (
    DEFAULT_PORT,
    ListenSpec,
    bind_listeners,
    describe_socket,
    parse_listen_spec,
)


def _has_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
    except OSError:
        return False
    return True


IPV6 = pytest.mark.skipif(not _has_ipv6_loopback(), reason="no IPv6 loopback")


@contextlib.contextmanager
def bound(spec: str, unix_mode: int = 0o666) -> Iterator[list[socket.socket]]:
    socks = bind_listeners(spec, unix_mode)
    try:
        yield socks
    finally:
        for s in socks:
            s.close()


def _connects(family: int, address: tuple[str, int] | str) -> bool:
    with socket.socket(family, socket.SOCK_STREAM) as client:
        client.settimeout(5)
        try:
            client.connect(address)
        except OSError:
            return False
        return True


# ---- parsing -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("TCP:174", ListenSpec("tcp", port=174)),
        ("tcp:1174", ListenSpec("tcp", port=1174)),
        ("174", ListenSpec("tcp", port=174)),
        (" 1174 ", ListenSpec("tcp", port=1174)),
        ("TCP:1174@127.0.0.1", ListenSpec("tcp", port=1174, host="127.0.0.1")),
        ("TCP:1174@[::1]", ListenSpec("tcp", port=1174, host="::1")),
        ("1174@::1", ListenSpec("tcp", port=1174, host="::1")),
        ("TCP:1174@", ListenSpec("tcp", port=1174)),
        ("[::1]:1174", ListenSpec("tcp", port=1174, host="::1")),
        ("127.0.0.1:1174", ListenSpec("tcp", port=1174, host="127.0.0.1")),
        (":1174", ListenSpec("tcp", port=1174)),
        ("UNIX:/run/mailq.sock", ListenSpec("unix", path="/run/mailq.sock")),
        ("unix:/run/mailq.sock", ListenSpec("unix", path="/run/mailq.sock")),
        ("/var/spool/postoffice/.mailq", ListenSpec("unix", path="/var/spool/postoffice/.mailq")),
    ],
)  # fmt: skip
def test_every_spec_form(spec: str, expected: ListenSpec) -> None:
    assert parse_listen_spec(spec) == expected


def test_service_names_use_the_services_file() -> None:
    try:
        smtp = socket.getservbyname("smtp", "tcp")
    except OSError:
        pytest.skip("no services database")
    assert parse_listen_spec("smtp") == ListenSpec("tcp", port=smtp)
    assert parse_listen_spec("TCP:smtp@127.0.0.1").port == smtp


def test_only_the_default_service_name_falls_back_to_174(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING)
    with pytest.raises(ValueError, match="no-such-service-x"):
        parse_listen_spec("no-such-service-x")  # a typo is an error, not port 174
    # "mailq" is the services entry when there is one, else 174 (as ZMailer)
    assert parse_listen_spec("mailq").port == DEFAULT_PORT


@pytest.mark.parametrize(
    "spec",
    [
        "",
        "   ",
        "UNIX:",
        "[::1]1174",
        "[::1]",
        "70000",
        "TCP:99999@127.0.0.1",
        "::1:1174",  # issue 14: was read as a service name, i.e. [::]:174
        "TCP:::1:1174",
        "127.0.0.1:",
        "127.0.0.1:port!",
        "[127.0.0.1]:1174",
        "1174@[::zz]",
        "bad host:1174",
    ],
)
def test_nonsense_is_a_value_error(spec: str) -> None:
    with pytest.raises(ValueError, match=r"."):
        parse_listen_spec(spec)
    with pytest.raises(ListenError) as info:
        bind_listeners(spec)
    assert "-l SPEC" in str(info.value)


def test_existing_file_at_a_unix_path_is_refused_and_kept(tmp_path: Path) -> None:
    victim = tmp_path / "important"
    victim.write_text("keep me\n")
    with pytest.raises(ListenError, match="not a socket"):
        bind_listeners(str(victim))
    assert victim.read_text() == "keep me\n"
    (tmp_path / "dir").mkdir()
    with pytest.raises(ListenError, match="not a socket"):
        bind_listeners(f"UNIX:{tmp_path / 'dir'}")


def test_a_live_unix_socket_is_refused_a_stale_one_replaced(tmp_path: Path) -> None:
    path = str(tmp_path / "s.sock")
    with bound(f"UNIX:{path}"):
        with pytest.raises(ListenError, match="in use"):
            bind_listeners(f"UNIX:{path}")
        assert _connects(socket.AF_UNIX, path)
    assert stat.S_ISSOCK(os.lstat(path).st_mode)  # closed, not removed: stale
    with bound(f"UNIX:{path}"):
        assert _connects(socket.AF_UNIX, path)


@pytest.mark.parametrize(
    ("spec", "text"),
    [
        (ListenSpec("tcp", port=174), "TCP:174"),
        (ListenSpec("tcp", port=1174, host="127.0.0.1"), "127.0.0.1:1174"),
        (ListenSpec("tcp", port=1174, host="::1"), "[::1]:1174"),
        (ListenSpec("unix", path="/x/y"), "UNIX:/x/y"),
    ],
)
def test_spec_text_parses_back(spec: ListenSpec, text: str) -> None:
    assert str(spec) == text
    assert parse_listen_spec(text) == spec


# ---- binding -------------------------------------------------------------------------


@pytest.mark.parametrize("spec", ["127.0.0.1:0", "TCP:0@127.0.0.1", "0@127.0.0.1"])
def test_ipv4_address_is_bound_as_given(spec: str) -> None:
    with bound(spec) as socks:
        assert len(socks) == 1
        sock = socks[0]
        assert sock.family == socket.AF_INET
        host, port = sock.getsockname()
        assert host == "127.0.0.1"
        assert port > 0
        assert not sock.getblocking()
        assert describe_socket(sock) == f"127.0.0.1:{port}"
        assert _connects(socket.AF_INET, ("127.0.0.1", port))


@IPV6
@pytest.mark.parametrize("spec", ["[::1]:0", "TCP:0@::1", "TCP:0@[::1]"])
def test_ipv6_address_is_bound_v6_only(spec: str) -> None:
    with bound(spec) as socks:
        (sock,) = socks
        assert sock.family == socket.AF_INET6
        assert sock.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY) == 1
        port = sock.getsockname()[1]
        assert describe_socket(sock) == f"[::1]:{port}"
        assert _connects(socket.AF_INET6, ("::1", port))


@IPV6
@pytest.mark.parametrize("spec", ["TCP:0", "0", "TCP:0@*"])
def test_wildcard_is_one_dual_stack_socket(spec: str) -> None:
    with bound(spec) as socks:
        (sock,) = socks
        assert sock.family == socket.AF_INET6
        assert sock.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY) == 0
        port = sock.getsockname()[1]
        assert describe_socket(sock) == f"[::]:{port}"
        assert _connects(socket.AF_INET, ("127.0.0.1", port))  # v4 through v4-mapped
        assert _connects(socket.AF_INET6, ("::1", port))


def test_host_name_is_resolved() -> None:
    with bound("TCP:0@localhost") as socks:
        assert socks
        for sock in socks:
            assert sock.getsockname()[0] in ("127.0.0.1", "::1")


def test_unresolvable_host_is_explained() -> None:
    with pytest.raises(ListenError) as info:
        bind_listeners("TCP:0@no-such-host.invalid")
    assert "no-such-host.invalid" in str(info.value)


@pytest.mark.parametrize("spec", ["UNIX:{path}", "{path}"])
def test_unix_socket_default_mode_0666(tmp_path: Path, spec: str) -> None:
    path = tmp_path / "mailq.sock"
    with bound(spec.format(path=path)) as socks:
        (sock,) = socks
        assert sock.family == socket.AF_UNIX
        st = os.stat(path)
        assert stat.S_ISSOCK(st.st_mode)
        assert stat.S_IMODE(st.st_mode) == 0o666
        assert describe_socket(sock) == f"UNIX:{path}"
        assert _connects(socket.AF_UNIX, str(path))


@pytest.mark.parametrize("mode", [0o600, 0o660])
def test_unix_mode_is_configurable(tmp_path: Path, mode: int) -> None:
    path = tmp_path / "mailq.sock"
    with bound(f"UNIX:{path}", unix_mode=mode):
        assert stat.S_IMODE(os.stat(path).st_mode) == mode


def test_a_stale_socket_at_the_unix_path_is_replaced(tmp_path: Path) -> None:
    path = tmp_path / "mailq.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as old:
        old.bind(str(path))  # closed without unlinking: a stale socket file
    with bound(f"UNIX:{path}"):
        assert stat.S_ISSOCK(os.lstat(path).st_mode)
        assert _connects(socket.AF_UNIX, str(path))


@pytest.mark.parametrize("kind", ["file", "symlink"])
def test_a_file_or_link_at_the_unix_path_is_refused_and_kept(
    tmp_path: Path, kind: str
) -> None:
    path = tmp_path / "mailq.sock"
    target = tmp_path / "target"
    target.write_text("keep me")
    if kind == "file":
        path.write_text("old")
    else:
        path.symlink_to(target)
    with pytest.raises(ListenError, match="not a socket"):
        bind_listeners(f"UNIX:{path}")
    assert os.path.lexists(path)
    assert target.read_text() == "keep me"


def test_directory_at_the_unix_path_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "mailq.sock"
    path.mkdir()
    with pytest.raises(ListenError) as info:
        bind_listeners(f"UNIX:{path}")
    assert str(path) in str(info.value)
    assert "not a socket" in info.value.reason
    assert path.is_dir()


def test_unix_path_in_missing_directory(tmp_path: Path) -> None:
    path = tmp_path / "missing" / "mailq.sock"
    with pytest.raises(ListenError) as info:
        bind_listeners(f"UNIX:{path}")
    assert info.value.address == f"UNIX:{path}"
    assert info.value.reason == os.strerror(errno.ENOENT)


def test_bind_failure_names_address_reason_and_remedy() -> None:
    with socket.socket() as busy:
        busy.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        with pytest.raises(ListenError) as info:
            bind_listeners(f"TCP:{port}@127.0.0.1")
    error = info.value
    assert error.address == f"127.0.0.1:{port}"
    assert error.reason == os.strerror(errno.EADDRINUSE)
    message = str(error)
    assert message.startswith(f"cannot listen on 127.0.0.1:{port}: ")
    assert os.strerror(errno.EADDRINUSE) in message
    assert "-l SPEC" in message
    assert "PARAMmailqsock" in message
