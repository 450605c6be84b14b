"""DNS messages on the wire (RFC 1035 section 4; AAAA RFC 3596): pure encode/decode.

Only what a mail client needs: a query with one question, and answers holding A, AAAA,
MX, CNAME records (others are kept as raw data). Names are decoded with compression
pointers, guarded against loops and reads past the end.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass

__all__ = [
    "AAAA",
    "CNAME",
    "MX",
    "NOERROR",
    "NXDOMAIN",
    "SERVFAIL",
    "SOA",
    "A",
    "Message",
    "Record",
    "WireError",
    "build_query",
    "decode_name",
    "encode_name",
    "parse_message",
]

A, NS, CNAME, SOA, MX, AAAA = 1, 2, 5, 6, 15, 28
IN = 1
NOERROR, FORMERR, SERVFAIL, NXDOMAIN = 0, 1, 2, 3
_HEADER = struct.Struct("!HHHHHH")
_RR = struct.Struct("!HHIH")
_QR, _TC, _RD = 0x8000, 0x0200, 0x0100


class WireError(ValueError):
    """A malformed DNS message."""


@dataclass(frozen=True, slots=True)
class Record:
    """One resource record; ``value`` is an address text, a name, or ``(pref, name)``."""

    name: str
    rtype: int
    ttl: int
    value: str | tuple[int, str] | bytes


@dataclass(frozen=True, slots=True)
class Message:
    ident: int
    response: bool
    truncated: bool
    rcode: int
    question: tuple[str, int, int] | None
    answers: tuple[Record, ...]
    authority: tuple[Record, ...]


def encode_name(name: str) -> bytes:
    """``mx.example.`` -> length-prefixed labels; raises WireError for bad labels."""
    name = name.rstrip(".")
    out = bytearray()
    if name:
        for label in name.split("."):
            raw = label.encode("idna") if not label.isascii() else label.encode()
            if not raw or len(raw) > 63:
                raise WireError(f"bad label in {name!r}")
            out += bytes([len(raw)]) + raw
    if len(out) + 1 > 255:
        raise WireError(f"name too long: {name!r}")
    return bytes(out) + b"\0"


def build_query(ident: int, name: str, rtype: int) -> bytes:
    """A recursive query with one question (class IN)."""
    header = _HEADER.pack(ident, _RD, 1, 0, 0, 0)
    return header + encode_name(name) + struct.pack("!HH", rtype, IN)


def decode_name(data: bytes, at: int) -> tuple[str, int]:
    """The name at ``at`` (following pointers) and the offset just after it."""
    labels: list[str] = []
    end = -1
    jumps = 0
    while True:
        if at >= len(data):
            raise WireError("name runs past the end")
        length = data[at]
        if length & 0xC0 == 0xC0:
            if at + 1 >= len(data):
                raise WireError("truncated pointer")
            if end < 0:
                end = at + 2
            jumps += 1
            if jumps > 64:
                raise WireError("pointer loop")
            at = ((length & 0x3F) << 8) | data[at + 1]
            continue
        if length & 0xC0:
            raise WireError("bad label type")
        at += 1
        if length == 0:
            break
        if at + length > len(data):
            raise WireError("label runs past the end")
        labels.append(data[at : at + length].decode("ascii", "replace").lower())
        at += length
    return ".".join(labels), (end if end >= 0 else at)


def _rdata(
    data: bytes, rtype: int, at: int, size: int
) -> str | tuple[int, str] | bytes:
    raw = data[at : at + size]
    if rtype == A and size == 4:
        return str(ipaddress.IPv4Address(raw))
    if rtype == AAAA and size == 16:
        return str(ipaddress.IPv6Address(raw))
    if rtype in (CNAME, NS):
        return decode_name(data, at)[0]
    if rtype == MX and size >= 3:
        return struct.unpack_from("!H", data, at)[0], decode_name(data, at + 2)[0]
    if rtype in (A, AAAA, MX):
        raise WireError(f"bad rdata length {size} for type {rtype}")
    return raw


def _records(data: bytes, at: int, count: int) -> tuple[list[Record], int]:
    out: list[Record] = []
    for _ in range(count):
        name, at = decode_name(data, at)
        if at + _RR.size > len(data):
            raise WireError("record header runs past the end")
        rtype, rclass, ttl, size = _RR.unpack_from(data, at)
        at += _RR.size
        if at + size > len(data):
            raise WireError("rdata runs past the end")
        if rclass == IN:
            out.append(
                Record(name, rtype, min(ttl, 0x7FFFFFFF), _rdata(data, rtype, at, size))
            )
        at += size
    return out, at


def parse_message(data: bytes) -> Message:
    """Decode a whole message; raises WireError when it is malformed."""
    if len(data) < _HEADER.size:
        raise WireError("short message")
    ident, flags, qd, an, ns, _ar = _HEADER.unpack_from(data)
    at = _HEADER.size
    question = None
    for i in range(qd):
        qname, at = decode_name(data, at)
        if at + 4 > len(data):
            raise WireError("question runs past the end")
        qtype, qclass = struct.unpack_from("!HH", data, at)
        at += 4
        if i == 0:
            question = (qname, qtype, qclass)
    answers, at = _records(data, at, an)
    authority, at = _records(data, at, ns)
    return Message(
        ident=ident,
        response=bool(flags & _QR),
        truncated=bool(flags & _TC),
        rcode=flags & 0x000F,
        question=question,
        answers=tuple(answers),
        authority=tuple(authority),
    )
