"""A DNS server for the tests, speaking the real wire format over UDP and TCP.

It is written independently of :mod:`scheduler.ta.dns.wire` (its own encoder, no name
compression except in answers it builds by hand) so that the client is tested against
bytes it did not produce. The zone is a dict ``(name, type) -> [rdata]`` where rdata is
an address text (A/AAAA), a name (CNAME) or ``(pref, name)`` (MX); ``nxdomain``,
``servfail``, ``truncate`` (UDP answers carry only the TC bit), ``wrong_id`` (a forged
answer with another id and a bogus address comes first), ``silent`` (no answer at all)
are sets of names.
"""

from __future__ import annotations

import asyncio
import ipaddress
import struct
from dataclasses import dataclass, field

from tests.threadloop import LoopThread

TYPES = {"A": 1, "CNAME": 5, "SOA": 6, "MX": 15, "AAAA": 28}
Rdata = str | tuple[int, str]


def _name(name: str) -> bytes:
    out = b""
    for label in name.rstrip(".").split("."):
        if label:
            out += bytes([len(label)]) + label.encode()
    return out + b"\0"


def _rdata(rtype: int, value: Rdata) -> bytes:
    if rtype == 1:
        return ipaddress.IPv4Address(value).packed
    if rtype == 28:
        return ipaddress.IPv6Address(value).packed
    if rtype == 15:
        assert isinstance(value, tuple)
        return struct.pack("!H", value[0]) + _name(value[1])
    assert isinstance(value, str)
    return _name(value)


@dataclass
class DnsServer:
    zone: dict[tuple[str, str], list[Rdata]] = field(default_factory=dict)
    nxdomain: set[str] = field(default_factory=set)
    servfail: set[str] = field(default_factory=set)
    truncate: set[str] = field(default_factory=set)
    wrong_id: set[str] = field(default_factory=set)
    silent: set[str] = field(default_factory=set)
    ttl: int = 300
    host: str = "127.0.0.1"
    port: int = 0
    queries: list[tuple[str, int, str]] = field(default_factory=list)

    def answer(self, query: bytes, proto: str) -> list[bytes]:
        ident, _flags = struct.unpack_from("!HH", query)
        at, labels = 12, []
        while query[at]:
            labels.append(query[at + 1 : at + 1 + query[at]].decode().lower())
            at += 1 + query[at]
        qname = ".".join(labels)
        qtype = struct.unpack_from("!H", query, at + 1)[0]
        question = query[12 : at + 5]
        self.queries.append((qname, qtype, proto))
        if qname in self.silent:
            return []
        rcode, tc, records = 0, 0, b""
        count = 0
        if qname in self.servfail:
            rcode = 2
        elif qname in self.nxdomain:
            rcode = 3
        elif qname in self.truncate and proto == "udp":
            tc = 0x0200
        else:
            owner = qname
            for _ in range(8):
                cname = self.zone.get((owner, "CNAME"))
                if cname and qtype != 5:
                    records += self._rr(owner, 5, str(cname[0]))
                    count += 1
                    owner = str(cname[0])
                    continue
                break
            name = {v: k for k, v in TYPES.items()}.get(qtype, "")
            for value in self.zone.get((owner, name), []):
                records += self._rr(owner, qtype, value)
                count += 1
        flags = 0x8000 | 0x0100 | 0x0080 | tc | rcode
        out = []
        if qname in self.wrong_id:
            bogus = self._rr(qname, 1, "127.0.0.99") if qtype == 1 else b""
            header = struct.pack(
                "!HHHHHH", ident ^ 0x5555, flags, 1, 1 if bogus else 0, 0, 0
            )
            out.append(header + question + bogus)
        header = struct.pack("!HHHHHH", ident, flags, 1, count, 0, 0)
        out.append(header + question + records)
        return out

    def _rr(self, owner: str, rtype: int, value: Rdata) -> bytes:
        data = _rdata(rtype, value)
        return _name(owner) + struct.pack("!HHIH", rtype, 1, self.ttl, len(data)) + data

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        server = self

        class Udp(asyncio.DatagramProtocol):
            def connection_made(self, transport: asyncio.BaseTransport) -> None:
                self.transport = transport

            def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
                for reply in server.answer(data, "udp"):
                    self.transport.sendto(reply, addr)  # type: ignore[attr-defined]

        for _ in range(20):  # the TCP port must equal the UDP one: retry if taken
            self._udp, _ = await loop.create_datagram_endpoint(
                Udp, local_addr=(self.host, self.port)
            )
            port = self._udp.get_extra_info("sockname")[1]
            try:
                self._tcp = await asyncio.start_server(self._client, self.host, port)
            except OSError:
                self._udp.close()
                continue
            self.port = port
            return
        raise OSError("no free UDP+TCP port pair")

    async def _client(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        try:
            size = struct.unpack("!H", await reader.readexactly(2))[0]
            for reply in self.answer(await reader.readexactly(size), "tcp")[-1:]:
                writer.write(struct.pack("!H", len(reply)) + reply)
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def close(self) -> None:
        self._udp.close()
        self._tcp.close()
        await self._tcp.wait_closed()

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"


class ThreadedDnsServer:
    """A :class:`DnsServer` on its own loop in a thread (for agent subprocesses)."""

    def __init__(self, server: DnsServer) -> None:
        self.server = server
        self._loop = LoopThread()

    def __enter__(self) -> DnsServer:
        self._loop.start()
        self._loop.run(self.server.start())
        return self.server

    def __exit__(self, *exc: object) -> None:
        self._loop.run(self.server.close())
        self._loop.stop()
