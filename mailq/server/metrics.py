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
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Final

from mailq.server.views import QueueView, ThreadView
from spool.counters import CounterBlock

__all__ = [
    "CONTENT_TYPE",
    "PREFIX",
    "Family",
    "ThreadSummary",
    "counter_families",
    "queue_families",
    "render",
    "summarize",
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


_Row = tuple[int, int, str, str]  # (sort key, tie breaker, channel, host)


class ThreadSummary:
    """What the queue families need of every thread, gathered in one pass.

    :meth:`add` takes threads one by one (the daemon may spread a pass over several
    turns of its loop); memory stays bounded: sums per (channel, state) and two heaps of
    a few rows for the destinations.
    """

    def __init__(self, now: int, top: int = DEFAULT_TOP) -> None:
        self.now = now
        self.top = top
        self.by_state: dict[tuple[str, str], list[int]] = {}
        self._old: list[_Row] = []  # max-heap on mtime (key -mtime): the oldest
        self._big: list[_Row] = []  # min-heap on rcpts: the busiest
        self._seq = 0
        self.recipients = 0

    def add(self, threads: Iterable[ThreadView]) -> None:
        now, top, by_state = self.now, self.top, self.by_state
        old, big = self._old, self._big
        keep_old = 2 * top + 1  # the oldest thread outside the chosen set is in here
        seq = self._seq
        for th in threads:
            r = th.rcpts
            if not r:
                continue
            if th.thrkids:
                state = "active"
            elif th.wakeup > now:
                state = "deferred"
            else:
                state = "ready"
            key = (th.channel, state)
            acc = by_state.get(key)
            if acc is None:
                acc = by_state[key] = [0, 0, 0]
            acc[0] += r
            acc[1] += th.jobs
            acc[2] += 1
            self.recipients += r
            seq += 1
            o = th.oldest_mtime
            if o:
                if len(old) < keep_old:
                    heapq.heappush(old, (-o, seq, th.channel, th.host))
                elif -o > old[0][0]:
                    heapq.heapreplace(old, (-o, seq, th.channel, th.host))
            if len(big) < top:
                heapq.heappush(big, (r, seq, th.channel, th.host))
            elif r > big[0][0]:
                heapq.heapreplace(big, (r, seq, th.channel, th.host))
        self._seq = seq

    def destinations(self) -> tuple[dict[tuple[str, str], tuple[int, int]], int, int]:
        """``{(channel, host): (rcpts, oldest mtime)}`` for the chosen threads, then the
        oldest mtime overall and the oldest outside the chosen set (0: none)."""
        oldest = sorted(self._old, reverse=True)  # oldest first
        mtimes = {(c, h): -k for k, _, c, h in oldest}
        counts = {(c, h): r for r, _, c, h in self._big}
        chosen: dict[tuple[str, str], tuple[int, int]] = {}
        for _, _, c, h in oldest[: self.top]:
            chosen[(c, h)] = (counts.get((c, h), -1), mtimes[(c, h)])
        for r, _, c, h in self._big:
            chosen[(c, h)] = (r, mtimes.get((c, h), -1))
        rest = [-k for k, _, c, h in oldest if (c, h) not in chosen]
        overall = -oldest[0][0] if oldest else 0
        return chosen, overall, (rest[0] if rest else 0)


def summarize(view: QueueView, now: int, top: int = DEFAULT_TOP) -> ThreadSummary:
    summary = ThreadSummary(now, top)
    for group in view.groups():
        summary.add(group.threads())
    return summary


def queue_families(
    view: QueueView,
    now: int,
    top: int = DEFAULT_TOP,
    summary: ThreadSummary | None = None,
) -> list[Family]:
    """Queue contents by channel and state, the oldest message, the top destinations.

    ``summary``: a pass over the threads made earlier (by default one is made now).
    """
    if summary is None:
        summary = summarize(view, now, top)
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
    for (channel, state), (r, m, t) in sorted(summary.by_state.items()):
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
        *_age_families(view, summary, now),
        Family(
            PREFIX + "transport_agents",
            "gauge",
            "Transport agent processes, by state (running or idle).",
        )
        .add(max(0, view.kids - view.idle), state="running")
        .add(view.idle, state="idle"),
    ]


def _age(oldest: int, now: int) -> int:
    return max(0, now - oldest) if oldest > 0 else 0


def _age_families(view: QueueView, summary: ThreadSummary, now: int) -> list[Family]:
    chosen, overall, rest_oldest = summary.destinations()
    top = summary.top
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
    shown = 0
    for (channel, host), (rcpts, mtime) in sorted(chosen.items()):
        if rcpts < 0 or mtime < 0:  # known by one heap only: ask the thread
            th = view.find_thread(channel, host)
            rcpts = th.rcpts if th is not None and rcpts < 0 else max(rcpts, 0)
            if mtime < 0:
                mtime = (th.oldest_mtime or 0) if th is not None else 0
        shown += rcpts
        age.add(_age(mtime, now), channel=channel, host=host)
        count.add(rcpts, channel=channel, host=host)
    age.add(_age(rest_oldest, now), channel=OTHER, host=OTHER)
    count.add(max(0, summary.recipients - shown), channel=OTHER, host=OTHER)
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
