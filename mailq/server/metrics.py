"""Prometheus metrics from the scheduler's views: pure functions, and the text format.

:func:`queue_families` reads a :class:`~mailq.server.views.QueueView` (one pass over the
threads, never over messages or recipients) and :func:`counter_families` the counter
block; :func:`render` writes the text exposition format 0.0.4. The daemon adds its own
families (deliveries by channel, load progress, the process) in
:mod:`scheduler.daemon.monitor`, and serves the result on ``/metrics`` and as
``SHOW METRICS`` (docs/monitoring.md lists every metric).

Destinations are bounded: the ``top`` oldest and the ``top`` busiest threads get their own
``channel``/``host`` labels, every other thread is summed into ``host="other"``, so a
queue of 100,000 destinations never makes 100,000 series.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Final

from mailq.server.views import QueueView, ThreadView
from spool.counters import CounterBlock

__all__ = [
    "CONTENT_TYPE",
    "PREFIX",
    "Family",
    "counter_families",
    "queue_families",
    "render",
]

CONTENT_TYPE: Final = "text/plain; version=0.0.4; charset=utf-8"
PREFIX: Final = "zmailer_scheduler_"
DEFAULT_TOP: Final = 10
OTHER: Final = "other"
STATES: Final = ("active", "ready", "deferred")

Labels = tuple[tuple[str, str], ...]


@dataclass(slots=True)
class Family:
    """One metric: its name, ``counter``/``gauge``, help text and samples."""

    name: str
    kind: str
    help: str
    samples: list[tuple[Labels, float]] = field(default_factory=list)

    def add(self, value: float, **labels: str) -> Family:
        self.samples.append((tuple(labels.items()), value))
        return self


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _number(value: float) -> str:
    if isinstance(value, int) or (math.isfinite(value) and value == int(value)):
        return str(int(value))
    return repr(float(value))


def render(families: Iterable[Family]) -> str:
    """The text exposition format: ``# HELP``, ``# TYPE``, then the samples."""
    out: list[str] = []
    for f in families:
        text = f.help.replace("\\", "\\\\").replace("\n", "\\n")
        out.append(f"# HELP {f.name} {text}\n# TYPE {f.name} {f.kind}\n")
        for labels, value in f.samples:
            if labels:
                inner = ",".join(f'{k}="{_escape(v)}"' for k, v in labels)
                out.append(f"{f.name}{{{inner}}} {_number(value)}\n")
            else:
                out.append(f"{f.name} {_number(value)}\n")
    return "".join(out)


def thread_state(th: ThreadView, now: int) -> str:
    """``active`` (a TA works on it), ``deferred`` (its retry time is ahead), ``ready``."""
    if th.thrkids:
        return "active"
    if th.wakeup > now:
        return "deferred"
    return "ready"


@dataclass(slots=True)
class _Row:
    channel: str
    host: str
    rcpts: int
    oldest: int  # message mtime; 0 = unknown


def _rows(view: QueueView) -> Iterator[tuple[ThreadView, int]]:
    for group in view.groups():
        for th in group.threads():
            yield th, th.rcpts


def queue_families(view: QueueView, now: int, top: int = DEFAULT_TOP) -> list[Family]:
    """Queue contents by channel and state, the oldest recipient, the top destinations."""
    by_state: dict[tuple[str, str], list[int]] = {}
    rows: list[_Row] = []
    for th, rcpts in _rows(view):
        key = (th.channel, thread_state(th, now))
        acc = by_state.get(key)
        if acc is None:
            acc = by_state[key] = [0, 0, 0]
        acc[0] += rcpts
        acc[1] += th.jobs
        acc[2] += 1
        if rcpts:
            rows.append(_Row(th.channel, th.host, rcpts, th.oldest_mtime or 0))
    recipients = Family(
        PREFIX + "queued_recipients",
        "gauge",
        "Recipients queued, by channel and thread state (active, ready, deferred).",
    )
    messages = Family(
        PREFIX + "queued_messages",
        "gauge",
        "Messages queued per channel (message x destination), by thread state.",
    )
    threads = Family(
        PREFIX + "queued_destinations",
        "gauge",
        "Threads (channel x host) with queued mail, by channel and state.",
    )
    for (channel, state), (r, m, t) in sorted(by_state.items()):
        recipients.add(r, channel=channel, state=state)
        messages.add(m, channel=channel, state=state)
        threads.add(t, channel=channel, state=state)
    return [
        Family(PREFIX + "messages", "gauge", "Messages (control files) loaded.").add(
            view.msgs
        ),
        Family(PREFIX + "recipients", "gauge", "Recipients queued in memory.").add(
            view.total_recipients
        ),
        recipients,
        messages,
        threads,
        *_age_families(rows, now, top),
        Family(
            PREFIX + "transport_agents",
            "gauge",
            "Transport agent processes, by state (running or idle).",
        )
        .add(max(0, view.kids - view.idle), state="running")
        .add(view.idle, state="idle"),
    ]


def _age(oldest: int, now: int) -> int:
    return max(0, now - oldest) if oldest else 0


def _age_families(rows: Sequence[_Row], now: int, top: int) -> list[Family]:
    known = [r for r in rows if r.oldest]
    overall = min((r.oldest for r in known), default=0)
    chosen = {
        id(r): r
        for r in [
            *heapq.nsmallest(top, known, key=lambda r: r.oldest),
            *heapq.nlargest(top, rows, key=lambda r: r.rcpts),
        ]
    }
    age = Family(
        PREFIX + "destination_oldest_age_seconds",
        "gauge",
        f"Age of the oldest queued message per destination: the {top} oldest and the "
        f'{top} busiest threads, the rest as host="other".',
    )
    count = Family(
        PREFIX + "destination_recipients",
        "gauge",
        'Recipients queued per destination (same label set; host="other": the rest).',
    )
    for r in sorted(chosen.values(), key=lambda r: (r.channel, r.host)):
        age.add(_age(r.oldest, now), channel=r.channel, host=r.host)
        count.add(r.rcpts, channel=r.channel, host=r.host)
    rest = [r for r in rows if id(r) not in chosen]
    rest_oldest = min((r.oldest for r in rest if r.oldest), default=0)
    age.add(_age(rest_oldest, now), channel=OTHER, host=OTHER)
    count.add(sum(r.rcpts for r in rest), channel=OTHER, host=OTHER)
    return [
        Family(
            PREFIX + "oldest_message_age_seconds",
            "gauge",
            "Age of the oldest queued message (0: the queue is empty).",
        ).add(_age(overall, now)),
        age,
        count,
    ]


_COUNTERS: Final = (
    ("SC.ReceivedMessages", "received_messages_total", "Messages received."),
    ("SC.ReceivedRecipients", "received_recipients_total", "Recipients received."),
    ("SC.TransmittedMessages", "completed_messages_total", "Messages completed."),
    (
        "SC.TransmittedRecipients",
        "completed_recipients_total",
        "Recipients completed (delivered, bounced or expired).",
    ),
    ("SC.TransportAgentForks", "transport_agents_started_total", "TAs started."),
    ("SC.MQ2Connects", "mailq_sessions_total", "MAILQ v2 sessions accepted."),
    ("SC.MQ2AuthRej", "mailq_auth_failures_total", "MAILQ v2 AUTH refusals."),
    ("SC.MQ2TimedOut", "mailq_timeouts_total", "MAILQ v2 sessions timed out."),
    ("SC.MQ2Commands", "mailq_commands_total", "MAILQ v2 commands received."),
    ("SC.MQ2CommandsRej", "mailq_commands_refused_total", "MAILQ v2 refusals."),
)


def counter_families(block: CounterBlock) -> list[Family]:
    """Counters of the counter block (they survive restarts, and wrap at 2**32)."""
    families = [
        Family(PREFIX + name, "counter", text).add(block.get(counter))
        for counter, name, text in _COUNTERS
    ]
    families.append(
        Family(
            PREFIX + "mailq_sessions",
            "gauge",
            "MAILQ v2 sessions open now.",
        ).add(block.get("SC.MQ2Parallel-G"))
    )
    return families
