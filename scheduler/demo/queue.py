"""A realistic demo queue: a few hundred messages to dozens of hosts, with history.

Planning is pure (:func:`plan_queue`, :func:`plan_trickle`: a seeded ``random.Random``
in, :class:`DemoMessage` values out); :func:`write_message` puts one planned message into
a postoffice through the spool API, backdates its message file (the scheduler takes a
message's age and spool-id from that mtime) and appends the ``d`` lines of its earlier
deferrals, as a queue that has been running for days would have them.

Which destinations take mail is decided by the SMTP sink's policy, :func:`sink_policy`:
recipients in :data:`DEFERRING_DOMAINS` are deferred forever, those in
:data:`REJECTING_DOMAINS` bounce, every other domain accepts.
"""

from __future__ import annotations

import os
import random
import time
import zlib
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from scheduler.demo.sink import SinkPolicy
from spool import controlfile, store
from spool.layout import Postoffice
from spool.submit import submit

__all__ = [
    "ACCEPTING_DOMAINS",
    "DEFERRING_DOMAINS",
    "ETRN_DOMAINS",
    "LOCAL_USERS",
    "REJECTING_DOMAINS",
    "UNKNOWN_LOCAL_USER",
    "Deferral",
    "DemoMessage",
    "Destination",
    "QueueSummary",
    "plan_queue",
    "plan_trickle",
    "render_message",
    "sink_policy",
    "summarize",
    "write_message",
]

ACCEPTING_DOMAINS: Final = (
    "example.com",
    "example.net",
    "example.org",
    "acme.example",
    "globex.example",
    "initech.example",
    "hooli.example",
    "umbrella.example",
    "stark.example",
    "wonka.example",
    "tyrell.example",
    "soylent.example",
)
"""The sink accepts mail for these (they drain as soon as the scheduler runs)."""

DEFERRING_DOMAINS: Final = (
    "aperture.example",
    "blackmesa.example",
    "oceanic.example",
    "dharma.example",
    "massive-dynamic.example",
    "vandelay.example",
    "nakatomi.example",
    "weyland.example",
    "yoyodyne.example",
    "virtucon.example",
    "spacely.example",
    "cogswell.example",
    "rekall.example",
    "omni.example",
    "gringotts.example",
    "monarch.example",
    "duff.example",
    "planet-express.example",
    "mom-corp.example",
    "sirius.example",
    "prestige.example",
    "krusty.example",
    "cyberdyne.example",
    "wayne.example",
)
"""The sink answers ``450`` to every recipient here: their mail stays queued."""

REJECTING_DOMAINS: Final = ("nosuchdomain.example", "closed.example")
"""The sink answers ``550``: these recipients bounce."""

ETRN_DOMAINS: Final = ("branch-office.example", "dialup.example", "backup-mx.example")
"""Served by the queue-only ``smtp-etrn`` channel: only an ETRN flushes them (and then
the sink accepts)."""

LOCAL_USERS: Final = (
    "postmaster",
    "root",
    "alice",
    "bob",
    "carol",
    "webmaster",
    "abuse",
    "hostmaster",
)

UNKNOWN_LOCAL_USER: Final = "hostmaster"
"""The demo creates no mailbox for this one: its mail bounces (``error`` channel)."""

SENDERS: Final = (
    "newsletter@shop.example",
    "billing@invoices.example",
    "noreply@tickets.example",
    "alerts@monitoring.example",
    "jane.doe@example.com",
    "john.smith@example.net",
    "marketing@bulk.example",
    "hr@example.org",
    "sales@acme.example",
    "support@hooli.example",
)

SUBJECTS: Final = (
    "Your invoice for {month}",
    "Weekly report",
    "Re: meeting notes",
    "Fwd: contract draft",
    "Password reset requested",
    "[ticket #{n}] status update",
    "Newsletter {month}",
    "Build {n} failed",
    "Lunch on Friday?",
    "Delivery notification for order {n}",
)

DEFERRAL_TEXTS: Final = (
    ("4.7.0", "smtp; 421 (4.7.0 {host} Too many concurrent SMTP connections)"),
    (
        "4.4.1",
        "smtp; 500 (connect to {host} [192.0.2.{ip}|25|192.0.2.1|{lport}]: "
        "Connection timed out)",
    ),
    (
        "4.4.1",
        "smtp; 500 (connect to {host} [192.0.2.{ip}|25|192.0.2.1|{lport}]: "
        "Connection refused)",
    ),
    ("4.2.1", "smtp; 450 (4.2.1 <{rcpt}>: Mailbox busy, try again later)"),
    ("4.7.1", "smtp; 450 (4.7.1 <{rcpt}>: Greylisted, please retry in 5 minutes)"),
    ("4.3.0", "smtp; 451 (4.3.0 Temporary local problem, please try again later)"),
    ("4.2.2", "smtp; 452 (4.2.2 <{rcpt}>: Mailbox full)"),
)

RETRY_STEPS: Final = (1, 1, 2, 3, 5, 8, 13, 21, 34)
"""The demo's ``retries=`` (in units of its 1 minute ``interval``), for the history."""

MAX_AGE: Final = 3 * 86400
"""Oldest message (the demo's ``expiry`` is 5 days, so nothing expires while it runs)."""


@dataclass(frozen=True, slots=True)
class Destination:
    """One recipient as the router would have routed it: ``channel host user``."""

    channel: str
    host: str
    user: str


@dataclass(frozen=True, slots=True)
class Deferral:
    """An earlier delivery attempt that deferred, ``age`` seconds before the demo start."""

    recipient: int
    age: int
    status: str
    text: str


@dataclass(frozen=True, slots=True)
class DemoMessage:
    sender: str
    recipients: tuple[Destination, ...]
    age: int
    subject: str
    message_id: str
    body_lines: int
    deferrals: tuple[Deferral, ...] = field(default=())


@dataclass(frozen=True, slots=True)
class QueueSummary:
    messages: int
    recipients: int
    hosts: int
    by_kind: dict[str, int]


def sink_policy() -> SinkPolicy:
    """The sink's answers for the demo's domains."""
    return SinkPolicy(
        defer=frozenset(DEFERRING_DOMAINS), reject=frozenset(REJECTING_DOMAINS)
    )


def _weighted(rng: random.Random, items: Sequence[str]) -> str:
    """Zipf-like choice: a few busy destinations, a long tail of quiet ones."""
    weights = [1.0 / (i + 1) for i in range(len(items))]
    return rng.choices(items, weights)[0]


def _person(rng: random.Random) -> str:
    first = ("ann", "ben", "cho", "dev", "eva", "fay", "gus", "hal", "ivy", "jon")
    last = ("lee", "kim", "ruiz", "berg", "nagy", "okoro", "smith", "tan")
    return f"{rng.choice(first)}.{rng.choice(last)}"


def _smtp(rng: random.Random, domains: Sequence[str], channel: str) -> Destination:
    host = _weighted(rng, domains)
    return Destination(channel, host, f"{_person(rng)}@{host}")


def _local(rng: random.Random) -> Destination:
    user = _weighted(rng, LOCAL_USERS)
    return Destination("local", user, user)


_KINDS: Final = ("defer", "accept", "etrn", "local", "reject", "mixed")
_KIND_WEIGHTS: Final = (58, 12, 10, 12, 2, 6)


def _recipients(rng: random.Random, kind: str) -> tuple[Destination, ...]:
    if kind == "defer":
        return (_smtp(rng, DEFERRING_DOMAINS, "smtp"),)
    if kind == "accept":
        return (_smtp(rng, ACCEPTING_DOMAINS, "smtp"),)
    if kind == "etrn":
        return (_smtp(rng, ETRN_DOMAINS, "smtp-etrn"),)
    if kind == "local":
        return (_local(rng),)
    if kind == "reject":
        return (_smtp(rng, REJECTING_DOMAINS, "smtp"),)
    pool = [
        _smtp(rng, DEFERRING_DOMAINS, "smtp"),
        _smtp(rng, DEFERRING_DOMAINS, "smtp"),
        _smtp(rng, ACCEPTING_DOMAINS, "smtp"),
        _smtp(rng, ETRN_DOMAINS, "smtp-etrn"),
        _local(rng),
    ]
    chosen = rng.sample(pool, rng.randint(2, 4))
    return tuple(dict.fromkeys(chosen))  # unique, in order


def _age(rng: random.Random, kind: str) -> int:
    if kind == "accept":
        return rng.randint(5, 600)
    if kind == "local":
        return rng.randint(5, 3600)
    return min(MAX_AGE, int(rng.expovariate(1.0 / 36000)) + rng.randint(30, 300))


def _history(
    rng: random.Random, recipients: Sequence[Destination], age: int
) -> tuple[Deferral, ...]:
    """Deferrals at the retry times a 1-minute interval gives, for deferring hosts."""
    out: list[Deferral] = []
    for index, rcpt in enumerate(recipients):
        if rcpt.host not in DEFERRING_DOMAINS:
            continue
        status, text = rng.choice(DEFERRAL_TEXTS)
        text = text.format(
            host=rcpt.host,
            ip=rng.randint(1, 254),
            lport=rng.randint(32768, 60999),
            rcpt=rcpt.user,
        )
        elapsed = rng.randint(1, 20)
        for step in RETRY_STEPS[:5]:
            if elapsed >= age:
                break
            out.append(Deferral(index, age - elapsed, status, text))
            elapsed += step * 60 + rng.randint(0, 50)
        latest = rng.randint(60, 900)
        if age - elapsed > latest:  # and the most recent attempt, minutes ago
            out.append(Deferral(index, latest, status, text))
    return tuple(out)


def _message(rng: random.Random, kind: str, age: int, serial: int) -> DemoMessage:
    recipients = _recipients(rng, kind)
    subject = rng.choice(SUBJECTS).format(
        month=rng.choice(("March", "April", "May")), n=rng.randint(1000, 99999)
    )
    return DemoMessage(
        sender=rng.choice(SENDERS),
        recipients=recipients,
        age=age,
        subject=subject,
        message_id=f"<{serial}.{rng.getrandbits(40):010x}@demo.invalid>",
        body_lines=rng.randint(3, 120),
        deferrals=_history(rng, recipients, age),
    )


def plan_queue(count: int, seed: int = 1) -> list[DemoMessage]:
    """``count`` messages of every kind; deterministic for a given ``seed``."""
    rng = random.Random(seed)
    out = []
    for serial in range(count):
        kind = rng.choices(_KINDS, _KIND_WEIGHTS)[0]
        out.append(_message(rng, kind, _age(rng, kind), serial))
    return out


def plan_trickle(rng: random.Random, serial: int) -> DemoMessage:
    """A new arrival while the demo runs: mostly to accepting hosts, some to slow ones."""
    kind = rng.choices(("accept", "defer", "local", "etrn"), (6, 2, 1, 1))[0]
    msg = _message(rng, kind, 0, serial)
    return DemoMessage(
        msg.sender, msg.recipients, 0, msg.subject, msg.message_id, msg.body_lines
    )


def summarize(messages: Iterable[DemoMessage]) -> QueueSummary:
    kinds: Counter[str] = Counter()
    hosts: set[tuple[str, str]] = set()
    count = rcpts = 0
    for msg in messages:
        count += 1
        rcpts += len(msg.recipients)
        for rcpt in msg.recipients:
            kinds[rcpt.channel] += 1
            hosts.add((rcpt.channel, rcpt.host))
    return QueueSummary(count, rcpts, len(hosts), dict(kinds))


def _address(rcpt: Destination) -> str:
    return rcpt.user if "@" in rcpt.user else f"{rcpt.user}@demo.invalid"


def render_message(msg: DemoMessage, now: int) -> bytes:
    """The RFC 5322 message (headers and body) as the router leaves it in ``queue/``."""
    date = time.strftime("%a, %d %b %Y %H:%M:%S +0000", time.gmtime(now - msg.age))
    to = ", ".join(_address(r) for r in msg.recipients)
    head = [
        f"Received: from client.demo.invalid ([192.0.2.7]) by demo.invalid; {date}",
        f"From: {msg.sender}",
        f"To: {to}",
        f"Subject: {msg.subject}",
        f"Message-Id: {msg.message_id}",
        f"Date: {date}",
        "MIME-Version: 1.0",
        "Content-Type: text/plain; charset=us-ascii",
    ]
    body = [
        f"Line {i + 1} of a demo message. The quick brown fox jumps over the lazy dog."
        for i in range(msg.body_lines)
    ]
    return ("\n".join([*head, "", *body]) + "\n").encode("ascii")


def _backdate(path: Path, now: int, msg: DemoMessage) -> None:
    """Set the message file's mtime ``msg.age`` seconds back (with some nanoseconds, as
    a real arrival has: the spool-id then carries them, MQ2-REF 12.6)."""
    nanos = zlib.crc32(msg.message_id.encode()) % 1_000_000_000
    when_ns = (now - msg.age) * 1_000_000_000 + nanos
    os.utime(path, ns=(when_ns, when_ns))


def _diagnostics(control: bytes, msg: DemoMessage, now: int) -> list[bytes]:
    parsed = controlfile.parse(control)
    ordered = {(r.channel, r.host, r.user): r for r in parsed.recipients}
    lines = []
    for deferral in sorted(msg.deferrals, key=lambda d: -d.age):
        dest = msg.recipients[deferral.recipient]
        rcpt = ordered.get((dest.channel, dest.host, dest.user))
        if rcpt is None:
            continue
        notary = "\x01".join(
            (dest.user, "delayed", deferral.status, deferral.text, dest.host)
        )
        lines.append(
            controlfile.format_diagnostic(
                rcpt.offset,
                rcpt.header_offset,
                rcpt.dsn_offset,
                now - deferral.age,
                notary,
                deferral.text,
                status="+",
            )
        )
    return lines


def write_message(
    po: Postoffice, msg: DemoMessage, now: int, hash_levels: int = 0
) -> str:
    """Submit ``msg`` into ``po``; backdate it and append its history. Returns its relpath.

    The earlier deferrals are written as ``d+`` lines: already seen by a DSN pass (a
    deferral never produces a DSN, SCHED-REF S26), but visible to tools reading the file.
    """
    relpath = submit(
        po,
        msg.sender,
        [(r.channel, r.host, r.user) for r in msg.recipients],
        render_message(msg, now),
        hash_levels=hash_levels,
    )
    control = po.control_path(relpath)
    for line in _diagnostics(control.read_bytes(), msg, now):
        store.append_diagnostic(control, line, fsync=False)  # demo history
    if msg.age:
        _backdate(po.message_path(relpath), now, msg)
    return relpath
