"""Listener specs (``PARAMmailqsock`` / ``-l``) and the listening sockets they name.

Accepted specs (MQ2-REF 2, with L1/L2 fixed):

=====================  =========================================================
``174``, ``TCP:174``   TCP port 174 on every address (one dual-stack IPv6 socket)
``mailq``              the ``mailq/tcp`` services entry, else 174
``TCP:1174@127.0.0.1``  port 1174 on that address (L1 fix: ``@addr`` is honoured)
``127.0.0.1:1174``     an IPv4 address and port
``[::1]:1174``         an IPv6 address and port
``UNIX:/path``, ``/path``  a Unix stream socket (see below)
=====================  =========================================================

Anything else is an error (``ValueError`` from :func:`parse_listen_spec`, ``ListenError``
from :func:`bind_listeners`): an IPv6 address needs brackets (``::1:1174`` is refused, not
read as a service name), a port is 0-65535 or a known ``tcp`` service name (only the
default name ``mailq`` falls back to 174 when the services file lacks it, as ZMailer
does). At a Unix path, a stale socket (nobody accepts on it) is replaced; a live one
("in use"), or anything that is not a socket, is refused and left alone.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import os
import re
import socket
import stat
from dataclasses import dataclass
from typing import Final, Literal

from mailq.protocol.errors import ListenError

__all__ = [
    "BACKLOG",
    "DEFAULT_PORT",
    "ListenSpec",
    "bind_listeners",
    "describe_socket",
    "parse_listen_spec",
]

logger = logging.getLogger(__name__)

DEFAULT_PORT: Final[int] = 174
_SERVICE_NAME: Final = re.compile(r"[A-Za-z][A-Za-z0-9_.-]*")
_HOST_NAME: Final = re.compile(r"[A-Za-z0-9_.-]+")
BACKLOG: Final[int] = 1024  # the kernel caps it at net.core.somaxconn
_WILDCARDS: Final = (None, "", "*", "::")  # dual-stack on one IPv6 socket (L2)


@dataclass(frozen=True, slots=True)
class ListenSpec:
    """A parsed listener: TCP (``host`` None = every address) or Unix (``path``)."""

    kind: Literal["tcp", "unix"]
    port: int = DEFAULT_PORT
    host: str | None = None
    path: str = ""

    def __str__(self) -> str:
        if self.kind == "unix":
            return f"UNIX:{self.path}"
        if self.host is None:
            return f"TCP:{self.port}"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


def _port(text: str) -> int:
    text = text.strip()
    if not text:
        text = "mailq"
    if text.isdigit():
        port = int(text)
        if port > 65535:
            raise ValueError(f"port {port} out of range")
        return port
    if not _SERVICE_NAME.fullmatch(text):
        raise ValueError(f"bad port {text!r}")
    try:
        return socket.getservbyname(text, "tcp")
    except OSError:
        if text != "mailq":
            raise ValueError(f"no {text!r} tcp service defined") from None
        logger.warning("No %r tcp service defined! Using port %d", text, DEFAULT_PORT)
        return DEFAULT_PORT


def _host(text: str, spec: str) -> str | None:
    """The address part: empty (every address), an IP address or a host name."""
    if not text or text == "*":
        return None
    if ":" in text:
        try:
            ipaddress.IPv6Address(text.split("%", 1)[0])
        except ValueError:
            raise ValueError(f"{spec!r}: bad IPv6 address {text!r}") from None
        return text
    if not _HOST_NAME.fullmatch(text):
        raise ValueError(f"{spec!r}: bad address {text!r}")
    return text


def parse_listen_spec(spec: str) -> ListenSpec:
    """Parse one listener spec; raise ValueError for nonsense."""
    text = spec.strip()
    if not text:
        raise ValueError("empty listener spec")
    if text[:5].upper() == "UNIX:":
        path = text[5:]
        if not path:
            raise ValueError(f"{spec!r}: UNIX: needs a path")
        return ListenSpec("unix", path=path)
    if text.startswith("/"):
        return ListenSpec("unix", path=text)
    if text[:4].upper() == "TCP:":
        text = text[4:]
    if "@" in text:
        port_text, host = text.split("@", 1)
        if host.startswith("[") and host.endswith("]"):
            host = host[1:-1]
        return ListenSpec("tcp", port=_port(port_text), host=_host(host, spec))
    if text.startswith("["):
        host, sep, port_text = text[1:].partition("]:")
        if not sep or ":" not in host:
            raise ValueError(f"{spec!r}: expected [IPv6-address]:port")
        return ListenSpec("tcp", port=_port(port_text), host=_host(host, spec))
    if text.count(":") > 1:
        raise ValueError(f"{spec!r}: an IPv6 address needs brackets, e.g. [::1]:1174")
    if text.count(":") == 1:
        host, port_text = text.split(":")
        if not port_text.strip():
            raise ValueError(f"{spec!r}: no port after ':'")
        return ListenSpec("tcp", port=_port(port_text), host=_host(host, spec))
    return ListenSpec("tcp", port=_port(text))


def _tcp_socket(
    family: int, address: tuple[str, int], spec: ListenSpec
) -> socket.socket:
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            wildcard = address[0] == "::" and spec.host in _WILDCARDS
            sock.setsockopt(
                socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0 if wildcard else 1
            )
        sock.bind(address)
        sock.listen(BACKLOG)
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        raise ListenError(str(spec), exc.strerror or str(exc)) from exc
    return sock


def _tcp_addresses(spec: ListenSpec) -> list[tuple[int, tuple[str, int]]]:
    if spec.host in _WILDCARDS and spec.host != "::":
        if socket.has_ipv6:
            return [(socket.AF_INET6, ("::", spec.port))]
        return [(socket.AF_INET, ("0.0.0.0", spec.port))]  # pragma: no cover - no IPv6
    assert spec.host is not None
    try:
        addr = ipaddress.ip_address(spec.host)
    except ValueError:
        pass
    else:
        family = socket.AF_INET6 if addr.version == 6 else socket.AF_INET
        return [(family, (spec.host, spec.port))]
    try:
        infos = socket.getaddrinfo(
            spec.host, spec.port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
    except OSError as exc:
        raise ListenError(str(spec), f"cannot resolve {spec.host!r}: {exc}") from exc
    seen: list[tuple[int, tuple[str, int]]] = []
    for family, _, _, _, sockaddr in infos:
        item = (int(family), (str(sockaddr[0]), int(sockaddr[1])))
        if item not in seen:
            seen.append(item)
    return seen


def _unix_socket(spec: ListenSpec, mode: int, owner: int, group: int) -> socket.socket:
    path = spec.path
    _clear_unix_path(spec)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(path)
        if owner >= 0 or group >= 0:
            os.chown(path, owner, group)
        os.chmod(path, mode)
        sock.listen(BACKLOG)
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        with contextlib.suppress(OSError):
            if stat.S_ISSOCK(os.lstat(path).st_mode):
                os.unlink(path)
        raise ListenError(str(spec), exc.strerror or str(exc)) from exc
    return sock


def _clear_unix_path(spec: ListenSpec) -> None:
    """Remove a stale socket at the path; refuse a live one or any other file."""
    try:
        st = os.lstat(spec.path)
    except FileNotFoundError:
        return
    except OSError as exc:
        raise ListenError(str(spec), exc.strerror or str(exc)) from exc
    if not stat.S_ISSOCK(st.st_mode):
        raise ListenError(str(spec), "the path exists and is not a socket (left alone)")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.settimeout(1.0)
        probe.connect(spec.path)
    except OSError:
        pass  # nobody accepts: a stale socket from an earlier run
    else:
        raise ListenError(str(spec), "in use (a server accepts on it)")
    finally:
        probe.close()
    with contextlib.suppress(FileNotFoundError):
        os.unlink(spec.path)


def bind_listeners(
    spec: str | ListenSpec,
    unix_mode: int = 0o666,
    unix_owner: int = -1,
    unix_group: int = -1,
) -> list[socket.socket]:
    """Create, bind and listen on the sockets ``spec`` names (non-blocking).

    A Unix socket gets ``unix_owner``/``unix_group`` (-1: unchanged) and ``unix_mode``.
    """
    try:
        parsed = spec if isinstance(spec, ListenSpec) else parse_listen_spec(spec)
    except ValueError as exc:
        raise ListenError(str(spec), str(exc)) from exc
    if parsed.kind == "unix":
        return [_unix_socket(parsed, unix_mode, unix_owner, unix_group)]
    socks: list[socket.socket] = []
    try:
        for family, address in _tcp_addresses(parsed):
            socks.append(_tcp_socket(family, address, parsed))
    except ListenError:
        for s in socks:
            s.close()
        raise
    return socks


def describe_socket(sock: socket.socket) -> str:
    """``127.0.0.1:1174``, ``[::]:174`` or ``UNIX:/path`` for logs and ``addresses``."""
    name = sock.getsockname()
    if sock.family == socket.AF_UNIX:
        return f"UNIX:{name if isinstance(name, str) else name.decode()}"
    host, port = name[0], name[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
