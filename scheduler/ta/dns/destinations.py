"""Where mail for a destination goes (RFC 5321 section 5, RFC 7505 null MX).

:func:`plan` turns the thread's host into a list of :class:`Hop` (an MX host and its
addresses, IPv6 first, then IPv4), or raises :class:`Unroutable`:

* ``[192.0.2.1]`` / ``[IPv6:2001:db8::1]``: that address, no lookup;
* ``(mx1 mx2 ...)``: the router resolved the MX list already; each name (or literal) is
  used in the given order, only its addresses are looked up;
* a domain: its MX records, by preference, shuffled within one preference; no MX -> the
  domain itself (implicit MX); a null MX (``0 .``) -> permanent 5.1.10; NXDOMAIN ->
  permanent 5.1.2; a failed lookup (SERVFAIL, time-out) -> deferral 4.4.3 with the reason.
"""

from __future__ import annotations

import ipaddress
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from scheduler.ta.dns import wire
from scheduler.ta.dns.resolver import DnsTemporary, Resolver

__all__ = ["Hop", "Unroutable", "order_mx", "parse_host_list", "plan"]


@dataclass(frozen=True, slots=True)
class Hop:
    """One host to try: its name (for TLS and diagnostics) and addresses in order."""

    name: str
    addresses: tuple[str, ...]


class Unroutable(Exception):
    """No host to try: ``permanent`` decides error or deferral; ``status`` is the DSN code."""

    def __init__(self, permanent: bool, status: str, reason: str) -> None:
        super().__init__(reason)
        self.permanent = permanent
        self.status = status
        self.reason = reason


def literal_address(host: str) -> str | None:
    """The address of ``[1.2.3.4]`` or ``[IPv6:...]``, else None (ValueError if bad)."""
    if not (host.startswith("[") and host.endswith("]")):
        return None
    inner = host[1:-1]
    if inner[:5].lower() == "ipv6:":
        return str(ipaddress.IPv6Address(inner[5:]))
    return str(ipaddress.ip_address(inner))


def parse_host_list(host: str) -> list[str] | None:
    """``(mx1 mx2)`` (also without the closing parenthesis) -> names; else None."""
    text = host.strip()
    if not text.startswith("("):
        return None
    names = text.strip("()").replace(",", " ").split()
    return [n.strip("()") for n in names if n.strip("()")]


def order_mx(
    records: Sequence[tuple[int, str]], shuffle: Callable[[list[str]], None]
) -> list[str]:
    """Exchange names by preference, shuffled within each preference, no repeats."""
    by_pref: dict[int, list[str]] = {}
    for pref, name in records:
        by_pref.setdefault(pref, []).append(name)
    out: list[str] = []
    for pref in sorted(by_pref):
        names = by_pref[pref]
        shuffle(names)
        out.extend(n for n in names if n not in out)
    return out


async def addresses(resolver: Resolver, name: str) -> tuple[str, ...]:
    """AAAA then A of ``name`` (raises DnsTemporary; () when neither exists)."""
    literal = literal_address(name)
    if literal is not None:
        return (literal,)
    found: list[str] = []
    for rtype in (wire.AAAA, wire.A):
        answer = await resolver.lookup(name, rtype)
        if answer.nxdomain:
            return ()
        found.extend(str(r.value) for r in answer.records)
    return tuple(dict.fromkeys(found))


async def plan(
    host: str,
    resolver: Resolver,
    shuffle: Callable[[list[str]], None] = random.shuffle,
    *,
    use_mx: bool = True,
) -> list[Hop]:
    """The hops for ``host`` in the order to try them (see the module text);
    ``use_mx=False`` (ZMailer's ``smtp -x``): the host's own addresses only."""
    try:
        literal = literal_address(host)
    except ValueError as exc:
        raise Unroutable(True, "5.1.2", f"bad address literal {host}") from exc
    if literal is not None:
        return [Hop(host, (literal,))]
    listed = parse_host_list(host)
    if listed is not None:
        return await _hops(resolver, listed, host)
    domain = host.lower().rstrip(".")
    try:
        wire.encode_name(domain)
    except (wire.WireError, UnicodeError) as exc:
        raise Unroutable(True, "5.1.2", f"bad domain name {host!r}") from exc
    if not use_mx:
        return await _own_addresses(resolver, domain)
    try:
        answer = await resolver.lookup(domain, wire.MX)
    except DnsTemporary as exc:
        raise Unroutable(False, "4.4.3", str(exc)) from exc
    if answer.nxdomain:
        raise Unroutable(True, "5.1.2", f"no such domain: {domain} (NXDOMAIN)")
    mx = [r.value for r in answer.records if isinstance(r.value, tuple)]
    if len(mx) == 1 and mx[0][1] == "":
        raise Unroutable(
            True, "5.1.10", f"{domain} does not accept mail (null MX, RFC 7505)"
        )
    names = order_mx([m for m in mx if m[1]], shuffle) if mx else [domain]
    return await _hops(resolver, names, domain)


async def _own_addresses(resolver: Resolver, domain: str) -> list[Hop]:
    try:
        answer = await resolver.lookup(domain, wire.A)
    except DnsTemporary as exc:
        raise Unroutable(False, "4.4.3", str(exc)) from exc
    if answer.nxdomain:
        raise Unroutable(True, "5.1.2", f"no such domain: {domain} (NXDOMAIN)")
    return await _hops(resolver, [domain], domain)


async def _hops(resolver: Resolver, names: Sequence[str], what: str) -> list[Hop]:
    hops: list[Hop] = []
    temporary = ""
    for name in names:
        try:
            found = await addresses(resolver, name)
        except DnsTemporary as exc:
            temporary = str(exc)
            continue
        except ValueError:
            continue
        if found:
            hops.append(Hop(name, found))
    if hops:
        return hops
    if temporary:
        raise Unroutable(False, "4.4.3", temporary)
    raise Unroutable(True, "5.4.4", f"no address records for {what}")
