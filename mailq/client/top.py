"""``mailq --top``: a live view of one scheduler, refreshed every second; ``q`` quits.

The pure part turns what the server answered into a :class:`Snapshot` and two snapshots
into screen lines (:func:`render`); the shell (:func:`run_top`) keeps one MAILQ v2 session
(reconnecting when it ends), reads keys and draws with curses from the standard library,
so it works over SSH in any terminal. From this daemon it reads ``SHOW METRICS``; from a
server without it (ZMailer) it falls back to ``SHOW SNMP`` and ``SHOW QUEUE THREADS2``.
"""

from __future__ import annotations

import asyncio
import contextlib
import curses
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

from mailq.client.errors import ClientError, CommandRefused
from mailq.client.library import MailqClient
from mailq.client.parse import Snmp, ThreadLine
from spool.timefmt import saytime

__all__ = ["Snapshot", "from_metrics", "from_snmp", "render", "run_top"]

P = "zmailer_scheduler_"
_SAMPLE = re.compile(r"([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)")
_LABEL = re.compile(r'([a-zA-Z_]\w*)="((?:[^"\\]|\\.)*)"')
REFRESH = 1.0


@dataclass
class Snapshot:
    """One reading of the server (counters are totals; rates come from two readings)."""

    time: float
    recipients: int = 0
    messages: int = 0
    oldest: int = 0
    running: int = 0
    idle: int = 0
    received: int = 0
    completed: int = 0
    outcomes: dict[str, int] = field(default_factory=dict)  # kind -> total
    by_state: dict[str, int] = field(default_factory=dict)  # state -> recipients
    destinations: list[tuple[str, str, int, int]] = field(default_factory=list)
    source: str = "SHOW METRICS"


def _samples(lines: Iterable[str]) -> Iterable[tuple[str, dict[str, str], float]]:
    for line in lines:
        found = _SAMPLE.fullmatch(line)
        if found is None or line.startswith("#"):
            continue
        name, labels, value = found.groups()
        try:
            number = float(value)
        except ValueError:
            continue
        yield name, dict(_LABEL.findall(labels or "")), number


def from_metrics(lines: Iterable[str], now: float) -> Snapshot:
    """A snapshot from the daemon's ``SHOW METRICS`` text."""
    snap = Snapshot(now)
    dest: dict[tuple[str, str], list[int]] = {}
    for name, labels, value in _samples(lines):
        v = int(value)
        key = name.removeprefix(P)
        if key == "recipients":
            snap.recipients = v
        elif key == "messages":
            snap.messages = v
        elif key == "oldest_message_age_seconds":
            snap.oldest = v
        elif key == "transport_agents":
            if labels.get("state") == "running":
                snap.running = v
            else:
                snap.idle = v
        elif key == "received_recipients_total":
            snap.received = v
        elif key == "completed_recipients_total":
            snap.completed = v
        elif key.startswith("recipients_") and key.endswith("_total"):
            kind = key[len("recipients_") : -len("_total")]
            snap.outcomes[kind] = snap.outcomes.get(kind, 0) + v
        elif key == "queued_recipients":
            state = labels.get("state", "")
            snap.by_state[state] = snap.by_state.get(state, 0) + v
        elif key in ("destination_recipients", "destination_oldest_age_seconds"):
            where = (labels.get("channel", ""), labels.get("host", ""))
            if where[1] != "other":
                slot = dest.setdefault(where, [0, 0])
                slot[key == "destination_oldest_age_seconds"] = v
    snap.destinations = [(c, h, r, a) for (c, h), (r, a) in dest.items()]
    return snap


def from_snmp(snmp: Snmp, threads: list[ThreadLine] | None, now: float) -> Snapshot:
    """A snapshot from ``SHOW SNMP`` (and THREADS2 when allowed): any ZMailer server."""
    snap = Snapshot(
        now,
        recipients=snmp.stored_recipients,
        messages=snmp.messages,
        running=max(0, snmp.kids - snmp.idle),
        idle=snmp.idle,
        received=snmp.recipients_in,
        completed=snmp.recipients_out,
        source="SHOW SNMP",
    )
    for t in threads or ():
        snap.destinations.append((t.channel, t.host, t.r, t.qa or 0))
        snap.oldest = max(snap.oldest, t.qa or 0)
    return snap


def _rate(now: int, before: int, dt: float) -> str:
    if dt <= 0:
        return "-"
    return f"{max(0, now - before) / dt:.1f}/s"


def render(
    server: str, cur: Snapshot, prev: Snapshot | None, width: int, height: int
) -> list[str]:
    """The screen as lines (each cut to ``width``)."""
    dt = cur.time - prev.time if prev is not None else 0.0
    p = prev if prev is not None else cur
    clock = time.strftime("%H:%M:%S", time.localtime(cur.time))
    lines = [
        f"mailq --top  {server}  {clock}  (from {cur.source}; q quits)",
        "",
        f"Queue   {cur.recipients} recipients in {cur.messages} messages, "
        f"oldest {saytime(cur.oldest) if cur.oldest else '-'}",
    ]
    if cur.by_state:
        states = "  ".join(f"{k} {v}" for k, v in sorted(cur.by_state.items()))
        lines.append(f"        {states}")
    lines.append(
        f"Rates   in {_rate(cur.received, p.received, dt)}   "
        f"out {_rate(cur.completed, p.completed, dt)}"
    )
    if cur.outcomes:
        parts = [
            f"{kind} {_rate(total, p.outcomes.get(kind, total), dt)}"
            for kind, total in sorted(cur.outcomes.items())
        ]
        lines.append("        " + "   ".join(parts))
    lines.append(f"Agents  {cur.running} running, {cur.idle} idle")
    room = max(3, (height - len(lines) - 5) // 2)
    busiest = sorted(cur.destinations, key=lambda d: (-d[2], d[0], d[1]))[:room]
    oldest = sorted(cur.destinations, key=lambda d: (-d[3], d[0], d[1]))[:room]
    lines += ["", f"{'Busiest destinations':<44} {'rcpts':>8} {'oldest':>12}"]
    lines += [_dest(d) for d in busiest] or ["  (none)"]
    lines += ["", f"{'Oldest destinations':<44} {'rcpts':>8} {'oldest':>12}"]
    lines += [_dest(d) for d in oldest] or ["  (none)"]
    return [line[: max(0, width - 1)] for line in lines[:height]]


def _dest(d: tuple[str, str, int, int]) -> str:
    channel, host, rcpts, age = d
    return f"  {channel + '/' + host:<42} {rcpts:>8} {saytime(age) if age else '-':>12}"


async def _read(client: MailqClient, native: bool) -> tuple[Snapshot, bool]:
    now = time.time()
    if native:
        try:
            return from_metrics(await client.show_body("SHOW METRICS"), now), True
        except CommandRefused:
            pass
    snmp = await client.show_snmp()
    try:
        threads: list[ThreadLine] | None = await client.show_queue_threads2()
    except CommandRefused:
        threads = None
    return from_snmp(snmp, threads, now), False


async def _loop(
    screen: curses.window,
    host: str,
    port: int | str,
    user: str,
    password: str,
    reply_timeout: float,
) -> int:
    screen.nodelay(True)
    client: MailqClient | None = None
    prev: Snapshot | None = None
    native = True
    snap: Snapshot | None = None
    while True:
        error = ""
        try:
            if client is None:
                client = MailqClient(timeout=reply_timeout)
                await client.connect(host, port)
                await client.auth(user, password)
            snap, native = await _read(client, native)
        except ClientError as exc:  # the session ended (lifetime) or the server is down
            error = str(exc)
            if client is not None:
                await client.close()
            client = None
        height, width = screen.getmaxyx()
        screen.erase()
        if error or snap is None:
            rows = [f"mailq --top  {host}: {error}; retrying (q quits)"]
        else:
            rows = render(host, snap, prev, width, height)
            prev = snap
        for y, row in enumerate(rows[:height]):
            screen.addnstr(y, 0, row, max(0, width - 1))
        screen.refresh()
        deadline = time.monotonic() + REFRESH
        while time.monotonic() < deadline:
            key = screen.getch()
            if key in (ord("q"), ord("Q"), 27):
                if client is not None:
                    await client.quit()
                return 0
            await asyncio.sleep(0.05)


def run_top(
    host: str, port: int | str, user: str, password: str, timeout: float
) -> int:
    """Run the live view until ``q``; the exit status."""

    def main(screen: curses.window) -> int:
        with contextlib.suppress(curses.error):
            curses.curs_set(0)
        return asyncio.run(_loop(screen, host, port, user, password, timeout))

    try:
        return curses.wrapper(main)
    except KeyboardInterrupt:
        return 0
