"""Random postoffices in the forms ZMailer's router writes and its scheduler accepts.

One seed gives one spool: a dict of transport files (name -> bytes) with the age of their
message files. Deterministic (``random.Random(seed)``), no I/O here; :func:`write_spool`
puts a spool on disk. The forms come from reading ZMailer 3.0.1's router (``rfc822.c``
writes ``@ i o l e s r N m`` groups), its scheduler's control-file reader (``vtxprep``) and
``libta/ctlopen.c``; every form the real router writes appears, plus the malformed ones
the real scheduler still queues.
"""

from __future__ import annotations

import os
import random
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["Message", "Spool", "make_spool", "write_spool"]

DAY = 86400
EXPIRY, EXPIRY2 = 3 * DAY, 1 * DAY  # the harness's scheduler.conf (see runner.CONF)

USERS = [
    "root",
    "user@example.net",
    "User@Example.NET",
    '"o\'hara smith"',
    '"john doe"@example.com',
    "a.b@sub.example.org",
    "\\root",
    "x",
    "list-owner@lists.example.com",
]
HOSTS = [
    "example.net",
    "Example.NET",
    "mx.example.org",
    "-",
    "((mx1.example.com)(mx2.example.com mx3.example.com))",
    "((mx1.example.com))",
    "lists.example.com",
    "[127.0.0.1]",
]
CHANNELS = ["local", "smtp", "smtp", "local", "SMTP", "usenet", "error", "hold"]
SENDERS = [
    "local o.hara@example.com o.hara@example.com 1",
    'local "o\'hara smith" "o\'hara smith" 1',
    'smtp example.com "john doe"@example.com 65534',
    "error - - 0",
    "error <> <> 0",
    "smtp mx.example.org <> 65534",
    "local - - 0",
    "smtp [10.0.0.1] joe@example.com 65534",
]
NOTIFY = ["NOTIFY=FAILURE", "NOTIFY=SUCCESS,FAILURE", "NOTIFY=NEVER", "NOTIFY=DELAY"]
# Host fields that are malformed (the real scheduler still queues the file).
BAD_HOSTS = ["b.com)", "((h", "(h)", "((h mx2", "(mx1 mx2)", "((h))"]


@dataclass
class Message:
    name: str
    data: bytes
    age: int  # seconds before "now" (message file mtime)
    queue_file: bool = True


@dataclass
class Spool:
    seed: int
    messages: list[Message] = field(default_factory=list)


def _slots(flags: int, status: str, rng: random.Random) -> str:
    pid = ""
    if flags & 1:
        pid = f"{rng.randrange(40000, 999999):6d}" if status == "~" else " " * 6
    delay = " " * 4 if flags & 2 else ""
    return pid + delay


def _quad(rng: random.Random, wild: bool) -> str:
    ch = rng.choice(CHANNELS)
    host = rng.choice(HOSTS)
    if ch in ("local", "error", "hold", "usenet") and rng.random() < 0.7:
        host = "-"
    if wild and rng.random() < 0.3:
        host = rng.choice(BAD_HOSTS)
    user = rng.choice(USERS)
    priv = rng.choice(["65534", "0", "1", "-"])
    sep = " "
    if wild and rng.random() < 0.15:
        sep = rng.choice(["  ", "\t", " \t"])
    lead = " " if wild and rng.random() < 0.1 else ""
    return lead + sep.join([ch, host, user, priv])


def _message(rng: random.Random, number: int, wild: bool) -> Message:
    name = str(number)
    fmt = rng.choice([3, 3, 3, 7, 1, 0, None]) if wild else rng.choice([3, 3, 7])
    flags = fmt or 0
    lines: list[str] = []
    if fmt is not None:
        lines.append(f"@ 0x{fmt:08x}")
    lines.append(f"i {name}")
    lines.append(f"o {rng.randrange(100, 900)}")
    lines.append(f"l <S{number}AbmLFRXUsVm-R/20261206172320Z+1@mail.example.org>")
    sender = rng.choice(SENDERS)
    groups = rng.choice([1, 1, 1, 2, 3])
    for _ in range(groups):
        if rng.random() < 0.8:
            lines.append(f"e {rng.choice(USERS)}")
        lines.append(f"s {sender}")
        for _ in range(rng.choice([1, 1, 2, 3, 4, 6])):
            status = rng.choice(" " * 12 + "+-~")
            quad = _quad(rng, wild)
            if rng.random() < 0.15 and lines and lines[-1].startswith("r"):
                quad = lines[-1][2 + len(_slots(flags, " ", rng)) :]  # a duplicate
            lines.append(f"r{status}{_slots(flags, status, rng)}{quad}")
            if rng.random() < 0.6:
                orcpt = rng.choice(USERS)
                notify = rng.choice(NOTIFY) + " " if rng.random() < 0.5 else ""
                lines.append(f"N {notify}ORCPT=rfc822;{orcpt} INRCPT=rfc822;{orcpt}")
        lines.append("m")
        lines.append(f"Received: by mail.example.org id {number};\n\tSun, 6 Dec 2026")
        lines.append("Subject: t\n")
    if rng.random() < 0.3:
        lines.append(_diag(rng))
    if wild and rng.random() < 0.1:
        # (no blank line: in ZMailer it swallows the line after it, a documented Fix)
        lines.insert(rng.randrange(1, len(lines)), rng.choice(["Q junk", "X x", "Z"]))
    if wild and rng.random() < 0.05:
        lines.append(f"x {rng.randrange(100000, 100100)}")
    text = "\n".join(lines) + "\n"
    if wild and rng.random() < 0.05:
        text = text.rstrip("\n") + "\n"  # an unterminated header block
    age = rng.choice(
        [
            rng.randrange(0, 600),
            rng.randrange(600, DAY),
            rng.randrange(EXPIRY - 3600, EXPIRY + 3600),
            # just short of expiry+expiry2: past it, the real scheduler's first
            # periodic sweep writes an expiry report and segfaults (scnotaryreport)
            EXPIRY + EXPIRY2 - rng.randrange(600, 7200),
            -rng.randrange(120, 3600),  # dated in the future
        ]
    )
    # A control file without its message file is left out: ZMailer re-counts it in
    # "Msgs in" at every rescan (a documented difference; ours quarantines it once).
    return Message(name, text.encode("utf-8"), age)


def _diag(rng: random.Random) -> str:
    # only reported ("d+") lines: an unreported one makes the real scheduler write a
    # report at startup, and it segfaults doing so (scnotaryreport)
    status = "+"
    msg = rng.choice(
        ["retry in 2m51s", "\r<<- MAIL From:<x>\r->> 250 ok", "user unknown"]
    )
    return (
        f"d{status}0:0:0::1765000000\t\x03\x01failed\x015.1.1\x01x; 550 no\x01\t{msg}"
    )


ROUTED = sorted((Path(__file__).parent / "routed").glob("*.ctl"))
"""Control files the real router wrote (see routed/README.md)."""


def _routed(rng: random.Random, number: int) -> Message:
    text = rng.choice(ROUTED).read_text()
    lines = text.split("\n")
    lines = [f"i {number}" if line.startswith("i ") else line for line in lines]
    age = rng.choice([rng.randrange(0, 600), rng.randrange(600, DAY)])
    return Message(str(number), "\n".join(lines).encode("utf-8"), age)


LIVE_PID = "LIVEPD"
"""Stands for a live PID in a ``r~`` lock slot; :func:`write_spool` writes the pid of
the process writing the spool (alive while the schedulers read it)."""


def _live_lock(spool: Spool) -> None:
    """The first ``r~<pid>`` lock of the spool (a dead PID) becomes a live one."""
    for m in spool.messages:
        text = m.data.decode("utf-8")
        for line in text.split("\n"):
            if line.startswith("r~") and line[2:8].strip().isdigit():
                m.data = text.replace(line, f"r~{LIVE_PID}{line[8:]}", 1).encode()
                return


def make_spool(seed: int, count: int | None = None) -> Spool:
    """The spool of ``seed``: 3-12 messages; seeds divisible by 3 also get malformed
    forms (blanks and TABs in quads, bad host lists, stray lines, no ``@`` line); seeds
    1 modulo 4 also one or two files the real router wrote (``routed/``); even seeds
    from 400 on turn their first ``r~`` lock into a live one (:data:`LIVE_PID`; the
    random draws, and so the spools of every other seed, are unchanged)."""
    rng = random.Random(seed)
    wild = seed % 3 == 0
    spool = Spool(seed)
    n = count if count is not None else rng.randrange(3, 13)
    for k in range(n):
        spool.messages.append(_message(rng, 100001 + k, wild))
    if seed % 4 == 1 and ROUTED:  # real router output too
        for k in range(rng.choice([1, 2])):
            spool.messages.append(_routed(rng, 100001 + n + k))
    if seed >= 400 and seed % 2 == 0:
        _live_lock(spool)
    return spool


def write_spool(spool: Spool, postoffice: Path, now: float) -> None:
    """Write ``spool`` into an initialised postoffice (``transport/`` and ``queue/``),
    message files aged as the spool says, both control and message file with the same
    mtime."""
    live = f"~{os.getpid():6d}".encode()
    for m in spool.messages:
        ctl = postoffice / "transport" / m.name
        ctl.write_bytes(m.data.replace(b"~" + LIVE_PID.encode(), live))
        when = now - m.age
        os.utime(ctl, (when, when))
        if m.queue_file:
            q = postoffice / "queue" / m.name
            q.write_bytes(b"Subject: t\n\nhi\n")
            os.utime(q, (when, when))
