"""ZENV ``BINDADDR``: the address ZMailer's listeners bind, in ZMailer's syntax.

Kept apart from :mod:`spool.zenv`, which the pure scheduler core loads: this one needs
sockets and an ``ioctl`` to find an interface's address.
"""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import socket
import struct

__all__ = ["bind_address"]


_SIOCGIFADDR = 0x8915  # Linux: an interface's IPv4 address


def bind_address(value: str | None) -> str | None:
    """The address ZENV ``BINDADDR`` names, in ZMailer's syntax; None: every address.

    ``[192.0.2.1]``; ``[ipv6 2001:db8::1]`` (also ``[ipv6:...]``, ``[IPv6.…]``);
    ``iface:NAME``, ``iface:v4:NAME``, ``iface:v6:NAME`` (that interface's address);
    ``any``/``any6`` or empty: every address.  Anything else raises ValueError: ZMailer
    quietly listens on every address then, which is the one thing BINDADDR is set to
    prevent.
    """
    text = (value or "").strip()
    if text.lower() in ("", "any", "any6"):
        return None
    low = text.lower()
    if low.startswith(("[ipv6 ", "[ipv6:", "[ipv6.")) and text.endswith("]"):
        return _literal(text[6:-1], 6, value)
    if text.startswith("[") and text.endswith("]"):
        return _literal(text[1:-1], 4, value)
    if low.startswith("iface:"):
        name, version = text[6:], 4
        if name[:3] in ("v4:", "v6:"):
            version, name = int(name[1]), name[3:]
        address = _interface_address(name, version)
        if address is None:
            raise ValueError(f"BINDADDR {value!r}: no IPv{version} address on {name!r}")
        return address
    raise ValueError(
        f"BINDADDR {value!r}: not [a.b.c.d], [ipv6 x::y], iface:NAME or any"
    )


def _literal(text: str, version: int, value: str | None) -> str:
    try:
        addr = ipaddress.ip_address(text.strip())
    except ValueError:
        addr = None
    if addr is None or addr.version != version:
        raise ValueError(f"BINDADDR {value!r}: not an IPv{version} address")
    return str(addr)


def _interface_address(name: str, version: int) -> str | None:
    if version == 6:
        with contextlib.suppress(OSError), open("/proc/net/if_inet6") as f:
            for line in f:
                fields = line.split()
                if len(fields) == 6 and fields[5] == name:
                    return str(ipaddress.IPv6Address(bytes.fromhex(fields[0])))
        return None
    with (
        contextlib.suppress(OSError),
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s,
    ):
        request = struct.pack("256s", name.encode()[:15])
        reply = fcntl.ioctl(s.fileno(), _SIOCGIFADDR, request)
        return socket.inet_ntoa(reply[20:24])
    return None
