"""The DNS client and the MX planning against a DNS server speaking the wire format."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from scheduler.ta.dns import destinations, wire
from scheduler.ta.dns.destinations import Hop, Unroutable
from scheduler.ta.dns.resolver import (
    DnsTemporary,
    Resolver,
    ResolverConfig,
    parse_hostport,
    parse_resolv_conf,
)
from tests.scheduler.ta.dnsserver import DnsServer

ZONE: dict[tuple[str, str], list[str | tuple[int, str]]] = {
    ("mx.example", "MX"): [(20, "mx2.mx.example"), (10, "mx1.mx.example")],
    ("mx1.mx.example", "A"): ["127.0.0.2"],
    ("mx1.mx.example", "AAAA"): ["::1"],
    ("mx2.mx.example", "A"): ["127.0.0.3"],
    ("plain.example", "A"): ["127.0.0.4"],
    ("null.example", "MX"): [(0, "")],
    ("alias.example", "CNAME"): ["mx.example"],
    ("big.example", "MX"): [(5, f"h{i}.big.example") for i in range(40)],
    **{(f"h{i}.big.example", "A"): [f"127.0.1.{i}"] for i in range(40)},
    ("spoof.example", "A"): ["127.0.0.5"],
    ("half.example", "MX"): [(10, "bad.half.example"), (20, "good.half.example")],
    ("good.half.example", "A"): ["127.0.0.6"],
}


def resolver(server: DnsServer, timeout: float = 2.0, attempts: int = 1) -> Resolver:
    return Resolver(ResolverConfig(((server.host, server.port),), timeout, attempts))


def no_shuffle(names: list[str]) -> None:
    return None


@pytest_asyncio.fixture
async def dns() -> AsyncIterator[DnsServer]:
    server = DnsServer(
        zone=dict(ZONE),
        nxdomain={"nx.example"},
        servfail={"broken.example", "bad.half.example"},
        truncate={"big.example"},
        wrong_id={"spoof.example"},
        silent={"silent.example"},
    )
    await server.start()
    yield server
    await server.close()


@pytest.mark.asyncio
async def test_mx_by_preference_each_with_ipv6_then_ipv4(dns: DnsServer) -> None:
    hops = await destinations.plan("mx.example", resolver(dns), no_shuffle)
    assert hops == [
        Hop("mx1.mx.example", ("::1", "127.0.0.2")),
        Hop("mx2.mx.example", ("127.0.0.3",)),
    ]


@pytest.mark.asyncio
async def test_no_mx_uses_the_domains_own_addresses(dns: DnsServer) -> None:
    hops = await destinations.plan("plain.example", resolver(dns))
    assert hops == [Hop("plain.example", ("127.0.0.4",))]


@pytest.mark.asyncio
async def test_null_mx_nxdomain_are_permanent(dns: DnsServer) -> None:
    with pytest.raises(Unroutable) as null:
        await destinations.plan("null.example", resolver(dns))
    assert (null.value.permanent, null.value.status) == (True, "5.1.10")
    with pytest.raises(Unroutable) as nx:
        await destinations.plan("nx.example", resolver(dns))
    assert (nx.value.permanent, nx.value.status) == (True, "5.1.2")


@pytest.mark.asyncio
async def test_servfail_and_timeout_defer_with_the_reason(dns: DnsServer) -> None:
    with pytest.raises(Unroutable) as fail:
        await destinations.plan("broken.example", resolver(dns))
    assert (fail.value.permanent, fail.value.status) == (False, "4.4.3")
    assert "SERVFAIL" in fail.value.reason
    with pytest.raises(Unroutable) as slow:
        await destinations.plan(
            "silent.example", resolver(dns, timeout=0.3, attempts=2)
        )
    assert (slow.value.permanent, slow.value.status) == (False, "4.4.3")
    assert "timed out" in slow.value.reason
    assert [q for q in dns.queries if q[0] == "silent.example"] == [
        ("silent.example", wire.MX, "udp")
    ] * 2


@pytest.mark.asyncio
async def test_an_mx_whose_lookup_fails_is_skipped(dns: DnsServer) -> None:
    hops = await destinations.plan("half.example", resolver(dns))
    assert hops == [Hop("good.half.example", ("127.0.0.6",))]


@pytest.mark.asyncio
async def test_cname_followed(dns: DnsServer) -> None:
    answer = await resolver(dns).lookup("alias.example", wire.MX)
    assert answer.canonical == "mx.example"
    assert sorted(r.value for r in answer.records) == [
        (10, "mx1.mx.example"),
        (20, "mx2.mx.example"),
    ]


@pytest.mark.asyncio
async def test_truncated_answer_retried_over_tcp(dns: DnsServer) -> None:
    hops = await destinations.plan("big.example", resolver(dns))
    assert len(hops) == 40
    assert ("big.example", wire.MX, "tcp") in dns.queries


@pytest.mark.asyncio
async def test_answer_with_a_wrong_id_is_ignored(dns: DnsServer) -> None:
    answer = await resolver(dns).lookup("spoof.example", wire.A)
    assert [r.value for r in answer.records] == ["127.0.0.5"]


@pytest.mark.asyncio
async def test_cache_honours_ttl(dns: DnsServer) -> None:
    now = [1000.0]
    r = resolver(dns)
    r.clock = lambda: now[0]
    await r.lookup("plain.example", wire.A)
    await r.lookup("plain.example", wire.A)
    assert len([q for q in dns.queries if q[0] == "plain.example"]) == 1
    now[0] += dns.ttl + 1
    await r.lookup("plain.example", wire.A)
    assert len([q for q in dns.queries if q[0] == "plain.example"]) == 2


@pytest.mark.asyncio
async def test_literals_and_router_host_lists(dns: DnsServer) -> None:
    r = resolver(dns)
    assert await destinations.plan("[192.0.2.1]", r) == [
        Hop("[192.0.2.1]", ("192.0.2.1",))
    ]
    assert await destinations.plan("[IPv6:2001:db8::1]", r) == [
        Hop("[IPv6:2001:db8::1]", ("2001:db8::1",))
    ]
    hops = await destinations.plan("(mx2.mx.example mx1.mx.example)", r)
    assert [h.name for h in hops] == ["mx2.mx.example", "mx1.mx.example"]
    assert not [q for q in dns.queries if q[1] == wire.MX]  # used as given
    with pytest.raises(Unroutable):
        await destinations.plan("[999.1.1.1]", r)


def test_mx_order_shuffles_only_within_a_preference() -> None:
    records = [(10, "b"), (5, "x"), (10, "a"), (10, "c"), (20, "z")]
    seen = set()
    for seed in range(30):
        import random

        rnd = random.Random(seed)
        order = destinations.order_mx(records, rnd.shuffle)
        assert order[0] == "x"
        assert order[-1] == "z"
        seen.add(tuple(order[1:4]))
    assert len(seen) > 1


def test_resolv_conf_and_hostport() -> None:
    conf = parse_resolv_conf(
        "# c\nnameserver 10.0.0.1\nnameserver fe80::1%eth0\noptions timeout:3 attempts:4 rotate\n"
    )
    assert conf.nameservers == (("10.0.0.1", 53), ("fe80::1", 53))
    assert (conf.timeout, conf.attempts) == (3.0, 4)
    assert parse_resolv_conf("").nameservers == (("127.0.0.1", 53),)
    env = parse_resolv_conf("options timeout:3 attempts:4\n", "timeout:1 attempts:1")
    assert (env.timeout, env.attempts) == (1.0, 1)  # RES_OPTIONS wins
    assert parse_hostport("[::1]:5353") == ("::1", 5353)
    assert parse_hostport("127.0.0.1:53") == ("127.0.0.1", 53)


def test_wire_rejects_malformed_messages() -> None:
    query = wire.build_query(7, "a.example", wire.A)
    msg = wire.parse_message(query)
    assert msg.question == ("a.example", wire.A, 1)
    assert not msg.response
    loop = query[:12] + b"\xc0\x0c" + b"\x00\x01\x00\x01"
    with pytest.raises(wire.WireError):
        wire.parse_message(loop)
    with pytest.raises(wire.WireError):
        wire.parse_message(query[:15])
    with pytest.raises(DnsTemporary):
        asyncio.run(
            Resolver(ResolverConfig((("127.0.0.1", 9),), 0.2, 1)).lookup("x.example", 1)
        )
