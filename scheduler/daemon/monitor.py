"""The daemon's monitor: ``/metrics``, ``/ready``, ``/healthy`` and ``SHOW METRICS``.

:class:`Monitor` puts together the queue and counter families of
:mod:`mailq.server.metrics`, the deliveries counted by the runner's
:class:`~scheduler.daemon.deliveries.DeliveryTap`, the load progress and the process
(RSS, CPU, open files). Readiness: the listeners are up and the first scan's files are
loaded. Health: the runner is running, the event loop is not lagging, and the transport
agents are not all stuck (jobs outstanding, nothing reported for ``stuck_after`` seconds).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import resource
import time
from collections.abc import Callable
from typing import Final

from mailq.server.http import Request, Response
from mailq.server.metrics import (
    CONTENT_TYPE,
    PREFIX,
    Family,
    ThreadSummary,
    counter_families,
    queue_families,
    render,
    summarize,
)
from mailq.server.views import QueueView
from scheduler.daemon.deliveries import DeliveryTap
from scheduler.daemon.runner import Runner

__all__ = ["Monitor", "process_families"]

HEARTBEAT: Final = 1.0
MAX_LAG: Final = 10.0
STUCK_AFTER: Final = 900
SYNC_LIMIT: Final = 5000
"""Up to this many threads, a scrape walks them itself (under 5 ms); beyond, it reads a
summary that the heartbeat refreshes every ``SUMMARY_AGE`` seconds, a ``SLICE`` of threads
per turn of the loop, while someone scrapes (docs/monitoring.md)."""
SLICE: Final = 2000
SUMMARY_AGE: Final = 5.0
SCRAPED_RECENTLY: Final = 600.0
_PAGE: Final = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096

_DELIVERY_FAMILIES: Final = (
    ("delivered", "recipients_delivered_total", "Recipients delivered, by channel."),
    ("deferred", "recipients_deferred_total", "Delivery deferrals, by channel."),
    ("bounced", "recipients_bounced_total", "Recipients bounced, by channel."),
    ("expired", "recipients_expired_total", "Recipients expired, by channel."),
    ("agent-exited", "transport_agent_exits_total", "TA processes exited."),
    (
        "agent-failed",
        "transport_agent_failures_total",
        "TAs that could not start, or exited with a failure status unasked.",
    ),
)


def process_families() -> list[Family]:
    """``process_*`` as the Prometheus client libraries name them (Linux /proc)."""
    t = os.times()
    families = [
        Family(
            "process_cpu_seconds_total", "counter", "User and system CPU seconds."
        ).add(round(t.user + t.system, 3)),
    ]
    with contextlib.suppress(OSError, ValueError, IndexError):
        with open("/proc/self/statm", "rb") as f:
            rss = int(f.read().split()[1]) * _PAGE
        families.append(
            Family(
                "process_resident_memory_bytes", "gauge", "Resident memory in bytes."
            ).add(rss)
        )
    with contextlib.suppress(OSError):
        families.append(
            Family("process_open_fds", "gauge", "Open file descriptors.").add(
                len(os.listdir("/proc/self/fd"))
            )
        )
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if soft != resource.RLIM_INFINITY:
        families.append(
            Family("process_max_fds", "gauge", "Open file descriptor limit.").add(soft)
        )
    return families


class Monitor:
    """What the monitor endpoints answer, over one core (a ``QueueView``) and runner."""

    def __init__(
        self,
        view: QueueView,
        runner: Runner,
        tap: DeliveryTap,
        *,
        clock: Callable[[], float] = time.time,
        top: int = 10,
        stuck_after: float = STUCK_AFTER,
    ) -> None:
        self.view = view
        self.runner = runner
        self.tap = tap
        self.clock = clock
        self.top = top
        self.stuck_after = stuck_after
        self.listening = False
        self.runner_task: asyncio.Task[None] | None = None
        self._beat = time.monotonic()
        self._beat_task: asyncio.Task[None] | None = None
        self._summary: ThreadSummary | None = None
        self._summary_at = 0.0  # monotonic time its pass began
        self._scraped = -SCRAPED_RECENTLY
        self._pass: asyncio.Task[None] | None = None

    # -- state ----------------------------------------------------------------------

    @property
    def ready(self) -> bool:
        return self.listening and self.runner.startup_loaded

    def start_heartbeat(self) -> None:
        self._beat_task = asyncio.get_running_loop().create_task(self._heartbeat())

    def stop_heartbeat(self) -> None:
        for task in (self._beat_task, self._pass):
            if task is not None:
                task.cancel()

    async def _heartbeat(self) -> None:
        while True:
            self._beat = time.monotonic()
            self._maybe_refresh()
            await asyncio.sleep(HEARTBEAT)

    def _maybe_refresh(self) -> None:
        mono = time.monotonic()
        if (
            self._pass is None
            and self.view.total_threads > SYNC_LIMIT
            and mono - self._summary_at >= SUMMARY_AGE
            and (self._summary is None or mono - self._scraped < SCRAPED_RECENTLY)
        ):
            self._pass = asyncio.get_running_loop().create_task(self.refresh())

    async def refresh(self) -> None:
        """One pass over the threads, ``SLICE`` at a time, yielding to the loop."""
        try:
            began = time.monotonic()
            summary = ThreadSummary(int(self.clock()), self.top)
            threads = [th for g in self.view.groups() for th in g.threads()]
            for i in range(0, len(threads), SLICE):
                summary.add(threads[i : i + SLICE])
                await asyncio.sleep(0)
            self._summary, self._summary_at = summary, began
        finally:
            self._pass = None

    def _thread_summary(self, now: int) -> ThreadSummary:
        self._scraped = time.monotonic()
        if self.view.total_threads <= SYNC_LIMIT or self._summary is None:
            return summarize(self.view, now, self.top)
        return self._summary

    def stuck_agents(self, now: int) -> tuple[int, int]:
        """(agents with outstanding jobs, those of them silent for ``stuck_after``)."""
        busy = stuck = 0
        for group in self.view.groups():
            for th in group.threads():
                for p in th.procs():
                    if p.overfed <= 0:
                        continue
                    busy += 1
                    if now - max(p.hungertime, p.feedtime) > self.stuck_after:
                        stuck += 1
        return busy, stuck

    def problems(self) -> list[str]:
        """Why the daemon is not healthy (empty: healthy)."""
        out = []
        task = self.runner_task
        if task is not None and task.done():
            out.append("the scheduler loop has stopped")
        lag = time.monotonic() - self._beat
        if self._beat_task is not None and lag > MAX_LAG:
            out.append(f"the event loop lags {lag:.0f} s")
        busy, stuck = self.stuck_agents(int(self.clock()))
        if busy and stuck == busy:
            out.append(f"all {busy} busy transport agents are stuck")
        return out

    # -- metrics ----------------------------------------------------------------------

    def families(self) -> list[Family]:
        now = int(self.clock())
        return [
            Family(PREFIX + "up", "gauge", "The scheduler answers (always 1).").add(1),
            Family(
                PREFIX + "ready", "gauge", "Listeners up and the spool loaded (1)."
            ).add(int(self.ready)),
            *queue_families(self.view, now, self.top, self._thread_summary(now)),
            *self._load_families(),
            *self._delivery_families(),
            *counter_families(self.view.counters),
            Family(
                PREFIX + "watchers", "gauge", "MAILQ v2 WATCH sessions streaming now."
            ).add(self.tap.hub.subscribers),
            *process_families(),
        ]

    def _load_families(self) -> list[Family]:
        r = self.runner
        return [
            Family(
                PREFIX + "load_files_loaded_total",
                "counter",
                "Control files loaded from the spool since start.",
            ).add(r.loaded_total),
            Family(
                PREFIX + "load_files_pending",
                "gauge",
                "Control files found and not yet loaded.",
            ).add(len(r.loader.queue)),
            Family(
                PREFIX + "startup_load_complete",
                "gauge",
                "1 once every file of the first spool scan is loaded.",
            ).add(int(r.startup_loaded)),
        ]

    def _delivery_families(self) -> list[Family]:
        counts = self.tap.counts
        out = []
        for kind, name, text in _DELIVERY_FAMILIES:
            family = Family(PREFIX + name, "counter", text)
            for (k, channel), n in sorted(counts.items()):
                if k == kind:
                    family.add(n, channel=channel)
            out.append(family)
        return out

    def metrics_text(self) -> str:
        return render(self.families())

    def status_line(self) -> str:
        """For systemd's ``STATUS=``: load progress, then the queue."""
        r = self.runner
        if not r.startup_loaded:
            return f"Loading the spool: {r.loaded_total} control files loaded"
        v = self.view
        return (
            f"Ready: {v.msgs} messages, {v.total_recipients} recipients queued, "
            f"{v.kids} transport agents"
        )

    # -- HTTP -------------------------------------------------------------------------

    def routes(self) -> dict[str, Callable[[Request], Response]]:
        return {
            "/metrics": self._metrics,
            "/ready": self._ready,
            "/healthy": self._healthy,
        }

    def _metrics(self, request: Request) -> Response:
        return Response(200, self.metrics_text().encode(), CONTENT_TYPE)

    def _ready(self, request: Request) -> Response:
        if self.ready:
            return Response(200, b"ready\n")
        return Response(503, f"not ready: {self.status_line()}\n".encode())

    def _healthy(self, request: Request) -> Response:
        problems = self.problems()
        if not problems:
            return Response(200, b"healthy\n")
        return Response(503, ("".join(f"{p}\n" for p in problems)).encode())
