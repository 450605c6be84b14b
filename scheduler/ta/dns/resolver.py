"""An asyncio DNS stub resolver: UDP, TCP when truncated, a TTL cache, CNAMEs followed.

Nameservers, ``timeout:`` and ``attempts:`` come from ``/etc/resolv.conf`` (defaults as
glibc: 127.0.0.1, 5 s, 2 attempts) unless a ``HOST:PORT`` override names one. Every
query has a random id and a reply is taken only when its id and question match the
query (anything else is dropped and the wait goes on): a spoofed or stale datagram is
never believed. SERVFAIL, REFUSED, malformed replies and time-outs move on to the next
server and the next attempt; when all fail the lookup raises :class:`DnsTemporary`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from scheduler.ta.dns import wire

__all__ = [
    "Answer",
    "DnsTemporary",
    "Resolver",
    "ResolverConfig",
    "parse_hostport",
    "parse_resolv_conf",
]

MAX_CNAME = 8
MAX_CACHE = 10_000
_UDP_MAX = 4096


class DnsTemporary(Exception):
    """No usable answer (time-out, SERVFAIL, ...): the reason is the message."""


@dataclass(frozen=True, slots=True)
class ResolverConfig:
    nameservers: tuple[tuple[str, int], ...] = (("127.0.0.1", 53),)
    timeout: float = 5.0
    attempts: int = 2


@dataclass(frozen=True, slots=True)
class Answer:
    """The records of ``rtype`` for ``name`` after CNAMEs; ``nxdomain`` for no such name."""

    name: str
    rtype: int
    records: tuple[wire.Record, ...]
    nxdomain: bool = False
    canonical: str = ""


def parse_hostport(text: str, default_port: int = 53) -> tuple[str, int]:
    """``1.2.3.4``, ``1.2.3.4:5353``, ``[::1]:5353``, ``::1`` -> (host, port)."""
    text = text.strip()
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        return host, int(rest[1:]) if rest.startswith(":") else default_port
    if text.count(":") == 1:
        host, _, port = text.partition(":")
        return host, int(port)
    return text, default_port


def parse_resolv_conf(text: str, res_options: str = "") -> ResolverConfig:
    """``nameserver`` lines and ``options timeout:N attempts:N`` (resolv.conf(5));
    ``res_options`` (the ``RES_OPTIONS`` variable) overrides the file's options."""
    servers: list[tuple[str, int]] = []
    timeout, attempts = 5.0, 2
    lines = text.splitlines()
    if res_options:
        lines.append("options " + res_options)
    for line in lines:
        words = line.split("#", 1)[0].split(";", 1)[0].split()
        if len(words) >= 2 and words[0] == "nameserver":
            servers.append((words[1].split("%", 1)[0], 53))
        elif words and words[0] == "options":
            for opt in words[1:]:
                key, _, value = opt.partition(":")
                with contextlib.suppress(ValueError):
                    if key == "timeout":
                        timeout = float(max(1, min(int(value), 30)))
                    elif key == "attempts":
                        attempts = max(1, min(int(value), 5))
    return ResolverConfig(tuple(servers[:3]) or (("127.0.0.1", 53),), timeout, attempts)


def load_config(
    override: str | None = None, path: str = "/etc/resolv.conf"
) -> ResolverConfig:
    """The system's configuration, or one server ``HOST:PORT`` (same time-outs);
    ``RES_OPTIONS`` in the environment overrides the options, as in the C library."""
    text = ""
    with (
        contextlib.suppress(OSError),
        open(path, encoding="utf-8", errors="replace") as f,
    ):
        text = f.read()
    config = parse_resolv_conf(text, os.environ.get("RES_OPTIONS", ""))
    if override:
        return ResolverConfig(
            (parse_hostport(override),), config.timeout, config.attempts
        )
    return config


class _Udp(asyncio.DatagramProtocol):
    def __init__(self, accept: Callable[[bytes], bool]) -> None:
        self.accept = accept
        self.done: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

    def datagram_received(self, data: bytes, addr: object) -> None:
        if not self.done.done() and self.accept(data):
            self.done.set_result(data)

    def error_received(self, exc: Exception) -> None:
        if not self.done.done():
            self.done.set_exception(exc)


@dataclass(slots=True)
class Resolver:
    """Queries with a cache; one instance per agent process."""

    config: ResolverConfig = field(default_factory=ResolverConfig)
    clock: Callable[[], float] = time.monotonic
    cache: dict[tuple[str, int], tuple[float, wire.Message]] = field(
        default_factory=dict
    )

    async def lookup(self, name: str, rtype: int) -> Answer:
        """Records of ``rtype`` at ``name``, following CNAMEs (in the answer or by
        asking again); raises :class:`DnsTemporary`."""
        start = name.lower().rstrip(".")
        current = start
        for _ in range(MAX_CNAME):
            msg = await self.query(current, rtype)
            if msg.rcode == wire.NXDOMAIN:
                return Answer(start, rtype, (), nxdomain=True, canonical=current)
            owners = {current}
            changed = True
            while changed:  # walk the CNAME chain inside this answer
                changed = False
                for rr in msg.answers:
                    if (
                        rr.rtype == wire.CNAME
                        and rr.name in owners
                        and rr.value not in owners
                    ):
                        assert isinstance(rr.value, str)
                        current = rr.value
                        owners.add(current)
                        changed = True
            found = tuple(
                r for r in msg.answers if r.rtype == rtype and r.name in owners
            )
            if found or len(owners) == 1:
                return Answer(start, rtype, found, canonical=current)
        raise DnsTemporary(f"CNAME chain too long at {start}")

    async def query(self, name: str, rtype: int) -> wire.Message:
        """One question answered with NOERROR or NXDOMAIN (cached by TTL)."""
        key = (name, rtype)
        hit = self.cache.get(key)
        now = self.clock()
        if hit is not None and hit[0] > now:
            return hit[1]
        msg = await self._ask_all(name, rtype)
        ttl = _cache_ttl(msg)
        if ttl > 0:
            if len(self.cache) >= MAX_CACHE:  # a long-lived agent: start afresh
                self.cache.clear()
            self.cache[key] = (now + ttl, msg)
        return msg

    async def _ask_all(self, name: str, rtype: int) -> wire.Message:
        reasons: list[str] = []
        for _ in range(self.config.attempts):
            for server in self.config.nameservers:
                try:
                    msg = await self._ask(server, name, rtype)
                except (OSError, TimeoutError, wire.WireError) as exc:
                    reasons.append(f"{server[0]}: {_reason(exc)}")
                    continue
                if msg.rcode in (wire.NOERROR, wire.NXDOMAIN):
                    return msg
                reasons.append(
                    f"{server[0]}: {_RCODES.get(msg.rcode, f'rcode {msg.rcode}')}"
                )
        last = reasons[-1] if reasons else "no nameserver"
        raise DnsTemporary(
            f"DNS lookup of {name}/{_TYPES.get(rtype, rtype)} failed: {last}"
        )

    async def _ask(
        self, server: tuple[str, int], name: str, rtype: int
    ) -> wire.Message:
        ident = secrets.randbelow(0x10000)
        query = wire.build_query(ident, name, rtype)
        data = await self._udp(server, query, ident, name, rtype)
        msg = wire.parse_message(data)
        if msg.truncated:
            data = await self._tcp(server, query)
            msg = wire.parse_message(data)
            if not _matches(msg, ident, name, rtype):
                raise wire.WireError("TCP answer does not match the question")
        return msg

    async def _udp(
        self, server: tuple[str, int], query: bytes, ident: int, name: str, rtype: int
    ) -> bytes:
        def accept(data: bytes) -> bool:
            try:
                return _matches(wire.parse_message(data), ident, name, rtype)
            except wire.WireError:
                return False

        loop = asyncio.get_running_loop()
        transport, proto = await loop.create_datagram_endpoint(
            lambda: _Udp(accept), remote_addr=server
        )
        try:
            transport.sendto(query)
            return await asyncio.wait_for(proto.done, self.config.timeout)
        finally:
            transport.close()

    async def _tcp(self, server: tuple[str, int], query: bytes) -> bytes:
        async def exchange() -> bytes:
            reader, writer = await asyncio.open_connection(*server)
            try:
                writer.write(struct.pack("!H", len(query)) + query)
                await writer.drain()
                size = struct.unpack("!H", await reader.readexactly(2))[0]
                return await reader.readexactly(size)
            finally:
                writer.close()
                with contextlib.suppress(OSError):
                    await writer.wait_closed()

        try:
            return await asyncio.wait_for(exchange(), self.config.timeout)
        except asyncio.IncompleteReadError as exc:
            raise wire.WireError("TCP answer cut short") from exc


_RCODES = {1: "FORMERR", 2: "SERVFAIL", 4: "NOTIMP", 5: "REFUSED"}
_TYPES = {1: "A", 5: "CNAME", 15: "MX", 28: "AAAA"}


def _reason(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "timed out"
    return getattr(exc, "strerror", None) or str(exc) or type(exc).__name__


def _matches(msg: wire.Message, ident: int, name: str, rtype: int) -> bool:
    q = msg.question
    return (
        msg.response
        and msg.ident == ident
        and q is not None
        and q[0] == name.lower().rstrip(".")
        and q[1] == rtype
        and q[2] == wire.IN
    )


def _cache_ttl(msg: wire.Message) -> int:
    """The smallest answer TTL; for a negative answer the SOA's (RFC 2308)."""
    if msg.answers:
        return min(r.ttl for r in msg.answers)
    soa = [r for r in msg.authority if r.rtype == wire.SOA]
    if soa and isinstance(soa[0].value, bytes) and len(soa[0].value) >= 4:
        minimum: int = struct.unpack("!I", soa[0].value[-4:])[0]
        return min(soa[0].ttl, minimum)
    return 0
