"""The daemon's monitor over fake views: /ready before and after the load, /healthy with
stuck agents, a stopped loop, and the delivery tap's counts and events."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from mailq.server.http import Request
from scheduler.core.events import AgentExited, AgentLine, AgentStarted
from scheduler.daemon.deliveries import DeliveryTap
from scheduler.daemon.monitor import Monitor
from tests.mailq.server.fakeview import (
    FakeCounters,
    FakeGroup,
    FakeProc,
    FakeQueue,
    FakeThread,
)
from tests.promtext import parse

NOW = 1_700_000_000
GET = Request("GET", "/", (1, 0), ())


@dataclass
class FakeLoader:
    queue: list[str] = field(default_factory=list)


@dataclass
class FakeRunner:
    startup_loaded: bool = False
    loaded_total: int = 0
    loader: FakeLoader = field(default_factory=FakeLoader)


class NoCore:
    def proc(self, proc: int) -> None:
        return None

    def message(self, number: int) -> None:
        return None


def monitor(view: FakeQueue, runner: FakeRunner, **kw: Any) -> Monitor:
    tap = DeliveryTap(NoCore(), lambda: NOW)
    return Monitor(view, runner, tap, clock=lambda: NOW, **kw)  # type: ignore[arg-type]


def busy_queue(feedtime: int) -> FakeQueue:
    proc = FakeProc(pid=42, hungertime=feedtime, feedtime=feedtime, overfed=1)
    th = FakeThread("smtp", "slow.example", 0, thrkids=1, proc_list=[proc])
    return FakeQueue([FakeGroup("smtp", thread_list=[th])], FakeCounters(), kids=1)


def test_ready_only_when_listening_and_loaded() -> None:
    runner = FakeRunner(loaded_total=12)
    m = monitor(FakeQueue([], FakeCounters()), runner)
    routes = m.routes()
    resp = routes["/ready"](GET)
    assert resp.status == 503
    assert b"Loading the spool: 12 control files loaded" in resp.body
    m.listening = True
    assert routes["/ready"](GET).status == 503
    runner.startup_loaded = True
    assert routes["/ready"](GET).status == 200
    fams = parse(routes["/metrics"](GET).body.decode())
    assert fams["zmailer_scheduler_ready"].value() == 1


def test_healthy_until_every_busy_agent_is_stuck() -> None:
    fresh = monitor(busy_queue(NOW - 10), FakeRunner(), stuck_after=900)
    assert fresh.routes()["/healthy"](GET).status == 200
    stuck = monitor(busy_queue(NOW - 1000), FakeRunner(), stuck_after=900)
    resp = stuck.routes()["/healthy"](GET)
    assert resp.status == 503
    assert resp.body == b"all 1 busy transport agents are stuck\n"


def test_unhealthy_when_the_loop_task_ended() -> None:
    async def main() -> None:
        m = monitor(FakeQueue([], FakeCounters()), FakeRunner())
        m.runner_task = asyncio.ensure_future(asyncio.sleep(0))
        await m.runner_task
        resp = m.routes()["/healthy"](GET)
        assert resp.status == 503
        assert b"the scheduler loop has stopped" in resp.body

    asyncio.run(main())


def test_tap_ignores_unknown_procs_and_lines() -> None:
    tap = DeliveryTap(NoCore(), lambda: NOW)
    for ev in (AgentStarted(1, 2), AgentLine(1, "#hungry"), AgentLine(1, "garbage"),
               AgentLine(1, "123/45\t\tok"), AgentExited(1, 0)):  # fmt: skip
        tap.event(ev)
    assert tap.counts == {}
