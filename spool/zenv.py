"""ZENV: ZMailer's ``zmailer.conf`` (``KEY=VALUE`` lines) and ``${NAME}`` expansion.

The file is read once; environment variables of the same names override its values,
so ``POSTOFFICE=/tmp/po mailq-scheduler ...`` works as it does with ZMailer.
"""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import logging
import os
import re
import socket
import struct
from collections.abc import Mapping, Sequence

__all__ = [
    "DEFAULT_ZCONFIG",
    "DEFAULT_ZCONFIGS",
    "ZENV_NAMES",
    "bind_address",
    "expand",
    "parse_zenv",
    "read_zenv",
    "zconfig_path",
]

log = logging.getLogger(__name__)

#: ZMailer's two usual compiled-in ZENV files, tried in this order when ``$ZCONFIG`` is
#: not set; the daemon and the ``mailq`` client both use the first readable one.
DEFAULT_ZCONFIGS = ("/etc/zmailer/zmailer.conf", "/etc/mail/zmailer.conf")
DEFAULT_ZCONFIG = DEFAULT_ZCONFIGS[0]

#: Names that an environment variable may override (besides any name in the file).
ZENV_NAMES = (
    "ZCONFIG",
    "POSTOFFICE",
    "MAILBIN",
    "MAILSHARE",
    "MAILVAR",
    "MAILBOX",
    "LOGDIR",
    "SCHEDULERNOTIFY",
    "SCHEDULERDIRHASH",
    "SNMPSHAREDFILE",
    "RENDEZVOUS",
    "SYSLOGFLG",
    "BINDADDR",
    "SCHEDULER_M_EXTRA",
)

_LINE = re.compile(r"\s*([A-Za-z_][A-Za-z0-9_]*)\s*=(.*)$")
_REF = re.compile(r"\$\{([^}]*)\}")


def expand(text: str, zenv: Mapping[str, str]) -> str:
    """Replace every ``${NAME}`` by its ZENV value; unknown names are left as written."""
    return _REF.sub(lambda m: zenv.get(m.group(1), m.group(0)), text)


def parse_zenv(text: str) -> dict[str, str]:
    """Parse ``zmailer.conf`` text: ``KEY=VALUE`` lines, ``#`` comments, optional quotes.

    ``${NAME}`` in a value is expanded from the names defined on earlier lines; lines
    that are not assignments are ignored (as ZMailer's ``getzenv`` does).
    """
    env: dict[str, str] = {}
    for raw in text.splitlines():
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            continue
        m = _LINE.match(raw)
        if m is None:
            continue
        env[m.group(1)] = expand(_unquote(m.group(2).strip()), env)
    return env


def _unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
        return value[1:-1]
    return value


def zconfig_path(
    environ: Mapping[str, str], defaults: Sequence[str] | None = None
) -> str | None:
    """The implicit ZENV file: ``$ZCONFIG``, else the first readable of ``defaults``
    (None: :data:`DEFAULT_ZCONFIGS`); None when ``$ZCONFIG`` is unset and none is."""
    named = environ.get("ZCONFIG")
    if named:
        return named
    candidates = DEFAULT_ZCONFIGS if defaults is None else defaults
    for candidate in candidates:
        if os.path.isfile(candidate) and os.access(candidate, os.R_OK):
            return candidate
    return None


def read_zenv(
    path: str | None = None,
    environ: Mapping[str, str] | None = None,
    *,
    defaults: Sequence[str] | None = None,
) -> dict[str, str]:
    """Read ZENV from ``path`` (None: :func:`zconfig_path` of ``environ`` and ``defaults``).

    Environment variables named in :data:`ZENV_NAMES`, or defined in the file, override
    the file's values.  A missing implicit file gives just the environment overrides; an
    explicit ``path`` that cannot be read raises ``OSError``.
    """
    env_in = os.environ if environ is None else environ
    explicit = path is not None
    if path is None:
        path = zconfig_path(env_in, defaults)
    zenv: dict[str, str] = {}
    if path is None:
        log.debug("no ZENV file: $ZCONFIG unset and no default file readable")
    else:
        try:
            with open(path, encoding="utf-8", errors="surrogateescape") as f:
                zenv = parse_zenv(f.read())
        except OSError as e:
            if explicit:
                raise
            log.debug("no ZENV file %s: %s", path, e)
    for name in (*ZENV_NAMES, *zenv):
        if name in env_in:
            zenv[name] = env_in[name]
    return zenv


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
